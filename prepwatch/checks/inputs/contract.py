"""The input contract: what the model's input looked like at training, as a small JSON.

It holds what the tensors handed to the model measured (per-channel mean, std,
min, max, percentiles, dtype, layout), the normalization the pipeline declared
where known, and the few numbers the guard needs, each derived from the recorded
statistics' own spread:

- the raw-pixel support and coverage (the range correct batches stay in and reach),
- how often a correctly served training image already looks like each known
  mistake (so a mistake is only called on batches where chance is ruled out),
- whether the channels are distinct enough to tell RGB from BGR at all.

The file is versioned (``format``/``version``) and written beside the checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from prepwatch._version import __version__
from prepwatch.checks.inputs.channel_order import channel_order_evidence, chromaticity
from prepwatch.checks.inputs.declared import Declared, as_floats
from prepwatch.checks.inputs.hypotheses import (
    PER_IMAGE_EPS,
    Hypothesis,
    false_alarm_batch_size,
    hypotheses,
    images_inside,
    per_image_signatures,
)
from prepwatch.checks.inputs.reach import Reach, reach_quantiles
from prepwatch.checks.inputs.stats import FLOAT_DTYPES, ImageStats
from prepwatch.checks.inputs.tolerances import (
    COVERAGE_CAP,
    COVERAGE_FLOOR,
    FALSE_ALARM_TARGET,
    OUTSIDE_SHARE,
    PERCENTILES,
    RANGE_QUANTILES,
    SUPPORT_MARGIN,
)

FORMAT = "prepwatch.input-contract"
VERSION = 1
BUFFER_NAME = "input_contract"


@dataclass
class Recorded:
    """What capture accumulated: per-image statistics, batch extremes, a pixel sample."""

    images: ImageStats          # reservoir of per-image stats, model-input units
    batch_min: np.ndarray       # (batches, C) pooled min of each recorded batch
    batch_max: np.ndarray
    pixels: np.ndarray          # (C, k) reservoir of grid pixel values
    count: float                # grid pixels per channel seen
    total: np.ndarray           # (C,) running sum
    total_sq: np.ndarray        # (C,) running sum of squares
    low: np.ndarray             # (C,) smallest value seen
    high: np.ndarray            # (C,) largest value seen
    batches: int
    images_seen: int
    dtype: str
    layout: str
    height: int
    width: int


def _quantiles(values: np.ndarray, qs: Sequence[float]) -> dict[str, list[float]]:
    """Per-channel quantiles (``values`` is (n, C)), keyed like "q0.1" for 0.1%."""
    out = np.quantile(values, [q / 100.0 for q in qs], axis=0)
    return {f"q{q:g}": as_floats(row) for q, row in zip(qs, out)}


class InputContract:
    """A loaded or freshly built contract. Treat as read-only; ``data`` is the JSON."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a prepwatch input contract (format={data.get('format')!r})")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise ValueError(
                f"input contract version {version!r} is not supported by prepwatch "
                f"{__version__} (reads versions 1..{VERSION}); upgrade prepwatch"
            )
        self.data: dict[str, Any] = json.loads(json.dumps(data))
        t = self.data["tensor"]
        self.channels = int(t["channels"])
        self.dtype = str(t["dtype"])
        self.layout = str(t["layout"])
        self.height = t.get("height")
        self.width = t.get("width")
        self.channel_names: list[str] = list(t["channel_names"])
        norm = self.data["normalization"]
        self.norm_mean = np.asarray(norm["mean"], dtype=np.float64)
        self.norm_std = np.asarray(norm["std"], dtype=np.float64)
        self.norm_source = str(norm["source"])
        d = self.data.get("declared")
        self.declared = Declared.from_dict(d) if d else None
        c = self.data["checks"]
        self.support = (np.asarray(c["support"][0]), np.asarray(c["support"][1]))
        self.coverage = (np.asarray(c["coverage"][0]), np.asarray(c["coverage"][1]))
        self.margin = float(c["support_margin"]) * (self.support[1] - self.support[0])
        self.outside_share = float(c["outside_share"])
        tol = np.asarray(c["coverage_tolerance"], dtype=np.float64)
        self.coverage_tolerance = np.broadcast_to(tol, (2, self.channels)).copy()
        self.hypotheses: list[Hypothesis] = hypotheses(self.norm_mean, self.norm_std)
        self.hypothesis_batch: dict[str, int | None] = {
            name: v.get("min_batch") for name, v in c.get("hypotheses", {}).items()
        }
        # the calibrated reach test (contracts written before it fall back to coverage)
        self.reach: Reach | None = (
            Reach(c["reach"], float(c.get("false_alarm_target", FALSE_ALARM_TARGET)))
            if c.get("reach") else None
        )
        self.per_image_eps = float(c["per_image"]["eps"])
        self.per_image_batch: dict[str, int | None] = {
            name: v.get("min_batch") for name, v in c["per_image"]["signatures"].items()
        }
        order = c.get("channel_order") or {}
        self.channel_order_verifiable = bool(order.get("verifiable", False))
        env = order.get("envelope")
        self.channel_envelope = (float(env[0]), float(env[1])) if env else None
        self.channel_pair = tuple(order.get("pair", (0, 2)))
        self.channel_informative = float(order.get("informative_share", 0.0))
        self.channel_min_batch: int | None = order.get("min_batch")
        self.channel_per_image_verifiable = self.channel_informative >= 0.5
        pooled = order.get("pooled") or {}
        self.channel_pooled: tuple[float, float, int] | None = (
            (float(pooled["mean"]), float(pooled["std"]), int(pooled["min_batch"]))
            if pooled.get("min_batch") else None
        )

    # -- derived -----------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """Channel mean of the model input at training."""
        return np.asarray(self.data["stats"]["mean"], dtype=np.float64)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.data["stats"]["std"], dtype=np.float64)

    @property
    def min(self) -> np.ndarray:
        return np.asarray(self.data["stats"]["min"], dtype=np.float64)

    @property
    def max(self) -> np.ndarray:
        return np.asarray(self.data["stats"]["max"], dtype=np.float64)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def describe(self) -> str:
        src = self.norm_source
        m = ", ".join(f"{v:.3g}" for v in self.norm_mean)
        s = ", ".join(f"{v:.3g}" for v in self.norm_std)
        return (
            f"{self.layout} {self.dtype}, {self.channels} channels ({''.join(self.channel_names)}),"
            f" normalization mean [{m}] std [{s}] ({src})"
        )

    # -- build -------------------------------------------------------------------------
    @classmethod
    def build(
        cls, rec: Recorded, declared: Declared | None = None,
        channel_names: Sequence[str] | None = None,
    ) -> InputContract:
        """Summarize recorded training inputs into a contract."""
        if rec.images.n == 0 or rec.count <= 0:
            raise ValueError("no training batches recorded yet: call monitor.record(x) first")
        c = rec.images.channels
        if declared is not None and len(declared.mean) != c:
            raise ValueError(
                f"declared normalization has {len(declared.mean)} channels, inputs have {c}"
            )
        mean = rec.total / rec.count
        std = np.sqrt(np.maximum(rec.total_sq / rec.count - mean**2, 0.0))
        # Robust ends of the recorded pixels: a few extreme values (noise from random
        # erasing, an interpolation overshoot) must not move what "the range" means.
        q_lo, q_hi, c_lo, c_hi = np.quantile(rec.pixels, RANGE_QUANTILES, axis=1)
        if declared is not None:
            m, s, source = declared.unit_mean, declared.unit_std, "declared"
        else:
            # Undeclared: take the robust ends of the recordings as raw 0 and 1.
            span = np.maximum(q_hi - q_lo, 1e-12)
            s, m, source = 1.0 / span, -q_lo / span, "inferred"
        # Support: raw [0, 1] (physical when declared), and whatever training fed the
        # model beyond it, which is by definition allowed.
        support = (np.minimum(s * rec.low + m, 0.0), np.maximum(s * rec.high + m, 1.0))
        span = np.maximum(support[1] - support[0], 1e-12)
        margin = SUPPORT_MARGIN * span
        # Coverage: where the bulk of training pixels ends (0.1% / 99.9% per channel).
        coverage = (s * c_lo + m, s * c_hi + m)

        # Coverage tolerance, per channel and end: twice how far recorded training batches
        # usually (90%) fell short of that end. A channel whose top is rarely reached
        # (blue under a warm light) gets more room there than one that saturates often.
        cov_span = np.maximum(coverage[1] - coverage[0], 1e-12)
        gaps = np.maximum(0.0, np.stack((
            ((s * rec.batch_min + m) - coverage[0]) / cov_span,
            (coverage[1] - (s * rec.batch_max + m)) / cov_span,
        )))  # (2, batches, C)
        tolerance = np.clip(2.0 * np.quantile(gaps, 0.9, axis=1), COVERAGE_FLOOR, COVERAGE_CAP)

        stats = rec.images
        n = stats.n
        found = hypotheses(m, s)
        hyp = {}
        for h in found[1:]:
            # A correctly served image "looks like" h when its tensor, read as h's
            # output, still maps to raw pixels inside the support: the chance rate.
            low_h, high_h = stats.min * h.a + h.b, stats.max * h.a + h.b
            inside = images_inside(low_h, high_h, support, margin)
            rate = (float(inside.sum()) + 1.0) / (n + 2.0)
            hyp[h.name] = {
                "kind": h.kind, "chance_rate": float(f"{rate:.4g}"),
                "min_batch": false_alarm_batch_size(rate, FALSE_ALARM_TARGET),
            }
        sigs = {}
        for name, hits in per_image_signatures(stats, PER_IMAGE_EPS).items():
            rate = (float(hits.sum()) + 1.0) / (n + 2.0)
            sigs[name] = {
                "chance_rate": float(f"{rate:.4g}"),
                "min_batch": false_alarm_batch_size(rate, FALSE_ALARM_TARGET),
            }
        order: dict[str, Any] | None = None
        if c == 3:
            order = channel_order_evidence(chromaticity(stats.mean * s + m))

        names = list(channel_names) if channel_names else None
        if names is None:
            names = list(declared.channel_order) if declared is not None else [
                str(i) for i in range(c)
            ]
        if len(names) != c:
            raise ValueError(f"channel_names {names} must name {c} channels")
        pct = np.percentile(rec.pixels, PERCENTILES, axis=1)  # (len(PERCENTILES), C)
        data = {
            "format": FORMAT,
            "version": VERSION,
            "created_unix_seconds": round(time.time(), 3),
            "prepwatch_version": __version__,
            "tensor": {
                "dtype": rec.dtype, "layout": rec.layout, "channels": c,
                "height": rec.height, "width": rec.width, "channel_names": names,
            },
            "declared": declared.to_dict() if declared is not None else None,
            "normalization": {"mean": as_floats(m), "std": as_floats(s), "source": source},
            "stats": {
                "mean": as_floats(mean), "std": as_floats(std),
                "min": as_floats(rec.low), "max": as_floats(rec.high),
                "percentiles": {f"p{p:g}": as_floats(row) for p, row in zip(PERCENTILES, pct)},
            },
            "per_image": {
                "mean": _quantiles(stats.mean, (0.1, 1, 50, 99, 99.9)),
                "std": _quantiles(stats.std, (0.1, 1, 50, 99, 99.9)),
            },
            "samples": {
                "batches": int(rec.batches), "images": int(rec.images_seen),
                "images_kept": int(n), "pixels_per_channel": int(rec.count),
            },
            "checks": {
                "support": [as_floats(support[0]), as_floats(support[1])],
                "coverage": [as_floats(coverage[0]), as_floats(coverage[1])],
                "support_margin": SUPPORT_MARGIN,
                "outside_share": OUTSIDE_SHARE,
                "coverage_tolerance": [as_floats(tolerance[0]), as_floats(tolerance[1])],
                "false_alarm_target": FALSE_ALARM_TARGET,
                "hypotheses": hyp,
                "per_image": {"eps": PER_IMAGE_EPS, "signatures": sigs},
                "channel_order": order,
                "reach": reach_quantiles(stats, m, s, rec.batch_min, rec.batch_max),
            },
        }
        return cls(data)

    @classmethod
    def from_declared(
        cls, declared: Declared, *, dtype: str = "float32", layout: str = "NCHW",
        height: int | None = None, width: int | None = None,
    ) -> InputContract:
        """A contract from the declared pipeline alone, without recorded statistics.

        The guard then checks dtype, layout and the physical range only: mistakes that
        keep values inside the range (served [0, 1] to a mean/std model, per-image
        scaling, channel order) need recorded statistics to be called safely.
        """
        m, s = declared.unit_mean, declared.unit_std
        c = len(m)
        low, high = -m / s, (1.0 - m) / s
        data = {
            "format": FORMAT, "version": VERSION,
            "created_unix_seconds": round(time.time(), 3), "prepwatch_version": __version__,
            "tensor": {"dtype": dtype, "layout": layout, "channels": c, "height": height,
                       "width": width, "channel_names": list(declared.channel_order)},
            "declared": declared.to_dict(),
            "normalization": {"mean": as_floats(m), "std": as_floats(s), "source": "declared"},
            "stats": {"mean": [None] * c, "std": [None] * c, "min": as_floats(low),
                      "max": as_floats(high), "percentiles": {}},
            "per_image": {},
            "samples": {"batches": 0, "images": 0, "images_kept": 0, "pixels_per_channel": 0},
            "checks": {
                "support": [[0.0] * c, [1.0] * c], "coverage": [[0.0] * c, [1.0] * c],
                "support_margin": SUPPORT_MARGIN, "outside_share": OUTSIDE_SHARE,
                "coverage_tolerance": COVERAGE_FLOOR, "false_alarm_target": FALSE_ALARM_TARGET,
                "hypotheses": {h.name: {"kind": h.kind, "chance_rate": None, "min_batch": None}
                               for h in hypotheses(m, s)[1:]},
                "per_image": {"eps": PER_IMAGE_EPS, "signatures": {}},
                "channel_order": None,
            },
        }
        return cls(data)

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> InputContract:
        return cls(json.loads(text))

    def save(self, path: str | Path) -> Path:
        """Write the contract; a checkpoint path gets a sibling ``<name>.input-contract.json``."""
        target = contract_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> InputContract:
        """Read a contract file (or the one beside a checkpoint)."""
        return cls.from_json(contract_path(path).read_text(encoding="utf-8"))

    def to_tensor(self) -> torch.Tensor:
        """The JSON as a uint8 tensor, to ride in a model's state_dict and exports."""
        raw = self.to_json().encode("utf-8")
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> InputContract:
        return cls.from_json(bytes(tensor.detach().to("cpu", torch.uint8).numpy().tobytes()))

    @classmethod
    def from_module(cls, obj: Any) -> InputContract:
        """Recover the contract baked into a model, its state_dict, a TorchScript module
        or a ``torch.export`` program."""
        if isinstance(obj, Mapping):
            for key, value in obj.items():
                if str(key).split(".")[-1] == BUFFER_NAME and torch.is_tensor(value):
                    return cls.from_tensor(value)
            raise ValueError(f"no '{BUFFER_NAME}' entry in this state_dict")
        state = getattr(obj, "state_dict", None)
        if state is not None and not callable(state):  # torch.export.ExportedProgram
            return cls.from_module(state)
        tensor = getattr(obj, BUFFER_NAME, None)
        if torch.is_tensor(tensor):
            return cls.from_tensor(tensor)
        if callable(state):
            return cls.from_module(state())
        raise ValueError(
            f"{type(obj).__name__} carries no input contract; wrap the model in NormalizedModel"
        )


def contract_path(path: str | Path) -> Path:
    """``x.json`` stays; a directory gets ``input_contract.json``; ``model.pt`` gets
    ``model.pt.input-contract.json`` beside it."""
    p = Path(path)
    if p.suffix == ".json":
        return p
    if p.is_dir():
        return p / "input_contract.json"
    return p.with_name(p.name + ".input-contract.json")
