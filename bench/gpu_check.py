"""One prepared check of prepwatch's GPU paths on a real GPU (issue 19).

    python bench/gpu_check.py            # ~3 minutes on one GPU; one verdict line per check
    python bench/gpu_check.py --quick    # shorter windows; on a CPU-only machine it also runs
                                         # the training-loop code on device="cpu" (dry run)

Every line starts with PASS, FAIL or SKIP, then the check's name and its figures. Without
CUDA or NVML every GPU check prints SKIP with the reason and the script exits 0; with a
GPU it exits 1 when any check failed. It never changes the machine's settings (MIG mode,
accounting, permissions): it reads them and says what they mean for prepwatch.

Checks (docs/gpu.md says what each one shows and what only a GPU can show):

- ``tests.gpu``: the ``gpu``-marked pytest tests, in a subprocess.
- ``nvml.access``: MIG mode and whether this process may read NVML's utilization sample
  buffer, against the sampling mode prepwatch chose (``prepwatch_gpu_info{sampling}``).
- ``nvml.busy_100/50/0``: a matmul burner at ~100%, ~50% (100 ms duty cycle) and 0% for
  a window each; ``rate(prepwatch_gpu_busy_seconds_total)`` read from the real /metrics
  endpoint against ``nvidia-smi --query-gpu=utilization.gpu -lms 200`` averaged over the
  same window.
- ``nvml.memory``, ``nvml.uuid``: prepwatch's memory gauge and uuid label vs nvidia-smi.
- ``sync.*``: a small CNN trained from a DataLoader with workers and pinned memory, every
  component on, under ``torch.cuda.set_sync_debug_mode("error")``: a sync on the step path
  fails the component's line with the top frame of its traceback.
- ``overhead.*``: per-step cost of each component against the same loop without it
  (alternating paired runs in this process), and the data-wait share with pin_memory on/off.
- ``cpu.*`` (``--quick`` without CUDA): the same loop code on device="cpu", proving that the
  loop and every component run here; the overhead code runs once, not as a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import prepwatch  # noqa: E402

# --- prepwatch internals used by this script: the only ones (fix these paths after the
# --- package layout changes; everything else goes through prepwatch.start and Watch).
from prepwatch.checks.inputs import Declared  # noqa: E402
from prepwatch.sources.nvml import Nvml  # noqa: E402

# -----------------------------------------------------------------------------------------

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
COMPONENTS = ("loader", "class_health", "inputs", "boxes", "clips")
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)
log = logging.getLogger("prepwatch")


# -- verdicts ------------------------------------------------------------------------------
class Verdicts:
    """Prints one line per check and keeps the tally."""

    def __init__(self) -> None:
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}

    def __call__(self, status: str, name: str, text: str) -> None:
        self.counts[status] += 1
        print(f"{status} {name}: {text}", flush=True)


# -- metrics from the real endpoint ---------------------------------------------------------
def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return [(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(body) for s in fam.samples]


def total(samples: list, name: str, **labels: str) -> Optional[float]:
    hits = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    return sum(hits) if hits else None


# -- the tests -------------------------------------------------------------------------------
def check_gpu_tests(v: Verdicts, cuda: bool, timeout: float) -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    if not cuda:
        v("SKIP", "tests.gpu", f"{NO_CUDA}; {len(files)} files hold gpu-marked tests")
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *files]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        v("FAIL", "tests.gpu", f"timed out after {timeout:.0f}s: {' '.join(cmd)}")
        return
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    passed = re.search(r"(\d+) passed", summary)
    ok = proc.returncode == 0 and passed is not None and "skipped" not in summary
    detail = f"{summary} ({time.monotonic() - t0:.0f}s, {len(files)} files)"
    if not ok:
        tail = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "SKIPPED"))][:6]
        detail += " | " + " | ".join(tail)
    v("PASS" if ok else "FAIL", "tests.gpu", detail)


# -- NVML against nvidia-smi ---------------------------------------------------------------------
class Smi:
    """``nvidia-smi -lms`` in the background: timestamped readings of one query field."""

    def __init__(self, device: str, field: str, period_ms: int = 200) -> None:
        self.values: list[tuple[float, Optional[float]]] = []
        self._proc = subprocess.Popen(
            ["nvidia-smi", "-i", device, f"--query-gpu={field}", "--format=csv,noheader,nounits",
             "-lms", str(period_ms)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                value: Optional[float] = float(line.strip())
            except ValueError:  # "[N/A]" (MIG), "[Not Supported]", an error line
                value = None
                self.last_text = line.strip()
            self.values.append((time.monotonic(), value))

    def mean(self, t0: float, t1: float) -> tuple[Optional[float], int]:
        got = [x for t, x in self.values if t0 <= t <= t1 and x is not None]
        return (statistics.fmean(got) if got else None), len(got)

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def smi_query(device: str, fields: str) -> Optional[list[str]]:
    try:
        out = subprocess.run(["nvidia-smi", "-i", device, f"--query-gpu={fields}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return [x.strip() for x in out.stdout.strip().splitlines()[0].split(",")]


class Burner:
    """Keeps the GPU busy ``duty`` of every 100 ms period with fp32 matmuls, in a thread."""

    def __init__(self, duty: float, size: int = 4096) -> None:
        self.duty = duty
        self.x = torch.randn(size, size, device="cuda") / size**0.5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 0.1
        while not self._stop.is_set():
            start = time.perf_counter()
            busy_until = start + self.duty * period
            while time.perf_counter() < busy_until:
                for _ in range(2 if self.duty < 1 else 8):
                    self.x @ self.x  # noqa: B018 - the kernel is the point
                torch.cuda.synchronize()
            rest = start + period - time.perf_counter()
            if rest > 0:
                self._stop.wait(rest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def nvml_probe(uuid: str) -> dict[str, Any]:
    """What NVML lets this process see on the GPU: MIG mode and the sample buffer."""
    facts: dict[str, Any] = {"mig": None, "samples": None}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            try:
                current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
                facts["mig"] = bool(current)
            except pynvml.NVMLError as exc:
                facts["mig"] = False if exc.value == pynvml.NVML_ERROR_NOT_SUPPORTED else f"unknown ({exc})"
            try:
                pynvml.nvmlDeviceGetSamples(handle, 1, 0)
                facts["samples"] = "readable"
            except pynvml.NVMLError as exc:
                if exc.value == pynvml.NVML_ERROR_NO_PERMISSION:
                    facts["samples"] = "no permission"
                elif exc.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
                    facts["samples"] = "not supported"
                elif exc.value in (pynvml.NVML_ERROR_NOT_FOUND, getattr(pynvml, "NVML_ERROR_NO_DATA", -1)):
                    facts["samples"] = "readable"  # empty buffer: readable, nothing new
                else:
                    facts["samples"] = f"error ({exc})"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:
        facts["error"] = repr(exc)
    return facts


def gpu_uuid() -> Optional[str]:
    props = torch.cuda.get_device_properties(0)
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def check_nvml(v: Verdicts, watch: prepwatch.Watch, cuda: bool, window: float) -> None:
    nvml = Nvml()
    if not nvml.start():
        for name in ("nvml.access", "nvml.busy", "nvml.memory", "nvml.uuid"):
            v("SKIP", name, f"NVML not available ({nvml.reason})")
        return
    nvml.shutdown()
    if not cuda:
        for name in ("nvml.access", "nvml.busy", "nvml.memory", "nvml.uuid"):
            v("SKIP", name, NO_CUDA)
        return
    if shutil.which("nvidia-smi") is None:
        for name in ("nvml.access", "nvml.busy", "nvml.memory", "nvml.uuid"):
            v("SKIP", name, "nvidia-smi is not on PATH: nothing to compare against")
        return
    uuid = gpu_uuid()
    torch.zeros(1, device="cuda")  # a compute context, so prepwatch selects this GPU
    url = str(watch.url)
    deadline = time.monotonic() + 30  # the sampler re-selects GPUs every 10 s
    ours: list = []
    while time.monotonic() < deadline:
        s = scrape(url)
        ours = [lab for n, lab, _ in s if n == "prepwatch_gpu_info"]
        if ours and (uuid is None or any(lab.get("uuid") == uuid for lab in ours)):
            break
        time.sleep(0.5)
    if len(ours) == 1 and not any(lab.get("uuid") == uuid for lab in ours):
        print(f"# note: torch's uuid {uuid} is not among prepwatch's; using the one GPU it exports",
              flush=True)
        uuid = ours[0].get("uuid")
    facts = nvml_probe(uuid) if uuid else {"mig": None, "samples": None, "error": "no uuid"}
    mine = [lab for lab in ours if lab.get("uuid") == uuid]
    sampling = mine[0].get("sampling") if mine else None

    # nvml.access: MIG and permission, said; prepwatch's mode must match what NVML allows.
    said = f"MIG {'on' if facts['mig'] is True else 'off' if facts['mig'] is False else facts['mig']}; " \
           f"sample buffer {facts['samples']}; prepwatch sampling={sampling}"
    if facts.get("error") or not mine:
        v("FAIL", "nvml.access", f"{said}; prepwatch exports no series for {uuid} "
                                 f"(exported: {[lab.get('uuid') for lab in ours]}) {facts.get('error', '')}")
        return
    expected = "samples" if facts["samples"] == "readable" else "utilization_rates"
    note = ""
    if facts["samples"] == "no permission":
        note = " (this process may not read NVML samples: prepwatch falls back to one " \
               "utilization point per tick; settings left as they are)"
    if facts["mig"] is True:
        note += " (MIG is enabled: NVML and nvidia-smi give no GPU utilization for MIG devices; " \
                "busy comparisons are skipped; settings left as they are)"
    v("PASS" if sampling == expected else "FAIL", "nvml.access", said + note)

    # nvml.busy_*: the counter's rate against nvidia-smi over the same window.
    if facts["mig"] is True:
        v("SKIP", "nvml.busy", "MIG mode is enabled on this GPU: utilization is not reported per "
                               "MIG device (nvidia-smi shows [N/A]); settings left as they are")
    else:
        smi = Smi(uuid, "utilization.gpu")
        try:
            for duty in (1.0, 0.5, 0.0):
                busy_level(v, url, uuid, smi, duty, window)
        finally:
            smi.close()

    # nvml.memory and nvml.uuid: gauges and labels against nvidia-smi.
    keep = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # memory in use, held
    torch.cuda.synchronize()
    time.sleep(1.5)  # a sampler tick or more
    s = scrape(url)
    row = smi_query(uuid, "uuid,index,memory.used,memory.total")
    reserved = smi_query(uuid, "memory.reserved")
    del keep
    used = total(s, "prepwatch_gpu_memory_used_bytes", uuid=uuid)
    mem_total = total(s, "prepwatch_gpu_memory_total_bytes", uuid=uuid)
    if row is None or used is None or mem_total is None:
        v("FAIL", "nvml.memory", f"no reading (nvidia-smi: {row}, prepwatch used={used}, total={mem_total})")
    else:
        smi_used, smi_total = float(row[2]) * 2**20, float(row[3]) * 2**20
        diff = abs(used - smi_used)
        ok = diff <= max(64 * 2**20, 0.01 * smi_total) and abs(mem_total - smi_total) <= 0.01 * smi_total
        extra = f"; nvidia-smi memory.reserved {reserved[0]} MiB" if reserved else ""
        v("PASS" if ok else "FAIL", "nvml.memory",
          f"used prepwatch {used / 2**20:.0f} MiB vs nvidia-smi {smi_used / 2**20:.0f} MiB "
          f"(diff {diff / 2**20:.0f} MiB); total {mem_total / 2**30:.1f} vs "
          f"{smi_total / 2**30:.1f} GiB{extra}")
    if row is None:
        v("FAIL", "nvml.uuid", "nvidia-smi gave no uuid")
    else:
        labels = mine[0]
        ok = labels.get("uuid") == row[0] and labels.get("gpu") == row[1]
        v("PASS" if ok else "FAIL", "nvml.uuid",
          f"prepwatch gpu={labels.get('gpu')} uuid={labels.get('uuid')} model={labels.get('model')}; "
          f"nvidia-smi index={row[1]} uuid={row[0]}; torch uuid={uuid}")


def busy_level(v: Verdicts, url: str, uuid: str, smi: Smi, duty: float, window: float) -> None:
    name = f"nvml.busy_{round(duty * 100)}"
    burner = Burner(duty) if duty > 0 else None
    try:
        time.sleep(2.5)  # settle: the level is steady before, during and ~1 s lag after the window
        c0, t0 = total(scrape(url), "prepwatch_gpu_busy_seconds_total", uuid=uuid), time.monotonic()
        time.sleep(window)
        c1, t1 = total(scrape(url), "prepwatch_gpu_busy_seconds_total", uuid=uuid), time.monotonic()
    finally:
        if burner is not None:
            burner.stop()
    ref, n = smi.mean(t0, t1)
    if c0 is None or c1 is None:
        v("FAIL", name, "prepwatch_gpu_busy_seconds_total is missing for this GPU")
        return
    rate = 100.0 * (c1 - c0) / (t1 - t0)
    if ref is None:
        v("SKIP", name, f"nvidia-smi gave no utilization readings ({getattr(smi, 'last_text', '?')}); "
                        f"prepwatch {rate:.1f}%")
        return
    ok = abs(rate - ref) <= 5.0
    v("PASS" if ok else "FAIL", name,
      f"prepwatch rate {rate:.1f}% vs nvidia-smi mean {ref:.1f}% ({n} readings) over {t1 - t0:.1f}s; "
      f"diff {rate - ref:+.1f} points (tolerance 5)")


# -- the training loop ---------------------------------------------------------------------------
class Synthetic(Dataset):
    """Images whose tint says the class, three boxes each, and a consistently brightened clip."""

    def __init__(self, length: int, size: int, classes: int, frames: int = 4) -> None:
        self.length, self.size, self.classes, self.frames = length, size, classes, frames

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple:
        g = torch.Generator().manual_seed(i)
        label = i % self.classes
        s = self.size
        image = torch.rand(3, s, s, generator=g) * 0.6 + 0.2
        image[label % 3] += 0.15 * (label / self.classes)
        image = (image.clamp(0, 1) * 255).to(torch.uint8)
        xy = torch.rand(3, 2, generator=g) * (s / 2)
        wh = torch.rand(3, 2, generator=g) * (s / 2 - 2) + 2
        boxes = torch.cat([xy, xy + wh], dim=1)
        clip = torch.rand(self.frames, 3, 16, 16, generator=g)
        return image, label, boxes, clip, clip * 0.8  # the same gain on every frame


def small_cnn(classes: int, width: int = 32) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, width, 1), *block(width, 2 * width, 2),
                         *block(2 * width, 4 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * width, classes))


def flip_pair(image: torch.Tensor, boxes: Any) -> tuple[torch.Tensor, Any]:
    """The joint transform probed by watch.boxes(): a correct random horizontal flip."""
    if float(torch.rand(())) < 0.5:
        width = image.shape[-1]
        image = image.flip(-1)
        flipped = boxes.clone() if torch.is_tensor(boxes) else boxes.copy()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        boxes = flipped
    return image, boxes


def consistent_brightness(clip: torch.Tensor) -> torch.Tensor:
    """The clip transform probed by watch.clips(): one gain for every frame."""
    return clip * 0.9


class SyncLog(logging.Handler):
    """Collects prepwatch's 'X failed' records: a sync raised inside a component is caught
    there and counted, so its traceback is only seen here."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def top_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "prepwatch" in f.filename] or frames
    f = ours[-1] if ours else None
    where = f"{Path(f.filename).name}:{f.lineno} in {f.name}" if f else "?"
    return f"{type(exc).__name__} at {where}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def is_sync_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "synchroniz" in str(exc)


class Loop:
    """The training loop, with each component switchable, on ``device``."""

    def __init__(self, watch: prepwatch.Watch, device: str, *, quick: bool, workers: int) -> None:
        self.watch, self.device, self.quick = watch, torch.device(device), quick
        self.classes = 10
        self.size = 32 if quick else 64
        self.batch = 8 if quick else 128
        self.workers = workers
        torch.manual_seed(0)
        # On a GPU, wide enough that a step is a few ms of kernels, not only launches.
        self.model = small_cnn(self.classes, 32 if quick else 64).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.loss_sum = torch.zeros((), device=self.device)
        # Defaults everywhere (what users pay), denser cadences only for the short runs.
        dense: dict[str, Any] = {"sample_every": 2} if quick else {}
        probes: dict[str, Any] = {"probe_every": 5} if quick else {}
        self.class_health = watch.class_health(num_classes=self.classes,
                                               **({"flush_every_steps": 5} if quick else {}))
        self.inputs = watch.inputs(declared=Declared(MEAN, STD), **dense)
        self.boxes = watch.boxes(transform=flip_pair, **dense, **probes,
                                 **({"probe_budget": 0.05} if quick else {}))
        self.clips = watch.clips(transform=consistent_brightness, **dense, **probes,
                                 **({"budget": 0.05} if quick else {}))
        self.syncs: dict[str, list[str]] = {}
        self.calls = dict.fromkeys((*COMPONENTS, "inputs_guard", "eval"), 0)
        self.guard = False

    def dataloader(self, length: int, pin: bool, persistent: bool = False) -> DataLoader:
        ds = Synthetic(length, self.size, self.classes)
        return DataLoader(ds, batch_size=self.batch, num_workers=self.workers, pin_memory=pin,
                          persistent_workers=persistent and self.workers > 0, drop_last=True)

    def _call(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as exc:
            if not is_sync_error(exc):
                raise
            self.syncs.setdefault(name, []).append(top_frame(exc))
            return None

    def _to_device(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.to(self.device, non_blocking=True).float().div_(255).sub_(self.mean).div_(self.std)
        return x, label.to(self.device, non_blocking=True)

    def train_step(self, batch: tuple, on: frozenset) -> None:
        image, label, boxes, raw, aug = batch
        if "boxes" in on:
            self.calls["boxes"] += 1
            self._call("boxes", lambda: self.boxes.observe(image, list(boxes)))
        if "clips" in on:
            self.calls["clips"] += 1
            self._call("clips", lambda: self.clips.observe(raw, aug))
        x, y = self._call("loop", lambda: self._to_device(image, label)) or (None, None)
        if x is None:
            return
        if "inputs" in on:
            self.calls["inputs"] += 1
            self._call("inputs", lambda: self.inputs.record(x))

        def step() -> torch.Tensor:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.loss_sum += loss.detach()
            return logits.detach()

        logits = self._call("loop", step)
        if logits is not None and "class_health" in on:
            self.calls["class_health"] += 1
            self._call("class_health", lambda: self.watch.class_health().train_predictions(logits, y))

    def eval_step(self, batch: tuple, on: frozenset) -> None:
        image, label = batch[0], batch[1]
        self.calls["eval"] += 1
        with torch.no_grad():
            x, y = self._call("loop", lambda: self._to_device(image, label)) or (None, None)
            if x is None:
                return
            if "inputs" in on and self.guard:
                self.calls["inputs_guard"] += 1
                self._call("inputs_guard", lambda: self.inputs.guard(x))
            logits = self._call("loop", lambda: self.model(x))
            if logits is not None and "class_health" in on:
                self._call("class_health", lambda: self.watch.class_health().eval_predictions(logits, y))

    def run(self, batches: Any, on: frozenset, steps: int) -> int:
        """``steps`` train steps from ``batches``; the loader is watched when 'loader' is on."""
        it = self.watch.loader(batches) if "loader" in on else batches
        n = 0
        for batch in it:
            self.train_step(batch, on)
            n += 1
            if "loader" in on:
                self.calls["loader"] += 1
            if n >= steps:
                break
        return n


# -- sync check (and its CPU dry run) ------------------------------------------------------------
def component_evidence(url: str) -> dict[str, Optional[float]]:
    s = scrape(url)
    return {
        "loader": total(s, "prepwatch_samples_total"),
        "class_health": total(s, "prepwatch_class_samples_total"),
        "inputs": total(s, "prepwatch_input_batches_recorded_total"),
        "inputs_guard": total(s, "prepwatch_input_batches_checked_total"),
        "boxes": total(s, "prepwatch_boxes_total"),
        "clips": total(s, "prepwatch_clips_total"),
        "probes": total(s, "prepwatch_box_alignment_checks_total"),
    }


def internal_errors(url: str) -> dict[str, float]:
    return {lab.get("component", "?"): val for n, lab, val in scrape(url)
            if n == "prepwatch_internal_errors_total" and val > 0}


def check_loop(v: Verdicts, watch: prepwatch.Watch, loop: Loop, *, prefix: str, steps: int,
               eval_steps: int, debug_sync: bool) -> None:
    """Train ``steps`` steps with every component on, evaluate, guard; one line per component."""
    on = frozenset(COMPONENTS)
    url = str(watch.url)
    catcher = SyncLog()
    log.addHandler(catcher)
    pin = loop.device.type == "cuda"
    dl = loop.dataloader((steps + 2) * loop.batch, pin=pin)
    eval_dl = loop.dataloader(eval_steps * loop.batch, pin=pin)
    errors_before = internal_errors(url)
    before = component_evidence(url)
    mode = torch.cuda.set_sync_debug_mode if debug_sync else (lambda _m: None)
    t0 = time.monotonic()
    try:
        for n, batch in enumerate(watch.loader(dl), 1):  # what a user writes
            loop.train_step(batch, on)
            loop.calls["loader"] += 1
            if n == 2:
                # Set-up outside the debug mode: first calls allocate (pinned) buffers on purpose.
                if pin:
                    torch.cuda.synchronize()
                mode("error")
        loop._call("class_health", lambda: loop.class_health.begin_eval("eval"))
        for batch in eval_dl:
            loop.eval_step(batch, on)
        loop._call("class_health", lambda: loop.class_health.end_eval("eval"))
        mode("default")
        errors_train = internal_errors(url)
        # Guard (serving side) against the contract recorded above, on the eval batches.
        try:
            loop.inputs.use(loop.inputs.contract())
            no_contract = ""
        except ValueError as exc:  # nothing recorded: the inputs line says why
            no_contract = f"no contract to guard against ({exc})"
        if not no_contract:
            loop.guard = True
            mode("error")
            for batch in eval_dl:
                loop.eval_step(batch, frozenset({"inputs"}))
    finally:
        mode("default")
        loop.guard = False
        log.removeHandler(catcher)
    if pin:
        torch.cuda.synchronize()
    loop.class_health.flush()
    loop.inputs.flush()
    if pin:
        torch.cuda.synchronize()
    time.sleep(0.2)
    after = component_evidence(url)
    moved = {k: (after[k] or 0) - (before[k] or 0) for k in after}
    errors_guard = internal_errors(url)
    # Internal errors per check: training phase (every component) and guard phase (inputs).
    errors = {k: errors_train.get(k, 0) - errors_before.get(k, 0) for k in errors_train}
    errors["inputs_guard"] = errors_guard.get("inputs", 0) - errors_train.get("inputs", 0)
    # First logged fault per component, with the thread it happened in: a sync raised inside a
    # component is caught there and counted, so its traceback is only seen in the log record.
    logged: dict[str, list[tuple[str, str]]] = {}
    for rec in catcher.records:
        if rec.exc_info and rec.exc_info[1] is not None:
            comp = str(rec.args[0]) if isinstance(rec.args, tuple) and rec.args else "?"
            logged.setdefault(comp, []).append((rec.threadName, top_frame(rec.exc_info[1])))
    wall = time.monotonic() - t0
    what = "sync debug mode 'error'" if debug_sync else f"device={loop.device.type}, no sync debug mode"
    loss = float(loop.loss_sum)
    for name in ("loop", *COMPONENTS, "inputs_guard"):
        syncs = loop.syncs.get(name, [])
        problems = []
        if syncs:
            problems.append(f"{len(syncs)} sync(s) raised into the loop: {syncs[0]}")
        comp = "inputs" if name == "inputs_guard" else name
        if errors.get(name, 0) > 0:
            where = [f"{frame} [thread {thread}]" for thread, frame in logged.get(comp, [])]
            problems.append(f"{errors[name]:g} internal error(s) caught inside: "
                            f"{where[0] if where else 'no log record'}")
        if name == "loop":
            fig = (f"{steps + 2} train + {eval_steps} eval + {eval_steps} guarded steps in {wall:.1f}s, "
                   f"loss sum {loss:.3g} ({what})")
        else:
            fig = f"{loop.calls[name]} calls, metric +{moved[name]:g} ({what})"
            if name == "boxes":
                fig += f", alignment probe trials +{moved['probes']:g}"
            if not moved[name] and not (name == "inputs_guard" and debug_sync):
                problems.append("its metric did not move")
        if name == "inputs_guard" and no_contract:
            problems = [no_contract]
        elif name == "inputs_guard" and debug_sync and problems and not syncs:
            # docs/inputs.md: the guard copies 4 numbers per image and channel of a GPU
            # batch to the host to decide, which synchronizes (check_every bounds it); under the
            # debug mode that copy raises inside the guard, which counts it and goes on.
            v("PASS", f"{prefix}.{name}", f"{fig}; syncs as documented (one small copy per checked "
                                          f"batch, bounded by check_every): {problems[0]}")
            continue
        v("FAIL" if problems else "PASS", f"{prefix}.{name}",
          fig + ("; " + "; ".join(problems) if problems else ""))


def check_clips_on_cuda(v: Verdicts, watch: prepwatch.Watch, loop: Loop) -> None:
    """clips.observe on CUDA clips (augmentation on the GPU): does a sampled call sync?

    Calls until one call was sampled (the clip metric moved, or a fault was counted): the
    time budget may hold sampling back for a few seconds after the sync run."""
    url = str(watch.url)
    catcher = SyncLog()
    log.addHandler(catcher)
    raw = torch.rand(2, 4, 3, 16, 16, device="cuda")
    aug = raw * 0.8
    torch.cuda.synchronize()
    clips0 = total(scrape(url), "prepwatch_clips_total", source="stream") or 0
    errors0 = internal_errors(url).get("clips", 0)
    calls, syncs, sampled = 0, [], False
    deadline = time.monotonic() + 15
    try:
        while not sampled and time.monotonic() < deadline:
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(loop.clips.sample_every):
                    calls += 1
                    loop.clips.observe(raw, aug)
            except RuntimeError as exc:
                if not is_sync_error(exc):
                    raise
                syncs.append(top_frame(exc))
            finally:
                torch.cuda.set_sync_debug_mode("default")
            moved = (total(scrape(url), "prepwatch_clips_total", source="stream") or 0) - clips0
            swallowed = internal_errors(url).get("clips", 0) - errors0
            sampled = bool(syncs or moved or swallowed)
            time.sleep(0.05)
    finally:
        log.removeHandler(catcher)
    firsts = [top_frame(r.exc_info[1]) for r in catcher.records if r.exc_info and r.exc_info[1]]
    if syncs or swallowed:
        first = (syncs or firsts or ["traceback logged once, earlier in the run"])[0]
        v("FAIL", "sync.clips_cuda", f"{calls} observe() calls on CUDA clips: {len(syncs)} raised, "
                                     f"{swallowed:g} caught inside ({first}); "
                                     "a sampled call copies CUDA clips to the host synchronously")
    elif sampled:
        v("PASS", "sync.clips_cuda", f"{calls} observe() calls on CUDA clips, {moved:g} measured, no sync")
    else:
        v("FAIL", "sync.clips_cuda", f"{calls} observe() calls in 15 s and none was sampled")


# -- overhead ---------------------------------------------------------------------------------------
def paired(bare: Callable[[], float], wrapped: Callable[[], float], rounds: int,
           warm_up: bool = True) -> tuple[float, float]:
    """Alternating paired runs; each returns seconds per step. (median bare, median ratio)."""
    if warm_up:
        bare(), wrapped()
    b_t, ratios = [], []
    for i in range(rounds):
        order = (bare, wrapped) if i % 2 == 0 else (wrapped, bare)
        got = {fn: fn() for fn in order}
        b_t.append(got[bare])
        ratios.append(got[wrapped] / got[bare])
    return statistics.median(b_t), statistics.median(ratios)


def check_overhead(v: Verdicts, loop: Loop, *, prefix: str, rounds: int, steps: int, dry: bool) -> None:
    cuda = loop.device.type == "cuda"
    dl = loop.dataloader(10**6 * loop.batch, pin=cuda, persistent=True)
    source = iter(dl)

    def timed(on: frozenset) -> Callable[[], float]:
        def go() -> float:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = loop.run(itertools.islice(source, steps), on, steps)
            if cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / max(n, 1)
        return go

    note = " (cpu dry run: proves the code runs, not a measurement)" if dry else ""
    bare = timed(frozenset())
    for name in COMPONENTS:
        base, ratio = paired(bare, timed(frozenset({name})), rounds, warm_up=not dry)
        status = "PASS" if dry or ratio < 1.05 else "FAIL"
        v(status, f"{prefix}.{name}", f"step {base * 1e3:.2f} ms bare, x{ratio:.3f} with {name} "
                                     f"({(ratio - 1) * 100:+.1f}%, median of {rounds} paired rounds of "
                                     f"{steps} steps; target < 5%){note}")
    # data-wait share with pin_memory on and off: the same loop, all components off.
    if not cuda:
        v("SKIP", f"{prefix}.pin_memory", f"{NO_CUDA}: pinned memory only matters for host-to-GPU copies")
        return
    loaders = {pin: iter(loop.dataloader(10**6 * loop.batch, pin=pin, persistent=True))
               for pin in (True, False)}

    def share(pin: bool) -> tuple[float, float]:
        it = loaders[pin]
        torch.cuda.synchronize()
        wait, t0 = 0.0, time.perf_counter()
        for _ in range(steps):
            w0 = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - w0
            loop.train_step(batch, frozenset())
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        return wait / wall, wall / steps

    share(True), share(False)
    got: dict[bool, list] = {True: [], False: []}
    for i in range(rounds):
        for pin in ((True, False) if i % 2 == 0 else (False, True)):
            got[pin].append(share(pin))
    on = [statistics.median(x[k] for x in got[True]) for k in (0, 1)]
    off = [statistics.median(x[k] for x in got[False]) for k in (0, 1)]
    v("PASS", f"{prefix}.pin_memory",
      f"data-wait share {on[0] * 100:.1f}% with pin_memory, {off[0] * 100:.1f}% without; step "
      f"{on[1] * 1e3:.2f} vs {off[1] * 1e3:.2f} ms ({loop.workers} workers, "
      f"batch {loop.batch}x3x{loop.size}^2)")


# -- main -------------------------------------------------------------------------------------------
def guarded(v: Verdicts, name: str, fn: Callable[[], None]) -> None:
    """A check that crashes fails its own line; the others still run."""
    try:
        fn()
    except Exception as exc:
        v("FAIL", name, f"the check itself raised: {top_frame(exc)}")
        traceback.print_exc(file=sys.stdout)


def header(cuda: bool) -> None:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    driver = None
    if shutil.which("nvidia-smi"):
        row = smi_query("0", "driver_version")
        driver = row[0] if row else None
    print(f"# gpu_check {when}; prepwatch {prepwatch.__version__}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); GPU {gpu}; driver {driver}", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", "--dry-run", action="store_true",
                    help="short windows and runs; without CUDA, run the loop code on the CPU")
    ap.add_argument("--window", type=float, default=None, help="seconds per NVML busy level (20)")
    ap.add_argument("--no-tests", action="store_true", help="skip the gpu-marked pytest run")
    args = ap.parse_args(argv)
    started = time.monotonic()
    cuda = torch.cuda.is_available()
    header(cuda)
    v = Verdicts()
    window = args.window or (5.0 if args.quick else 20.0)
    if args.no_tests:
        v("SKIP", "tests.gpu", "--no-tests")
    else:
        check_gpu_tests(v, cuda, timeout=100)
    watch = prepwatch.start(run="gpu-check", port=0, sample_interval=0.2)
    try:
        guarded(v, "nvml", lambda: check_nvml(v, watch, cuda, window))
        if cuda:
            loop = Loop(watch, "cuda", quick=args.quick, workers=6)
            guarded(v, "sync", lambda: check_loop(
                v, watch, loop, prefix="sync", steps=40 if args.quick else 200,
                eval_steps=5 if args.quick else 20, debug_sync=True))
            guarded(v, "sync.clips_cuda", lambda: check_clips_on_cuda(v, watch, loop))
            guarded(v, "overhead", lambda: check_overhead(
                v, loop, prefix="overhead", rounds=3 if args.quick else 9,
                steps=10 if args.quick else 30, dry=False))
        else:
            v("SKIP", "sync", NO_CUDA)
            v("SKIP", "sync.clips_cuda", NO_CUDA)
            v("SKIP", "overhead", NO_CUDA)
            if args.quick:
                loop = Loop(watch, "cpu", quick=True, workers=2)
                guarded(v, "cpu.loop", lambda: check_loop(
                    v, watch, loop, prefix="cpu.loop", steps=8, eval_steps=2, debug_sync=False))
                guarded(v, "cpu.overhead", lambda: check_overhead(
                    v, loop, prefix="cpu.overhead", rounds=1, steps=2, dry=True))
    finally:
        prepwatch.stop()
    c = v.counts
    print(f"# gpu_check: {c['PASS']} pass, {c['FAIL']} fail, {c['SKIP']} skip in "
          f"{time.monotonic() - started:.0f}s", flush=True)
    return 1 if c["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
