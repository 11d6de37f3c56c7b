"""The one door to NVML: lazy init, every call guarded, errors become "not available".

Everything prepwatch asks of the GPU goes through :class:`Nvml`, which takes the
NVML binding as a constructor argument (``lib``, default ``pynvml`` from
nvidia-ml-py). Tests hand it a small fake module with the same function names;
production gets the real library. Rules, after nvitop and dcgm-exporter:

* ``start()`` initialises NVML once and never raises: no library, no driver or no
  GPU leaves ``available`` False with ``reason`` saying why (the caller logs one line).
* a call the hardware or driver does not offer (not supported, no permission,
  function missing in this driver) returns ``None``, is logged once at INFO, and is
  not asked again for that device: the series is omitted, never a fake 0.
* any other failure (GPU lost, unknown error, a bug) returns ``None`` and goes to
  ``on_error`` (counted in ``prepwatch_internal_errors_total{component="gpu"}``,
  logged once per kind); the call is tried again next time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

log = logging.getLogger("prepwatch")

# NVML return codes (stable across NVML versions; nvml.h).
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
FUNCTION_NOT_FOUND = 13
NO_DATA = 21
# Codes meaning "this device/driver does not offer that": not a fault.
UNAVAILABLE_CODES = frozenset({NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND})
# Codes meaning "nothing new in the sample buffer" (an idle GPU's buffer runs dry).
EMPTY_CODES = frozenset({NOT_FOUND, NO_DATA})

GPU_UTILIZATION_SAMPLES = 1  # NVML_GPU_UTILIZATION_SAMPLES
TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU
CLOCK_SM = 1  # NVML_CLOCK_SM
# nvmlValueType_t -> field of nvmlValue_t
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class Unsupported(Exception):
    """Raised by :meth:`Nvml.utilization_samples` when the device has no sample buffer."""


def _code(exc: BaseException) -> Optional[int]:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """Guarded NVML calls for the GPU sampler.

    Args:
        lib: the NVML binding (default: ``import pynvml``, imported on ``start()``).
        on_error: ``(component, exc)`` for unexpected failures (e.g. ``ctx.errors.report``).
    """

    def __init__(
        self,
        lib: Any = None,
        on_error: Optional[Callable[[str, BaseException], None]] = None,
    ) -> None:
        self._lib = lib
        self._on_error = on_error
        self._lock = threading.Lock()
        self._started = False
        self.available = False
        self.reason: Optional[str] = None
        self._unavailable: set[tuple[str, int]] = set()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> bool:
        """Initialise NVML once. Never raises; ``reason`` says why it is unavailable."""
        with self._lock:
            if self._started:
                return self.available
            self._started = True
            if self._lib is None:
                try:
                    import pynvml
                except ImportError as exc:
                    self.reason = f"nvidia-ml-py is not installed ({exc})"
                    return False
                self._lib = pynvml
            try:
                self._lib.nvmlInit()
            except Exception as exc:  # NVMLError (no library, no driver), OSError
                self.reason = f"NVML did not start: {_text(exc) or type(exc).__name__}"
                return False
            self.available = True
            return True

    def shutdown(self) -> None:
        with self._lock:
            if self.available:
                self.available = False
                try:
                    self._lib.nvmlShutdown()
                except Exception:
                    pass

    # -- guarded calls ---------------------------------------------------------------
    def _call(self, name: str, index: int, *args: Any) -> Any:
        """``lib.<name>(*args)`` or None; see the module docstring for the error rules."""
        key = (name, index)
        if not self.available or key in self._unavailable:
            return None
        try:
            return getattr(self._lib, name)(*args)
        except Exception as exc:
            if _code(exc) in UNAVAILABLE_CODES or isinstance(exc, AttributeError):
                self._unavailable.add(key)
                log.info(
                    "prepwatch: NVML %s is not available on GPU %s (%s); its series are "
                    "omitted.", name, index, _text(exc) or type(exc).__name__,
                )
            else:
                self._report(exc)
            return None

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error("gpu", exc)
        else:
            log.warning("prepwatch: NVML call failed: %r", exc)

    def device_count(self) -> int:
        count = self._call("nvmlDeviceGetCount", -1)
        return int(count) if count is not None else 0

    def handle(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index, index)

    def uuid(self, handle: Any, index: int) -> Optional[str]:
        value = self._call("nvmlDeviceGetUUID", index, handle)
        return None if value is None else _text(value)

    def name(self, handle: Any, index: int) -> Optional[str]:
        value = self._call("nvmlDeviceGetName", index, handle)
        return None if value is None else _text(value)

    def utilization_samples(self, handle: Any, index: int, since_us: int) -> list[tuple[int, float]]:
        """GPU-utilization samples newer than ``since_us`` as ``(timestamp_us, percent)``.

        ``[]`` when none are new (NVML says NOT_FOUND: an idle GPU's buffer runs dry).
        Raises :class:`Unsupported` when the device or driver has no sample buffer;
        other failures are reported and give ``[]``.
        """
        if not self.available:
            return []
        try:
            value_type, samples = self._lib.nvmlDeviceGetSamples(
                handle, GPU_UTILIZATION_SAMPLES, since_us
            )
        except Exception as exc:
            code = _code(exc)
            if code in EMPTY_CODES:
                return []
            if code in UNAVAILABLE_CODES or isinstance(exc, AttributeError):
                raise Unsupported(_text(exc) or type(exc).__name__) from None
            self._report(exc)
            return []
        field = _VALUE_FIELDS.get(int(value_type), "uiVal")
        return [(int(s.timeStamp), float(getattr(s.sampleValue, field))) for s in samples]

    def utilization_percent(self, handle: Any, index: int) -> Optional[float]:
        rates = self._call("nvmlDeviceGetUtilizationRates", index, handle)
        return None if rates is None else float(rates.gpu)

    def memory(self, handle: Any, index: int) -> Optional[tuple[float, float]]:
        info = self._call("nvmlDeviceGetMemoryInfo", index, handle)
        return None if info is None else (float(info.used), float(info.total))

    def power_watts(self, handle: Any, index: int) -> Optional[float]:
        milliwatts = self._call("nvmlDeviceGetPowerUsage", index, handle)
        return None if milliwatts is None else milliwatts / 1000.0

    def temperature_celsius(self, handle: Any, index: int) -> Optional[float]:
        value = self._call("nvmlDeviceGetTemperature", index, handle, TEMPERATURE_GPU)
        return None if value is None else float(value)

    def sm_clock_hertz(self, handle: Any, index: int) -> Optional[float]:
        mhz = self._call("nvmlDeviceGetClockInfo", index, handle, CLOCK_SM)
        return None if mhz is None else mhz * 1e6

    def compute_pids(self, handle: Any, index: int) -> Optional[set[int]]:
        """Pids with a compute context on this GPU, or None when NVML cannot tell."""
        procs = self._call("nvmlDeviceGetComputeRunningProcesses", index, handle)
        return None if procs is None else {int(p.pid) for p in procs}
