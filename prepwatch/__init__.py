"""prepwatch: watch the input side of PyTorch training from Prometheus.

    import prepwatch
    watch = prepwatch.start(run="resnet50")
    for x, y in watch.loader(train_loader):
        ...
"""

from prepwatch._version import __version__
from prepwatch.hooks.open_hook import instrument_open, timed_open
from prepwatch.hooks.worker_recorder import stage
from prepwatch.runtime import current, start, stop
from prepwatch.watch import Watch

__all__ = [
    "Watch", "__version__", "current", "instrument_open", "stage", "start", "stop", "timed_open",
]
