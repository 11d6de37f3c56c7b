"""Per-class recall from a framework's own evaluation, through a forward hook.

Frameworks do not hand predictions to callbacks batch by batch, but the model sees every
evaluation batch: a forward hook (with kwargs) on the model reads the logits it returned
and the labels it was given, while the model is in eval mode, and feeds
``watch.class_health().eval_predictions``. Counts stay on the tensors' device (class health flushes them
per pass), so the hook adds no device sync.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from prepwatch.integrations._core import ReportOnce
from prepwatch.watch import Watch

Extract = Callable[[Any, tuple, dict, Any], Optional[tuple[Any, Any]]]


def logits_and_labels(module: Any, args: tuple, kwargs: dict, output: Any) -> Optional[tuple[Any, Any]]:
    """Hugging Face convention: ``labels=`` in, ``.logits`` (or ``["logits"]``) out."""
    labels = kwargs.get("labels")
    if labels is None:
        return None
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and len(output) > 1:
        logits = output[1]  # (loss, logits, ...) when labels were given
    if logits is None:
        return None
    return logits, labels


class EvalRecall:
    """Opens an evaluation pass at the first eval-mode forward, closes it on ``end()``."""

    def __init__(self, watch: Watch, split: str, extract: Extract, options: dict[str, Any]) -> None:
        self._health = watch.class_health(**options)
        self._split = split
        self._extract = extract
        self._open = False
        self._report = ReportOnce(watch)
        self.enabled = True

    def hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if module.training or not self.enabled:
            return None
        try:
            pair = self._extract(module, args, kwargs, output)
            if pair is None:
                return None
            logits, labels = pair
            if getattr(logits, "dim", lambda: 0)() != 2 or getattr(labels, "dim", lambda: 0)() != 1:
                self.enabled = False  # not single-label classification: say so once, stop
                raise ValueError(
                    "class recall needs (batch, classes) logits and (batch,) labels; got "
                    f"{tuple(getattr(logits, 'shape', ()))} and {tuple(getattr(labels, 'shape', ()))}"
                    ": per-class recall is off for this model"
                )
            if not self._open:
                self._health.begin_eval(self._split)
                self._open = True
            self._health.eval_predictions(logits.detach(), labels, split=self._split)
        except Exception as exc:
            self._report(exc)
        return None

    def end(self) -> None:
        if self._open:
            self._open = False
            self._health.end_eval(self._split)
