"""Hugging Face ``Trainer`` integration: ``Trainer(..., callbacks=[PrepwatchCallback()])``.

Metrics (the same series as ``watch.loader()`` in a hand-written loop, docs/integrations.md):

* ``prepwatch_data_wait_seconds`` (s): each ``next()`` the Trainer makes on its train
  DataLoader (accelerate's ``DataLoaderShard``: fetch plus its move to the device);
* ``prepwatch_first_batch_wait_seconds`` (s): the first batch of each epoch;
* ``prepwatch_step_duration_seconds`` (s): period between batches, shared evenly by the
  micro-batches of one optimizer step when ``gradient_accumulation_steps`` > 1 (the Trainer
  fetches them all before running any); evaluation, checkpointing and logging between
  optimizer steps are taken off;
* ``prepwatch_steps_total``, ``prepwatch_samples_total``: micro-batches and samples
  handed to the Trainer; ``prepwatch_last_step_timestamp_seconds`` (Unix s);
* ``prepwatch_sample_fetch_seconds`` (s): per-sample time inside DataLoader workers;
* with ``class_recall=True``: ``prepwatch_class_recall_ratio{split="eval"}`` and friends
  from every evaluation the Trainer runs (single-label classification models);
* with ``inputs=...``: the normalization contract recorded from the model's real input;
* under DDP (``torchrun``/``accelerate launch`` with several processes):
  ``prepwatch_collective_wait_seconds``, ``watch.ddp()`` on the Trainer's ``model_wrapped``
  in ``on_train_begin`` (``time_collectives=False`` turns it off).

Why the DataLoader is wrapped and not inferred from callbacks: ``get_batch_samples``
fetches every micro-batch of an optimizer step before ``on_step_begin`` and moves them to
the device there, so the time between callbacks mixes the fetch with compute, and
evaluation runs between ``on_step_end`` and the next fetch. Timing ``next()`` on the
Trainer's own DataLoader object is what the loop waits for, whatever the callbacks' order.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from transformers import TrainerCallback

from prepwatch.integrations import _iter_patch
from prepwatch.integrations._collective import time_collectives
from prepwatch.integrations._core import (
    CallbackOptions,
    ReportOnce,
    StepMarks,
    framework_identity,
    input_recorder,
    watch_for,
)
from prepwatch.integrations._eval_hook import EvalRecall, Extract, logits_and_labels
from prepwatch.integrations._grouped import GroupedLoader
from prepwatch.watch import Watch

__all__ = ["PrepwatchCallback"]


class PrepwatchCallback(TrainerCallback, CallbackOptions):
    """Loop signals, per-class eval recall and the input contract for a ``Trainer``.

    Args:
        run: the ``run`` label (default as :func:`prepwatch.start`); rank, local rank and
            world size come from the Trainer's distributed state (``args.process_index``...).
        class_recall: feed per-class recall from the Trainer's evaluations (a forward hook
            reads ``labels=`` and the returned ``logits`` while the model is in eval mode);
            a callable ``(module, args, kwargs, output) -> (logits, labels) | None`` for
            models with other conventions.
        class_health: options for ``watch.class_health()`` (e.g. ``class_names=``).
        inputs: record the normalization contract from the model's training input: ``True``
            for the first floating-point tensor argument, or the name of the keyword
            (``"pixel_values"``); ``inputs_options`` go to ``watch.inputs()``.
        batch_size: as ``watch.loader(batch_size=...)`` (an int or ``callable(batch)``).
        time_collectives: under DDP, time the gradient all-reduce of the model the Trainer
            wrapped (``watch.ddp``); skipped for FSDP, DeepSpeed and single processes.
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
        self._set_options(
            run=run, class_recall=class_recall, class_health=class_health, inputs=inputs,
            inputs_options=inputs_options, batch_size=batch_size, start_options=start_options,
            keyword="model", time_collectives=time_collectives,
        )
        self._loader: Any = None
        self._recall: Optional[EvalRecall] = None
        self._hooked_model: Any = None

    # -- set-up ------------------------------------------------------------------------
    def _ensure_watch(self, args: Any) -> Watch:
        if self.watch is None:
            identity = framework_identity(
                self.run, args.process_index, args.local_process_index, args.world_size
            )
            self.watch = watch_for(identity, self.start_options)
            self._marks = StepMarks(self.watch)
        return self.watch

    def _hook_model(self, watch: Watch, model: Any) -> None:
        if model is None or model is self._hooked_model:
            return
        self._remove_hooks()
        self._hooked_model = model
        if self.class_recall:
            extract: Extract = self.class_recall if callable(self.class_recall) else logits_and_labels
            self._recall = EvalRecall(watch, "eval", extract, self.class_health_options)
            self._handles.append(model.register_forward_hook(self._recall.hook, with_kwargs=True))
        if self.inputs is not None:
            name = None if self.inputs is True else self.inputs
            hook = input_recorder(watch, name, self.inputs_options)
            self._handles.append(model.register_forward_pre_hook(hook, with_kwargs=True))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._hooked_model = None

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # Hooks from here, so a trainer.evaluate() before or without train() is counted too.
        if self.class_recall or self.inputs is not None:
            try:
                self._hook_model(self._ensure_watch(args), model)
            except Exception as exc:
                self._report(exc)

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        watch = self._ensure_watch(args)
        try:
            self._hook_model(watch, model)
            if train_dataloader is not None:
                self._wrap(watch, train_dataloader, int(args.gradient_accumulation_steps))
        except Exception as exc:
            self._report(exc)
        if self.time_collectives:
            try:
                time_collectives(watch, _model_wrapped(model), "the Hugging Face Trainer")
            except Exception as exc:
                self._report(exc)

    def _wrap(self, watch: Watch, dl: Any, group: int) -> None:
        if self._loader is not None:
            _iter_patch.unregister(self._loader)
        base = getattr(dl, "base_dataloader", dl)  # accelerate keeps the torch DataLoader here
        watched = GroupedLoader(
            dl, watch.loop, watch.worker_stats, watch.ctx.errors, batch_size=self.batch_size,
            dataloader=base if _is_torch_loader(base) else None, group=group,
        )
        marks = self._marks
        assert marks is not None
        _iter_patch.register(dl, lambda it: watched._generate(marks.wrap(it)))
        self._loader = dl

    # -- the loop ----------------------------------------------------------------------
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        marks = self._marks
        if marks is not None:
            marks.step_end()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._recall is not None:
            self._recall.end()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._loader is not None:
            _iter_patch.unregister(self._loader)
            self._loader = None

    def _report(self, exc: BaseException) -> None:
        if self.watch is not None:
            ReportOnce(self.watch)(exc)


def _model_wrapped(model: Any, max_frames: int = 8) -> Any:
    """The model the calling ``Trainer`` runs: its ``model_wrapped`` (DDP after accelerate's
    ``prepare``, set in ``_inner_training_loop`` before ``on_train_begin``).

    Callbacks get the unwrapped ``self.model``, and the callback handler keeps no reference
    to the Trainer, so the Trainer is found where it certainly is: ``self`` of the Trainer
    method that fired the event, a few frames up (``CallbackHandler.call_event`` between).
    Once per ``train()``; no Trainer found (a custom caller) means ``model`` itself.
    """
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(max_frames):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return getattr(owner, "model_wrapped", None) or model
        frame = frame.f_back
    return model


def _is_torch_loader(obj: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(obj, DataLoader)
