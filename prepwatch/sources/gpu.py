"""GPU sampler: busy time drained from NVML's sample buffer, plus memory, power, clocks.

Why drain the buffer: ``nvmlDeviceGetUtilizationRates`` is one point averaged over
NVML's last sample period (1/6 s to 1 s by product). Read once per scrape, a GPU that
drops from 95% to 40% for two seconds between scrapes looks busy. NVML keeps a ring
buffer of utilization samples; every tick this sampler takes the samples newer than
the last one it saw (``nvmlDeviceGetSamples`` by timestamp) and adds
``percent/100 x sample interval`` to ``prepwatch_gpu_busy_seconds_total``, so
``rate()`` over any window is the true utilization, whatever the scrape interval.

Gaps: an idle GPU's buffer runs dry (NVML answers NOT_FOUND), so a gap longer than
two sample periods is counted as one period for the sample that ends it, and the
silent time as idle. Out-of-range values (NVML occasionally returns garbage far
above 100) are skipped and logged once. Where the buffer is unsupported, the sampler
falls back to one ``nvmlDeviceGetUtilizationRates`` point per tick (coarser: drops
shorter than the interval are partly missed) and says so in
``prepwatch_gpu_info{sampling="utilization_rates"}`` and one log line.

Only the GPUs the job's processes hold a compute context on are exported once NVML
can tell (sticky: a GPU, once used, stays); until then, or where NVML cannot tell
(containers with another pid namespace, no permission), every GPU is.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from statistics import median
from typing import Any, Callable, Optional

from prepwatch.context import Context
from prepwatch.metrics import sanitize_label_value
from prepwatch.sources.nvml import Nvml, Unsupported

log = logging.getLogger("prepwatch")

DEFAULT_SAMPLE_PERIOD_S = 1 / 6  # NVML's utilization sample period on most data-centre GPUs
GAP_PERIODS = 2.0  # an interval longer than this many sample periods is a gap (idle or lost)
SELECT_REFRESH_S = 10.0  # how often to ask NVML which GPUs the job's processes use
NAN = float("nan")
LABELS = ("gpu", "uuid")


class _Device:
    """Per-GPU state; its instruments are bound once."""

    def __init__(self, index: int, handle: Any, uuid: str, name: str) -> None:
        self.index = index
        self.handle = handle
        self.uuid = uuid
        self.name = name
        self.key = (str(index), uuid)
        self.mode = "samples"
        self.last_ts: Optional[int] = None  # NVML timestamp (us) of the newest sample drained
        self.intervals: deque[float] = deque(maxlen=64)
        self.last_poll: Optional[float] = None  # clock() at the last rates poll
        self.warned_range = False
        self.bound: dict[str, Any] = {}

    def period(self) -> float:
        return median(self.intervals) if self.intervals else DEFAULT_SAMPLE_PERIOD_S


class GpuSampler:
    """Samples the job's GPUs; ``sample()`` runs in the sources thread, never the loop.

    Args:
        ctx: where the families go and faults are reported.
        job_pids: the job's process ids (main processes and workers), for GPU selection.
        nvml: the NVML wrapper (tests pass one around a fake binding).
        clock: monotonic clock (seconds), for the utilization-rates fallback.
    """

    name = "gpu"

    def __init__(
        self,
        ctx: Context,
        *,
        job_pids: Optional[Callable[[], set[int]]] = None,
        nvml: Optional[Nvml] = None,
        clock: Callable[[], float] = time.monotonic,
        select_refresh: float = SELECT_REFRESH_S,
    ) -> None:
        self._errors = ctx.errors
        self._nvml = nvml if nvml is not None else Nvml(on_error=ctx.errors.report)
        self._job_pids = job_pids
        self._clock = clock
        self._select_refresh = select_refresh
        self._next_select = 0.0
        self._devices: list[_Device] = []
        self._used: set[int] = set()  # indices the job was seen using (sticky)
        self._exported: set[int] = set()
        self._started = False
        reg = ctx.registry
        self.available = reg.gauge(
            "prepwatch_gpu_available",
            "1 when NVML answers and sees at least one GPU; 0 when no driver, library or GPU.",
        ).labels()
        self.available.set(NAN)  # unknown until the first tick
        self._families = {
            "busy": reg.counter(
                "prepwatch_gpu_busy_seconds_total",
                "Time a kernel was running on the GPU, drained from NVML's utilization sample "
                "buffer; rate() is utilization over any window.", LABELS,
            ),
            "ratio": reg.gauge(
                "prepwatch_gpu_utilization_ratio",
                "GPU utilization (0..1) over the last sampling interval.", LABELS,
            ),
            "mem_used": reg.gauge(
                "prepwatch_gpu_memory_used_bytes", "GPU memory in use (all processes).", LABELS
            ),
            "mem_total": reg.gauge(
                "prepwatch_gpu_memory_total_bytes", "GPU memory installed.", LABELS
            ),
            "power": reg.gauge("prepwatch_gpu_power_watts", "GPU board power draw.", LABELS),
            "temp": reg.gauge(
                "prepwatch_gpu_temperature_celsius", "GPU core temperature.", LABELS
            ),
            "clock": reg.gauge("prepwatch_gpu_sm_clock_hertz", "GPU SM clock.", LABELS),
        }
        self._info = reg.gauge(
            "prepwatch_gpu_info",
            "1 per watched GPU; sampling says how busy time is measured (samples = NVML sample "
            "buffer, utilization_rates = one point per tick, coarser).",
            ("gpu", "uuid", "model", "sampling"),
        )

    # -- set-up --------------------------------------------------------------------------
    def setup(self) -> bool:
        """Start NVML and enumerate GPUs. One log line when there is nothing to watch."""
        self._started = True
        if not self._nvml.start():
            self.available.set(0.0)
            log.info(
                "prepwatch: no GPU metrics: %s. prepwatch_gpu_available is 0; every other "
                "signal goes on.", self._nvml.reason,
            )
            return False
        for index in range(self._nvml.device_count()):
            handle = self._nvml.handle(index)
            if handle is None:
                continue
            uuid = self._nvml.uuid(handle, index) or "unknown"
            name = sanitize_label_value(self._nvml.name(handle, index) or "unknown")
            self._devices.append(_Device(index, handle, uuid, name))
        if not self._devices:
            self.available.set(0.0)
            log.info(
                "prepwatch: NVML started but sees no GPU; prepwatch_gpu_available is 0; every "
                "other signal goes on."
            )
            return False
        self.available.set(1.0)
        return True

    @property
    def devices(self) -> list[_Device]:
        return list(self._devices)

    # -- per tick ------------------------------------------------------------------------
    def sample(self) -> None:
        if not self._started:
            self.setup()
        if not self._devices:
            return
        now = self._clock()
        if now >= self._next_select:
            self._next_select = now + self._select_refresh
            self._select()
        for dev in self._devices:
            if dev.index not in self._exported:
                continue
            try:
                self._sample_device(dev, now)
            except Exception as exc:  # one GPU's fault must not stop the others
                self._errors.report("gpu", exc)

    def _select(self) -> None:
        """Export the GPUs the job uses once NVML can tell; all of them until then."""
        pids = self._job_pids() if self._job_pids is not None else set()
        if pids:
            for dev in self._devices:
                holders = self._nvml.compute_pids(dev.handle, dev.index)
                if holders and holders & pids:
                    self._used.add(dev.index)
        wanted = set(self._used) if self._used else {d.index for d in self._devices}
        for dev in self._devices:
            if dev.index in wanted and dev.index not in self._exported:
                self._bind(dev)
            elif dev.index not in wanted and dev.index in self._exported:
                self._unbind(dev)
        self._exported = wanted

    def _bind(self, dev: _Device) -> None:
        dev.bound = {k: fam.labels(*dev.key) for k, fam in self._families.items()}
        for key in ("ratio", "mem_used", "mem_total", "power", "temp", "clock"):
            dev.bound[key].set(NAN)
        self._info.labels(*dev.key, dev.name, dev.mode).set(1.0)

    def _unbind(self, dev: _Device) -> None:
        for fam in self._families.values():
            fam.remove(*dev.key)
        self._info.remove(*dev.key, dev.name, dev.mode)
        dev.bound = {}

    def _sample_device(self, dev: _Device, now: float) -> None:
        nvml, b = self._nvml, dev.bound
        ratio: Optional[float] = None
        if dev.mode == "samples":
            try:
                ratio = self._drain(dev)
            except Unsupported as why:
                self._switch_to_rates(dev, str(why))
        if dev.mode == "utilization_rates":
            ratio = self._poll_rates(dev, now)
        elif ratio is None:  # no new samples this tick: one current point for the gauge
            pct = nvml.utilization_percent(dev.handle, dev.index)
            ratio = None if pct is None else _clip(pct) / 100.0
        b["ratio"].set(NAN if ratio is None else ratio)
        mem = nvml.memory(dev.handle, dev.index)
        b["mem_used"].set(NAN if mem is None else mem[0])
        b["mem_total"].set(NAN if mem is None else mem[1])
        b["power"].set(_nan(nvml.power_watts(dev.handle, dev.index)))
        b["temp"].set(_nan(nvml.temperature_celsius(dev.handle, dev.index)))
        b["clock"].set(_nan(nvml.sm_clock_hertz(dev.handle, dev.index)))

    def _drain(self, dev: _Device) -> Optional[float]:
        """Add the busy time of new samples; return their time-weighted mean (0..1) or None."""
        samples = self._nvml.utilization_samples(dev.handle, dev.index, dev.last_ts or 0)
        if not samples:
            return None
        samples.sort()
        if dev.last_ts is None:
            # First drain: the buffer holds time from before we watched; use it only to
            # learn the sample period and where to start.
            prev = None
            for ts, _ in samples:
                if prev is not None and ts > prev:
                    dev.intervals.append((ts - prev) / 1e6)
                prev = ts
            dev.last_ts = samples[-1][0]
            return None
        busy = covered = 0.0
        prev_ts = dev.last_ts
        for ts, pct in samples:
            if ts <= prev_ts:
                continue
            dt = (ts - prev_ts) / 1e6
            prev_ts = ts
            period = dev.period()
            if dt > GAP_PERIODS * period:
                dt = period  # the buffer was silent (idle) or lost samples: one period
            else:
                dev.intervals.append(dt)
            if not 0.0 <= pct <= 100.0:
                if not dev.warned_range:
                    dev.warned_range = True
                    log.info(
                        "prepwatch: NVML returned an out-of-range utilization sample (%s) on GPU "
                        "%s; such samples are skipped.", pct, dev.index,
                    )
                continue
            busy += pct / 100.0 * dt
            covered += dt
        dev.last_ts = prev_ts
        if covered <= 0.0:
            return None
        dev.bound["busy"].inc(busy)
        return busy / covered

    def _switch_to_rates(self, dev: _Device, why: str) -> None:
        self._info.remove(*dev.key, dev.name, dev.mode)
        dev.mode = "utilization_rates"
        self._info.labels(*dev.key, dev.name, dev.mode).set(1.0)
        log.info(
            "prepwatch: GPU %s has no NVML utilization sample buffer (%s); busy seconds come "
            "from one nvmlDeviceGetUtilizationRates point per tick (coarser: drops shorter than "
            "the sampling interval are partly missed). See prepwatch_gpu_info{sampling}.",
            dev.index, why,
        )

    def _poll_rates(self, dev: _Device, now: float) -> Optional[float]:
        pct = self._nvml.utilization_percent(dev.handle, dev.index)
        last, dev.last_poll = dev.last_poll, now
        if pct is None:
            return None
        ratio = _clip(pct) / 100.0
        if last is not None and now > last:
            dev.bound["busy"].inc(ratio * (now - last))
        return ratio

    def close(self) -> None:
        self._nvml.shutdown()


def _clip(pct: float) -> float:
    return min(max(pct, 0.0), 100.0)


def _nan(value: Optional[float]) -> float:
    return NAN if value is None or math.isnan(value) else value
