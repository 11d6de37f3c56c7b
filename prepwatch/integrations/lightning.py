"""Lightning integration: ``Trainer(callbacks=[PrepwatchCallback()])``.

Works with ``lightning`` (``lightning.pytorch``) or ``pytorch_lightning``, whichever is
installed (``lightning`` first); :func:`callback_class` builds the class for the other one
when both are. Metrics, the same series as ``watch.loader()`` in a hand-written loop:

* ``prepwatch_data_wait_seconds`` (s): each batch the fit loop asks its data fetcher for
  (one combined batch with several train DataLoaders), sanity check and validation excluded;
* ``prepwatch_first_batch_wait_seconds`` (s): the first batch of each epoch;
* ``prepwatch_step_duration_seconds`` (s): period between batches, minus the framework's
  time after ``on_train_batch_end`` (validation, checkpoints, logging) until the next fetch;
* ``prepwatch_steps_total``, ``prepwatch_samples_total`` (all train loaders' samples);
  ``prepwatch_last_step_timestamp_seconds`` (Unix s);
* ``prepwatch_sample_fetch_seconds`` (s): per-sample time inside each train DataLoader's
  workers (the hook is installed when Lightning requests the loaders, before any worker starts);
* with ``class_recall=True``: per-class recall from every validation epoch (not the sanity
  check), read from what ``validation_step`` returns;
* with ``inputs=True``: the normalization contract from the module's real training input;
* under DDP (``strategy="ddp"``, ``"ddp_spawn"``...): ``prepwatch_collective_wait_seconds``,
  ``watch.ddp()`` on ``trainer.strategy.model`` in ``on_fit_start`` (``time_collectives=False``
  turns it off).

What the callback touches inside Lightning, and why: ``fit_loop._data_source.dataloader``
(to install the worker hook before Lightning's first ``iter()``, which runs before any
callback hook) and ``fit_loop._data_fetcher`` (to time the iterator the loop consumes).
Both are private; each use is guarded, and a Lightning that moved them costs the matching
signals with one counted ``integration`` error, never the run.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Optional

from prepwatch.hooks.batch_size import BatchSizer
from prepwatch.hooks.loader import WatchedLoader
from prepwatch.integrations._collective import time_collectives
from prepwatch.integrations._core import (
    CallbackOptions,
    ReportOnce,
    StepMarks,
    framework_identity,
    input_recorder,
    watch_for,
)

__all__ = ["PrepwatchCallback", "callback_class"]

RecallExtract = Callable[[Any, Any], Optional[tuple[Any, Any]]]


def outputs_and_batch(outputs: Any, batch: Any) -> Optional[tuple[Any, Any]]:
    """``validation_step`` returns logits (or ``{"logits": ...}``); labels are ``batch[1]``
    or ``batch["labels"]`` unless the dict carries ``"labels"`` itself."""
    logits, labels = outputs, None
    if isinstance(outputs, dict):
        logits = outputs.get("logits", outputs.get("preds"))
        labels = outputs.get("labels", outputs.get("targets"))
    if labels is None:
        if isinstance(batch, dict):
            labels = batch.get("labels", batch.get("label"))
        elif isinstance(batch, (tuple, list)) and len(batch) > 1:
            labels = batch[1]
    if logits is None or labels is None or not hasattr(logits, "dim"):
        return None
    return logits, labels


class _MarkedLoader(WatchedLoader):
    """The fetcher's combined loader, timed; framework time between steps marked off."""

    def __init__(self, *args: Any, marks: StepMarks, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._marks = marks

    def __iter__(self) -> Iterator[Any]:
        return self._generate(self._marks.wrap(iter(self._iterable)))

    def timed(self, it: Iterator[Any]) -> Iterator[Any]:
        return self._generate(self._marks.wrap(it))


def _flat_loaders(obj: Any) -> list[Any]:
    from torch.utils.data import DataLoader

    if isinstance(obj, DataLoader):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [dl for item in obj for dl in _flat_loaders(item)]
    flattened = getattr(obj, "flattened", None)  # a CombinedLoader
    return _flat_loaders(flattened) if flattened is not None else []


def _combined_sizer(n_loaders: int, batch_size: Any) -> Callable[[Any], int]:
    """Samples in one combined batch ``(batch, batch_idx, dataloader_idx)``."""
    if callable(batch_size):
        return lambda item: batch_size(item[0])
    if n_loaders <= 1:
        inner = BatchSizer(batch_size)
        return lambda item: inner(item[0])
    sizers = [BatchSizer() for _ in range(n_loaders)]

    def size(item: Any) -> int:
        batches = item[0]
        parts = list(batches.values()) if isinstance(batches, dict) else list(batches)
        return sum(s(b) for s, b in zip(sizers, parts) if b is not None)

    return size


def callback_class(package: str = "") -> type:
    """The callback class for ``lightning.pytorch`` or ``pytorch_lightning`` (``package``;
    default: whichever is installed, ``lightning`` first)."""
    names = [package] if package else ["lightning.pytorch", "pytorch_lightning"]
    for name in names:
        try:
            base = importlib.import_module(f"{name}.callbacks").Callback
        except ImportError:
            continue
        return type("PrepwatchCallback", (_Prepwatch, base), {"__module__": __name__})
    raise ImportError("prepwatch.integrations.lightning needs lightning or pytorch-lightning installed")


class _Prepwatch(CallbackOptions):
    """Loop signals, validation recall and the input contract for a Lightning ``Trainer``.

    Args:
        run: the ``run`` label (default as :func:`prepwatch.start`); rank, local rank and
            world size come from the Trainer (``global_rank``, ``local_rank``, ``world_size``).
        class_recall: per-class recall from validation: ``True`` reads what
            ``validation_step`` returns (logits, or a dict with ``logits`` and optionally
            ``labels``) with labels from the batch; or ``callable(outputs, batch) ->
            (logits, labels) | None``. ``class_health`` options go to ``watch.class_health()``.
        inputs: ``True`` records the normalization contract from the module's first
            floating-point training input, or the name of a keyword; ``inputs_options`` go
            to ``watch.inputs()``.
        batch_size: as ``watch.loader(batch_size=...)``, applied to the train batch.
        time_collectives: under DDP, time the gradient all-reduce of the model Lightning
            wrapped (``watch.ddp``); skipped for other strategies and single processes.
        **start_options: passed to :func:`prepwatch.start` when the callback starts it.
    """

    def __init__(
        self,
        *,
        run: Optional[str] = None,
        class_recall: Any = False,
        class_health: Optional[dict[str, Any]] = None,
        inputs: Any = None,
        inputs_options: Optional[dict[str, Any]] = None,
        batch_size: Any = None,
        time_collectives: bool = True,
        **start_options: Any,
    ) -> None:
        super().__init__()
        self._set_options(
            run=run, class_recall=class_recall, class_health=class_health, inputs=inputs,
            inputs_options=inputs_options, batch_size=batch_size, start_options=start_options,
            keyword="module", time_collectives=time_collectives,
        )
        self._eval_open = False
        self._patched_source: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the Trainer's callbacks into each process: the Watch, its
        # threads and sockets stay behind; each rank starts its own in setup().
        state = dict(self.__dict__)
        state.update(watch=None, _marks=None, _handles=[], _patched_source=None, _eval_open=False)
        return state

    # -- set-up ------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        identity = framework_identity(self.run, trainer.global_rank, trainer.local_rank,
                                      trainer.world_size)
        self.watch = watch_for(identity, self.start_options)
        self._marks = StepMarks(self.watch)
        if stage != "fit":
            return
        try:
            self._hook_worker_timing(trainer)
        except Exception as exc:
            self._report(exc)
        if self.inputs is not None and not self._handles:
            name = None if self.inputs is True else self.inputs
            hook = input_recorder(self.watch, name, self.inputs_options)
            self._handles.append(pl_module.register_forward_pre_hook(hook, with_kwargs=True))

    def _hook_worker_timing(self, trainer: Any) -> None:
        source = trainer.fit_loop._data_source
        original = source.dataloader  # bound method of the instance
        worker_stats = self.watch.worker_stats  # type: ignore[union-attr]
        report = self._report

        def dataloader() -> Any:
            loaders = original()
            for dl in _flat_loaders(loaders):  # inside Lightning's capture: re-instantiation keeps it
                try:
                    worker_stats.attach(dl)
                except Exception as exc:
                    report(exc)
            return loaders

        source.dataloader = dataloader
        self._patched_source = source

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # Runs right after strategy.setup() wrapped the module (DDPStrategy.configure_ddp)
        # and before the sanity check and the first backward (pytorch-lightning 2.6, Trainer._run).
        if self.time_collectives and self.watch is not None:
            try:
                time_collectives(self.watch, trainer.strategy.model, "Lightning")
            except Exception as exc:
                self._report(exc)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        try:
            self._time_fetcher(trainer)
        except Exception as exc:
            self._report(exc)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        # reload_dataloaders_every_n_epochs builds a new combined loader and fetcher; the
        # epoch's iterator is created after this hook, from the wrapped loader.
        try:
            self._time_fetcher(trainer)
        except Exception as exc:
            self._report(exc)

    def _time_fetcher(self, trainer: Any) -> None:
        fetcher = trainer.fit_loop._data_fetcher
        combined = fetcher._combined_loader
        if isinstance(combined, _MarkedLoader):
            return
        watch, marks = self.watch, self._marks
        assert watch is not None and marks is not None
        loaders = _flat_loaders(combined)
        watched = _MarkedLoader(
            combined, watch.loop, watch.worker_stats, watch.ctx.errors, marks=marks,
            batch_size=_combined_sizer(len(loaders), self.batch_size),
            dataloader=loaders[0] if len(loaders) == 1 else None,
        )
        if len(loaders) > 1:
            watch.loop.workers.set(float(sum(dl.num_workers for dl in loaders)))
        fetcher._combined_loader = watched  # later epochs: iter(fetcher) -> iter(watched)
        if fetcher.iterator is not None:  # epoch 0's iterator, created before any hook ran
            fetcher.iterator = watched.timed(fetcher.iterator)

    # -- the loop ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        marks = self._marks
        if marks is not None:
            marks.step_end()

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.class_recall and not trainer.sanity_checking and self.watch is not None:
            self._health().begin_eval("eval")
            self._eval_open = True

    def _health(self) -> Any:
        assert self.watch is not None
        existing = self.watch._components.get("class_health")
        return existing or self.watch.class_health(**self.class_health_options)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._eval_open or self.watch is None:
            return
        try:
            extract = self.class_recall if callable(self.class_recall) else outputs_and_batch
            pair = extract(outputs, batch)
            if pair is not None:
                self.watch.class_health().eval_predictions(pair[0].detach(), pair[1], split="eval")
        except Exception as exc:
            self._report(exc)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._eval_open and self.watch is not None:
            self._eval_open = False
            self._health().end_eval("eval")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        source, self._patched_source = self._patched_source, None
        if source is not None:
            try:
                del source.dataloader  # the class' method again
            except AttributeError:
                pass
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._eval_open = False

    def _report(self, exc: BaseException) -> None:
        if self.watch is not None:
            ReportOnce(self.watch)(exc)


PrepwatchCallback = callback_class()
