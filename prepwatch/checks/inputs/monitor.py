"""Input normalization contract: record it at training, bake it in, guard it at serving.

::

    inputs = watch.inputs(declared=Declared.imagenet())
    for x, y in loader:
        inputs.record(x)                     # sampled, copied off the loop
        ...
    inputs.save_contract("model.pt")         # -> model.pt.input-contract.json
    baked = NormalizedModel(model, inputs.contract())   # raw uint8/[0, 1] in

    # serving
    inputs = watch.inputs(contract="model.pt", mode="warn")
    inputs.attach(model)                     # or: inputs.guard(x) per batch

    # a framework owns the training loop: record from a forward pre-hook instead
    inputs.attach(model, record=True)        # records while model.training

Metrics (all carry ``run`` and ``rank`` at exposition):

- ``prepwatch_input_channel_mean``, ``_std``, ``_min``, ``_max`` (gauges, model-input
  units; labels ``stage`` = train|serve, ``channel``): mean and std are exponentially
  weighted over the last ~10 recorded (train) or checked (serve) batches; min and
  max are the last batch's. A serving process without recordings shows the
  contract's values as ``stage="train"``.
- ``prepwatch_input_contract_violations_total{kind}`` (counter, batches): one per
  violation kind found in a checked batch; every kind is pre-created at 0.
- ``prepwatch_input_batches_checked_total``, ``prepwatch_input_batches_off_contract_total``
  (counters, batches): checked batches, and those with at least one violation.
- ``prepwatch_input_batches_recorded_total`` (counter, batches): training batches
  reduced into the contract.
- ``prepwatch_input_contract_info{source,layout,dtype}`` (gauge, 1): the contract in
  force; ``source`` is "declared" or "inferred" (normalization read off the data).
- ``prepwatch_input_channel_order_verifiable`` (gauge, 0/1): whether the contract's
  channels are distinct enough for RGB/BGR swaps to be called at all.
- ``prepwatch_input_check_seconds`` (histogram, seconds): guard cost per checked batch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from prepwatch.checks.inputs.capture import InputRecorder, infer_layout
from prepwatch.checks.inputs.contract import InputContract, contract_path
from prepwatch.checks.inputs.declared import Declared
from prepwatch.checks.inputs.guard import GuardResult, diagnose
from prepwatch.checks.inputs.model import NormalizedModel
from prepwatch.checks.inputs.stats import VIOLATION_KINDS, ImageStats
from prepwatch.context import Context
from prepwatch.metrics import FETCH_BUCKETS, sanitize_label_value

__all__ = [
    "VIOLATION_KINDS",
    "Declared",
    "GuardResult",
    "InputContract",
    "InputContractError",
    "InputMonitor",
    "NormalizedModel",
    "contract_path",
    "infer_layout",
]

log = logging.getLogger("prepwatch")
MODES = ("count", "warn", "raise")
COMPONENT = "inputs"
EMA_ALPHA = 0.1  # channel gauges follow the last ~10 batches


class InputContractError(ValueError):
    """Raised by the guard in ``mode="raise"``; ``.result`` holds the diagnosis."""

    def __init__(self, result: GuardResult) -> None:
        super().__init__(
            f"input batch breaks the input contract ({', '.join(result.kinds)}): {result.detail}"
        )
        self.result = result


class _StageGauges:
    """Channel gauges of one stage, smoothed over batches; one writer per stage."""

    def __init__(self, monitor: InputMonitor, stage: str) -> None:
        self._m = monitor
        self.stage = stage
        self.names: list[str] | None = None
        self._mean: np.ndarray | None = None
        self._sq: np.ndarray | None = None
        self.updated = False

    def _bind(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._children = [
            tuple(f.labels(self.stage, sanitize_label_value(n)) for f in self._m._families)
            for n in names
        ]

    def update(self, names: Sequence[str], stats: ImageStats) -> None:
        mean = stats.pooled_mean()
        sq = (stats.std**2 + stats.mean**2).mean(axis=0)
        if self.names != list(names) or self._mean is None or self._sq is None:
            self._bind(names)
            self._mean, self._sq = mean, sq
        else:
            self._mean = self._mean + EMA_ALPHA * (mean - self._mean)
            self._sq = self._sq + EMA_ALPHA * (sq - self._sq)
        std = np.sqrt(np.maximum(self._sq - self._mean**2, 0.0))
        self._write(self._mean, std, stats.min.min(axis=0), stats.max.max(axis=0))
        self.updated = True

    def reference(self, contract: InputContract) -> None:
        """Show the contract's training statistics (a serving process has no others)."""
        if contract.data["stats"]["mean"][0] is None:
            return
        self._bind(contract.channel_names)
        self._write(contract.mean, contract.std, contract.min, contract.max)

    def _write(self, mean: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        for i, (g_mean, g_std, g_min, g_max) in enumerate(self._children):
            g_mean.set(float(mean[i]))
            g_std.set(float(std[i]))
            g_min.set(float(low[i]))
            g_max.set(float(high[i]))


class InputMonitor:
    """Records the training input contract and guards served batches against it.

    Created by ``watch.inputs(**options)``. Options (all keyword):

    - ``declared``: the training normalization (:class:`Declared`, a dict, or a
      torchvision ``Compose`` holding ``Normalize``); without it the contract infers
      it from the recorded range, which the baked model refuses to use.
    - ``contract``: an :class:`InputContract` or a path (contract JSON or the
      checkpoint it sits beside) to guard against.
    - ``mode``: "count" (default), "warn" (log each kind once) or "raise"
      (:class:`InputContractError`); per call with ``guard(x, mode=...)``.
    - ``sample_every`` (10): record one training batch in this many;
      ``images_per_sample`` (16): images taken from a recorded batch;
      ``max_images`` (4096): per-image statistics kept (reservoir sample).
    - ``check_every`` (1): guard one served batch in this many.
    - ``layout``: "NCHW" or "NHWC" when the shape cannot tell (inferred otherwise).
    - ``channel_names``: label values for the ``channel`` label (default: the
      declared channel order, e.g. R, G, B, else 0, 1, 2).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        contract: InputContract | str | Path | None = None,
        declared: Declared | Mapping[str, Any] | Any = None,
        mode: str = "count",
        sample_every: int = 10,
        images_per_sample: int = 16,
        max_images: int = 4096,
        check_every: int = 1,
        layout: str | None = None,
        channel_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.ctx = ctx
        self.mode = _check_mode(mode)
        for label, value, low in (
            ("sample_every", sample_every, 1), ("images_per_sample", images_per_sample, 1),
            ("max_images", max_images, 16), ("check_every", check_every, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"watch.inputs({label}=...) must be an integer >= {low}, "
                                 f"got {value!r}")
        if layout not in (None, "NCHW", "NHWC"):
            raise ValueError(f"watch.inputs(layout=...) must be 'NCHW' or 'NHWC', got {layout!r}")
        self.declared = _declared(declared)
        self.channel_names = list(channel_names) if channel_names is not None else None
        self._sample_every = sample_every
        self._check_every = check_every
        self._seen = 0
        self._calls = 0
        self._warned: set[str] = set()
        self._hooks: list[Any] = []

        r = ctx.registry
        self._families = (
            r.gauge("prepwatch_input_channel_mean",
                    "Per-channel mean of the tensor the model receives (model-input units); "
                    "stage=train|serve, smoothed over ~10 batches.", ["stage", "channel"]),
            r.gauge("prepwatch_input_channel_std",
                    "Per-channel standard deviation of the model input; stage=train|serve, "
                    "smoothed over ~10 batches.", ["stage", "channel"]),
            r.gauge("prepwatch_input_channel_min",
                    "Per-channel minimum of the last recorded/checked batch (model-input units).",
                    ["stage", "channel"]),
            r.gauge("prepwatch_input_channel_max",
                    "Per-channel maximum of the last recorded/checked batch (model-input units).",
                    ["stage", "channel"]),
        )
        violations = r.counter(
            "prepwatch_input_contract_violations_total",
            "Checked batches that broke the input contract, by likely cause.", ["kind"],
        )
        self._violations = {kind: violations.labels(kind) for kind in VIOLATION_KINDS}
        self._checked = r.counter(
            "prepwatch_input_batches_checked_total", "Batches checked against the input contract."
        ).labels()
        self._off = r.counter(
            "prepwatch_input_batches_off_contract_total",
            "Checked batches with at least one input contract violation.",
        ).labels()
        self._recorded = r.counter(
            "prepwatch_input_batches_recorded_total",
            "Training batches reduced into the input contract.",
        ).labels()
        self._info = r.gauge(
            "prepwatch_input_contract_info",
            "The input contract in force (1); source=declared|inferred normalization.",
            ["source", "layout", "dtype"],
        )
        self._verifiable = r.gauge(
            "prepwatch_input_channel_order_verifiable",
            "1 when the contract's channels are distinct enough to call an RGB/BGR swap, "
            "0 when they are too alike (swaps are reported as ambiguous).",
        ).labels()
        self._verifiable.set(float("nan"))
        self._cost = r.histogram(
            "prepwatch_input_check_seconds", "Time the guard took per checked batch.",
            buckets=FETCH_BUCKETS,
        ).labels()
        ctx.errors.precreate(COMPONENT)

        self._train = _StageGauges(self, "train")
        self._serve = _StageGauges(self, "serve")
        self._recorder = InputRecorder(
            layout=layout, images_per_sample=images_per_sample, max_images=max_images,
            seed=seed, report=lambda exc: ctx.errors.report(COMPONENT, exc),
            on_batch=self._on_recorded,
        )
        self._reference: InputContract | None = None
        if contract is not None:
            self.use(contract)

    # -- training ----------------------------------------------------------------------
    def record(self, x: torch.Tensor) -> None:
        """Sample a training batch (the tensor the model receives) into the contract.

        Cheap on every call: one batch in ``sample_every`` is sliced and copied off
        the device for the capture thread; the others cost an integer increment.
        Raises only on the first call, when ``declared`` cannot fit the batch (a
        set-up error); after that it never raises: faults are counted in
        ``prepwatch_internal_errors_total``.
        """
        if self._seen == 0:
            self._check_declared_fits(x)
        self._seen += 1
        if (self._seen - 1) % self._sample_every:
            return
        try:
            self._recorder.submit(x)
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)

    def _check_declared_fits(self, x: Any) -> None:
        if self.declared is None or not torch.is_tensor(x) or x.dim() not in (3, 4):
            return  # nothing declared, or not an image batch: submit() counts that
        layout = self._recorder.layout or infer_layout(x)
        if layout is None:
            return
        channels = int(x.shape[-1] if layout == "NHWC" else x.shape[-3])
        problem = self.declared.fit_error(channels, tuple(x.shape), layout)
        if problem:
            raise ValueError(problem)

    def _on_recorded(self, stats: ImageStats) -> None:
        names = self._names(stats.channels)
        self._train.update(names, stats)
        self._recorded.inc()

    def _names(self, channels: int) -> list[str]:
        if self.channel_names is not None and len(self.channel_names) == channels:
            return self.channel_names
        if self.declared is not None and len(self.declared.channel_order) == channels:
            return list(self.declared.channel_order)
        return [str(i) for i in range(channels)]

    @property
    def recorded_batches(self) -> int:
        return self._recorder.recorded_batches

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for the capture thread to reduce every submitted batch."""
        return self._recorder.flush(timeout)

    def contract(self) -> InputContract:
        """Build the contract from everything recorded so far."""
        self.flush()
        rec = self._recorder.snapshot()
        names = self.channel_names or self._names(rec.images.channels)
        return InputContract.build(rec, declared=self.declared, channel_names=names)

    def save_contract(self, path: str | Path) -> Path:
        """Build and write the contract; a checkpoint path gets a sibling JSON file."""
        return self.contract().save(path)

    # -- serving -----------------------------------------------------------------------
    def use(self, contract: InputContract | str | Path) -> InputContract:
        """Guard against ``contract`` (an object, a contract JSON or a checkpoint path)."""
        if not isinstance(contract, InputContract):
            path = contract_path(contract)
            if not path.exists():
                raise ValueError(
                    f"no input contract at {path}; save one at training with "
                    "monitor.save_contract(checkpoint_path)"
                )
            contract = InputContract.load(path)
        self._reference = contract
        for key, _ in self._info.children():
            self._info.remove(*key)
        self._info.labels(contract.norm_source, contract.layout, contract.dtype).set(1.0)
        self._verifiable.set(1.0 if contract.channel_order_verifiable else 0.0)
        if not self._train.updated:
            self._train.reference(contract)
        return contract

    @property
    def reference(self) -> InputContract | None:
        """The contract the guard checks against."""
        return self._reference

    def guard(self, x: torch.Tensor, *, mode: str | None = None) -> GuardResult:
        """Check a batch the model is about to receive; count, warn or raise per ``mode``."""
        mode = self.mode if mode is None else _check_mode(mode)
        contract = self._reference
        if contract is None:
            raise ValueError(
                "no input contract to guard against: pass contract= to watch.inputs(), "
                "call monitor.use(path), or monitor.use(monitor.contract()) after recording"
            )
        if not torch.is_tensor(x):
            raise TypeError(f"guard() takes the model's input tensor, got {type(x).__name__}")
        self._calls += 1
        if (self._calls - 1) % self._check_every:
            return GuardResult(ok=True, checked=False, detail="not sampled (check_every)")
        start = time.perf_counter()
        try:
            result = diagnose(contract, x)
            self._account(contract, result, time.perf_counter() - start)
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)
            return GuardResult(ok=True, checked=False, detail=f"guard failed: {exc!r}")
        if not result.ok:
            if mode == "raise":
                raise InputContractError(result)
            if mode == "warn":
                self._warn(result)
        return result

    def _account(self, contract: InputContract, result: GuardResult, seconds: float) -> None:
        self._checked.inc()
        self._cost.observe(seconds)
        if result.stats is not None:
            self._serve.update(contract.channel_names, result.stats)
        if not result.ok:
            self._off.inc()
            for kind in result.kinds:
                self._violations[kind].inc()

    def _warn(self, result: GuardResult) -> None:
        fresh = [k for k in result.kinds if k not in self._warned]
        if not fresh:
            return
        self._warned.update(fresh)
        log.warning(
            "prepwatch: input batch breaks the input contract (%s): %s. Counted in "
            "prepwatch_input_contract_violations_total; later batches of this kind are "
            "counted, not logged.", ", ".join(result.kinds), result.detail,
        )

    def attach(
        self, model: torch.nn.Module, *, mode: str | None = None, record: bool = False
    ) -> Any:
        """Guard (or, with ``record=True``, record) every forward call of ``model``.

        A forward pre-hook; returns its handle. ``record=True`` is capture for jobs
        whose loop a framework owns (Lightning, HF Trainer): the hook calls
        :meth:`record` on the first positional tensor while ``model.training`` is
        set, so validation and inference passes stay out of the contract. On a
        :class:`NormalizedModel` the hook sits on the wrapped model, where the
        normalized tensor the contract describes arrives.
        """
        mode = self.mode if mode is None else _check_mode(mode)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"attach() takes a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(record, bool):
            raise TypeError(f"attach(record=...) takes True or False, got {record!r}")
        target = model.model if isinstance(model, NormalizedModel) else model

        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if not args or not torch.is_tensor(args[0]):
                return
            if record:
                if module.training:
                    self.record(args[0])
            else:
                self.guard(args[0], mode=mode)

        handle = target.register_forward_pre_hook(hook)
        self._hooks.append(handle)
        return handle

    def close(self) -> None:
        """Stop the capture thread and remove guard hooks. Safe to call twice."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._recorder.close()


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def _declared(value: Any) -> Declared | None:
    if value is None or isinstance(value, Declared):
        return value
    if isinstance(value, Mapping):
        return Declared.from_dict(value)
    if hasattr(value, "transforms") or type(value).__name__ == "Normalize":
        return Declared.from_transform(value)
    raise TypeError(
        "declared= takes prepwatch.checks.inputs.monitor.Declared(mean, std, ...), a dict "
        f"with mean/std, or a torchvision Compose; got {type(value).__name__}"
    )
