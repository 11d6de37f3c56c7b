"""Calling a user's joint transform the way their pipeline does, and reading back what it made.

Joint transforms come in a few shapes; the probe must call each exactly as the training
pipeline does, or it tests a different code path:

- ``tuple``: ``fn(image, boxes, labels) -> (image, boxes, labels)``
- ``pair``: ``fn(image, boxes) -> (image, boxes)``
- ``dict``: ``fn(image, {"boxes": ..., "labels": ...}) -> (image, target)``; the form
  torchvision's detection references use, and the one ``v2.SanitizeBoundingBoxes``
  needs to find the labels.
- ``batch``: ``fn(images, [boxes, ...], [labels, ...]) -> (images, [boxes], [labels])``;
  augmentation applied to a whole batch (GPU batch augmentation, mosaic, a custom
  collate), where a box list can end up next to the wrong image.

torchvision is optional: it is imported only when the transform is a
``torchvision.transforms.v2`` transform, ``tv_tensors=True`` is asked for, or the
transform refused the plain forms.

What the transform is handed (the *form*: plain tensors or ``tv_tensors``, float or
uint8 images) is detected on the first probe when not given: the forms are tried in
:func:`candidate_forms` order and the first the transform runs with is kept for the rest
of the run (a plain callable wrapping torchvision v2 transforms that reads
``boxes.canvas_size`` raises ``AttributeError`` on plain tensors and gets
``tv_tensors``). :attr:`TransformAdapter.form` says which was used and why.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from prepwatch.checks.boxes.formats import check_format, from_xyxy, to_xyxy
from prepwatch.checks.common.transforms import is_tv_transform

CALLS = ("auto", "tuple", "pair", "dict", "batch")
IMAGE_KINDS = ("tensor", "uint8", "numpy", "pil")


def torchvision_available() -> bool:
    try:
        import torchvision.tv_tensors  # noqa: F401
    except Exception:
        return False
    return True


def candidate_forms(
    transform: Callable[..., Any], image_kind: str | None, tv_tensors: bool | None,
) -> list[tuple[str, bool]]:
    """(image_kind, tv_tensors) pairs to try, most likely first; one pair when both are given.

    The first is what earlier versions always used (float tensors; tv_tensors for a
    torchvision v2 transform), so transforms that ran before keep their form. Then the
    other tv_tensors choice (when torchvision is installed), then uint8 images.
    """
    first_tv = is_tv_transform(transform) if tv_tensors is None else bool(tv_tensors)
    tvs = [first_tv]
    if tv_tensors is None and torchvision_available():
        tvs.append(not first_tv)
    kinds = [image_kind] if image_kind is not None else ["tensor", "uint8"]
    return [(k, tv) for k in kinds for tv in tvs if not (tv and k == "numpy")]


def describe_form(image_kind: str, tv_tensors: bool) -> str:
    image = {"tensor": "float CHW [0, 1]", "uint8": "uint8 CHW", "numpy": "numpy HWC uint8",
             "pil": "PIL"}[image_kind]
    if tv_tensors:
        return f"tv_tensors.Image ({image}) + tv_tensors.BoundingBoxes"
    return f"plain {image} image + plain boxes"


@dataclass
class Form:
    """What the probe hands the transform, and how that was settled."""

    image_kind: str
    tv_tensors: bool
    how: str  # "given" (both options set), "default" (first candidate ran), "detected"
    refused: list[str]  # "<form>: <exception>" for each form the transform raised on

    def describe(self) -> str:
        return describe_form(self.image_kind, self.tv_tensors)


@dataclass
class ProbeInput:
    """One probe sample in prepwatch's convention: float (3, H, W) in [0, 1], xyxy boxes."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class ProbeOutput:
    """What the transform returned, normalised: gray image (H', W') and xyxy boxes."""

    gray: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray | None
    canvas_size: tuple[int, int] | None = None  # (H, W) the boxes claim, when they say


def resolve_call(transform: Callable[..., Any], call: str) -> str:
    """Pick the calling convention: explicit, or guessed from the callable's signature."""
    if call not in CALLS:
        raise ValueError(f"call must be one of {', '.join(CALLS)}; got {call!r}")
    if call != "auto":
        return call
    if is_tv_transform(transform):
        return "dict"
    try:
        params = inspect.signature(transform).parameters.values()
    except (TypeError, ValueError):
        return "tuple"
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return "tuple"
    if len(positional) == 2:
        return "pair"
    if len(positional) >= 3:
        return "tuple"
    raise TypeError(
        f"cannot tell how to call {transform!r}: it takes {len(positional)} required "
        "positional argument(s); a joint transform takes (image, boxes[, labels]). "
        "Pass call='tuple', 'pair', 'dict' or 'batch'."
    )


class TransformAdapter:
    """Feeds probe samples to a transform in its own convention and reads the results."""

    def __init__(
        self,
        transform: Callable[..., Any],
        *,
        call: str = "auto",
        box_format: str = "xyxy",
        image_kind: str | None = None,
        tv_tensors: bool | None = None,
    ) -> None:
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if image_kind is not None and image_kind not in IMAGE_KINDS:
            raise ValueError(f"image_kind must be one of {', '.join(IMAGE_KINDS)}; got {image_kind!r}")
        self.transform = transform
        self.call = resolve_call(transform, call)
        self.box_format = check_format(box_format)
        if tv_tensors and image_kind == "numpy":
            raise ValueError("tv_tensors needs image_kind 'tensor', 'uint8' or 'pil'")
        self._forms = candidate_forms(transform, image_kind, tv_tensors)
        self._given = image_kind is not None and tv_tensors is not None
        self._form: Form | None = None
        self.image_kind, self.tv_tensors = self._forms[0]
        if self.tv_tensors:
            import torchvision.tv_tensors  # noqa: F401 - fail at set-up, not per probe

    @property
    def form(self) -> Form | None:
        """The form settled on by the first probe that ran (None before)."""
        return self._form

    def prefer_tv_tensors(self) -> None:
        """Try tv_tensors forms first (the observed batches carry them); before settling only."""
        if self._form is None and not self._given:
            self._forms.sort(key=lambda f: not f[1])

    # -- inputs -----------------------------------------------------------------------
    def _image(self, image: np.ndarray) -> Any:
        if self.image_kind == "tensor":
            t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        elif self.image_kind == "uint8":
            t = torch.from_numpy(np.round(image * 255.0).astype(np.uint8))
        elif self.image_kind == "numpy":
            return np.ascontiguousarray(np.round(image.transpose(1, 2, 0) * 255.0).astype(np.uint8))
        else:  # pil
            from PIL import Image

            arr = np.round(image.transpose(1, 2, 0) * 255.0).astype(np.uint8)
            return Image.fromarray(arr, mode="RGB") if arr.shape[2] == 3 else Image.fromarray(arr)
        if self.tv_tensors:
            from torchvision import tv_tensors

            return tv_tensors.Image(t)
        return t

    def _boxes(self, boxes: np.ndarray, height: int, width: int) -> Any:
        if self.tv_tensors:
            from torchvision import tv_tensors

            return tv_tensors.BoundingBoxes(
                torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                format="XYXY", canvas_size=(height, width),
            )
        user = from_xyxy(boxes, self.box_format).astype(np.float32)
        if self.image_kind == "numpy":
            return user
        return torch.from_numpy(user)

    def _labels(self, labels: np.ndarray) -> Any:
        if self.image_kind == "numpy" and not self.tv_tensors:
            return labels.astype(np.int64)
        return torch.from_numpy(labels.astype(np.int64))

    # -- outputs ----------------------------------------------------------------------
    def _read_boxes(self, boxes: Any) -> tuple[np.ndarray, tuple[int, int] | None]:
        fmt = getattr(boxes, "format", None)
        canvas = getattr(boxes, "canvas_size", None)
        if fmt is not None and canvas is not None:  # tv_tensors.BoundingBoxes carries its format
            name = str(getattr(fmt, "name", fmt)).upper()
            arr = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
            converted = {"XYXY": "xyxy", "XYWH": "xywh", "CXCYWH": "cxcywh"}.get(name)
            if converted is None:
                raise ValueError(f"rotated box format {name} is not supported by the probe")
            return to_xyxy(arr, converted), (int(canvas[0]), int(canvas[1]))
        arr = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
        return to_xyxy(arr, self.box_format), None

    def _read(self, image: Any, boxes: Any, labels: Any) -> ProbeOutput:
        xyxy, canvas = self._read_boxes(boxes)
        lab = None if labels is None else _to_numpy(labels).astype(np.int64).reshape(-1)
        return ProbeOutput(gray=to_gray(image), boxes=xyxy, labels=lab, canvas_size=canvas)

    def _unpack(self, out: Any) -> tuple[Any, Any, Any]:
        if self.call == "dict":
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], dict)):
                raise TypeError("a call='dict' transform must return (image, target_dict)")
            target = out[1]
            if "boxes" not in target:
                raise TypeError("the target returned by the transform has no 'boxes' key")
            return out[0], target["boxes"], target.get("labels")
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError(
                f"a call={self.call!r} transform must return (image, boxes[, labels]); "
                f"got {type(out).__name__}"
            )
        return out[0], out[1], out[2] if len(out) == 3 else None

    # -- calling ------------------------------------------------------------------------
    def __call__(self, samples: Sequence[ProbeInput]) -> list[ProbeOutput]:
        if self._form is not None:
            return self._call(samples)
        refused: list[str] = []
        first: Exception | None = None
        for kind, tv in self._forms:
            self.image_kind, self.tv_tensors = kind, tv
            try:
                out = self._call(samples)
            except Exception as exc:  # the transform (or reading its output) refused this form
                first = first or exc
                refused.append(f"{describe_form(kind, tv)}: {type(exc).__name__}: {exc}")
                continue
            how = "given" if self._given else ("default" if not refused else "detected")
            self._form = Form(kind, tv, how, refused)
            return out
        self.image_kind, self.tv_tensors = self._forms[0]
        assert first is not None
        if len(refused) > 1:  # say every form was tried; the first error is the likeliest
            raise ProbeFormError("; ".join(refused)) from first
        raise first

    def _call(self, samples: Sequence[ProbeInput]) -> list[ProbeOutput]:
        if self.call == "batch":
            return self._call_batch(samples)
        return [self._call_one(s) for s in samples]

    def _call_one(self, s: ProbeInput) -> ProbeOutput:
        _, h, w = s.image.shape
        image, boxes, labels = self._image(s.image), self._boxes(s.boxes, h, w), self._labels(s.labels)
        if self.call == "tuple":
            out = self.transform(image, boxes, labels)
        elif self.call == "pair":
            out = self.transform(image, boxes)
        else:
            out = self.transform(image, {"boxes": boxes, "labels": labels})
        return self._read(*self._unpack(out))

    def _call_batch(self, samples: Sequence[ProbeInput]) -> list[ProbeOutput]:
        _, h, w = samples[0].image.shape
        images = [self._image(s.image) for s in samples]
        if self.image_kind in ("tensor", "uint8"):
            images = torch.stack(images)  # type: ignore[assignment]
        out = self.transform(
            images,
            [self._boxes(s.boxes, h, w) for s in samples],
            [self._labels(s.labels) for s in samples],
        )
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError("a call='batch' transform must return (images, boxes_list[, labels_list])")
        images_out, boxes_out = out[0], out[1]
        labels_out = out[2] if len(out) == 3 else [None] * len(samples)
        if len(boxes_out) != len(samples) or len(images_out) != len(samples):
            raise TypeError(
                f"the batch transform returned {len(images_out)} images and {len(boxes_out)} box "
                f"lists for a batch of {len(samples)}"
            )
        return [self._read(i, b, lab) for i, b, lab in zip(images_out, boxes_out, labels_out)]


class ProbeFormError(RuntimeError):
    """The transform raised on every form the probe tried (each named in the message)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the transform raised on every input form tried: {detail}")


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().as_subclass(torch.Tensor).numpy()
    return np.asarray(x)


def to_gray(image: Any) -> np.ndarray:
    """Any image the transform may return (CHW tensor, HWC array, PIL) as float64 (H, W)."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().as_subclass(torch.Tensor).to(torch.float64).numpy()
        if arr.ndim == 3:
            return arr.mean(axis=0)
        if arr.ndim == 2:
            return arr
        raise ValueError(f"expected a (C, H, W) or (H, W) image tensor, got shape {tuple(arr.shape)}")
    arr = np.asarray(image, dtype=np.float64)  # numpy HWC or PIL
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            return arr[..., :3].mean(axis=-1)
        if arr.shape[0] in (1, 3, 4):
            return arr.mean(axis=0)
        return arr.mean(axis=-1)
    raise ValueError(f"cannot read an image of shape {arr.shape}")
