"""Time one DataLoader object's iterations without replacing the object.

The Hugging Face Trainer keeps the train DataLoader it built in a local variable and calls
``iter()`` on it every epoch; a callback only receives a reference. ``iter()`` looks
``__iter__`` up on the type, so the one way to time exactly what the loop consumes,
without subclassing the Trainer, is to give that type an ``__iter__`` that checks whether
``self`` is a registered object and, only then, wraps the original iterator. Every other
instance (evaluation and prediction loaders, other Trainers) takes the original path: one
dict look-up per ``iter()``, nothing per batch. The patch stays once installed (removing
it while another object is registered would silently stop that one); registrations are
weak, so a loader that is gone is forgotten.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Iterator

Wrap = Callable[[Iterator[Any]], Iterator[Any]]

_lock = threading.RLock()  # a weakref callback (GC) may run while register() holds it
_registered: dict[int, tuple[weakref.ReferenceType, Wrap]] = {}
_ORIGINAL = "_prepwatch_original_iter"


def register(obj: Any, wrap: Wrap) -> None:
    """From now on ``iter(obj)`` returns ``wrap(original_iterator)``."""
    cls = type(obj)  # the real type, even when __class__ is a property (accelerate)
    with _lock:
        if _ORIGINAL not in cls.__dict__:
            original = cls.__iter__

            def __iter__(self: Any) -> Iterator[Any]:
                entry = _registered.get(id(self))
                if entry is None or entry[0]() is not self:
                    return original(self)
                return entry[1](original(self))

            setattr(cls, _ORIGINAL, original)
            cls.__iter__ = __iter__  # type: ignore[method-assign]
        key = id(obj)
        _registered[key] = (weakref.ref(obj, lambda _ref, key=key: _forget(key, _ref)), wrap)


def unregister(obj: Any) -> None:
    with _lock:
        entry = _registered.get(id(obj))
        if entry is not None and entry[0]() is obj:
            del _registered[id(obj)]


def _forget(key: int, ref: weakref.ReferenceType) -> None:
    with _lock:
        entry = _registered.get(key)
        if entry is not None and entry[0] is ref:
            del _registered[key]
