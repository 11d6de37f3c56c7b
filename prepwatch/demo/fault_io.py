"""`prepwatch demo --fault io`: a small-file metadata storm, for real.

The training set is thousands of small real files (one 32x32 image each, 3 KB) in a
temporary folder, one file per sample, opened and read by the DataLoader workers.
The folder is on local disk, so the part a loaded network filesystem adds is
emulated, and only that part: every open waits for a "metadata service" (median
~4 ms, 2% of opens 40-80 ms), inside ``open()`` itself through its ``opener``
argument. The reads, the decode and the bytes are real.

What shows: ``prepwatch_file_open_seconds`` with a fat tail, hundreds of opens per
second at ~3 KB per open, ``prepwatch_sample_fetch_seconds{stage="read"}`` far above
decode and transform, the loop's data wait above its compute; at the end the
probe-io verdict on the same folder says "small-file bound".
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from typing import Any, Optional

import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.data import DataLoader, Dataset

import prepwatch
from prepwatch.demo.data import NUM_CLASSES, normalize, render
from prepwatch.demo.model import small_cnn
from prepwatch.hooks.open_hook import instrument_open
from prepwatch.tools import probe_io

FILES = 4096
SIDE = 32
HEADER = 1  # one byte: the label
OPEN_MEDIAN_S = 0.004  # a loaded NFS/Lustre metadata round trip
OPEN_SIGMA = 0.35  # log-normal spread of ordinary opens
SPIKE_SHARE = 0.02  # opens that queue behind a busy metadata server
SPIKE_S = (0.040, 0.080)


class SlowMetadataOpener:
    """``open(..., opener=...)`` that waits like a loaded metadata service, then opens.

    Picklable (spawn workers); each process draws from its own generator.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng: Optional[random.Random] = None
        self._pid = -1

    def delay(self) -> float:
        if self._rng is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._rng = random.Random(self.seed * 100_003 + self._pid)
        rng = self._rng
        if rng.random() < SPIKE_SHARE:
            return rng.uniform(*SPIKE_S)
        return OPEN_MEDIAN_S * float(np.exp(rng.gauss(0.0, OPEN_SIGMA)))

    def __call__(self, path: str, flags: int) -> int:
        time.sleep(self.delay())
        return os.open(path, flags)

    def __getstate__(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["seed"])  # type: ignore[misc]


def write_files(root: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` small image files under ``root`` (16 folders); returns paths and labels."""
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, size=n)
    paths = []
    for i, label in enumerate(labels):
        folder = os.path.join(root, f"{i % 16:02d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:06d}.img")
        image = render(int(label), np.random.default_rng((seed, i)))
        with open(path, "wb") as f:
            f.write(bytes([int(label)]) + image.tobytes())
        paths.append(path)
    return paths, labels


class SmallFiles(Dataset):
    """One file per sample, read through plain ``open`` (timed by prepwatch's open hook)."""

    def __init__(self, paths: list[str], opener: SlowMetadataOpener, seed: int = 0) -> None:
        self.paths = paths
        self.opener = opener
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with prepwatch.stage("read"), open(self.paths[index], "rb", opener=self.opener) as f:
            raw = f.read()
        with prepwatch.stage("decode"):
            label = raw[0]
            image = np.frombuffer(raw, dtype=np.uint8, offset=HEADER).reshape(SIDE, SIDE, 3)
        with prepwatch.stage("transform"):
            if np.random.default_rng((self.seed, index)).random() < 0.5:
                image = image[:, ::-1]
            x = normalize(image.copy())
        return x, int(label)


def _hook_in_worker(worker_id: int) -> None:
    # Forked workers inherit the hook; spawn/forkserver workers need it installed.
    instrument_open()


def _io_totals(watch: prepwatch.Watch) -> dict[str, float]:
    from prometheus_client import generate_latest

    out = {"opens": 0.0, "bytes": 0.0, "open_sum": 0.0}
    body = generate_latest(watch.ctx.registry).decode()  # type: ignore[arg-type]
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "prepwatch_file_opens_total":
                out["opens"] += s.value
            elif s.name == "prepwatch_read_bytes_total":
                out["bytes"] += s.value
            elif s.name == "prepwatch_file_open_seconds_sum":
                out["open_sum"] += s.value
    return out


def main(watch: prepwatch.Watch, args: argparse.Namespace) -> None:
    """Train for ``args.seconds`` on small files behind a slow metadata service."""
    torch.manual_seed(args.seed)
    root = tempfile.mkdtemp(prefix="prepwatch-fault-io-")
    hook = instrument_open()
    try:
        paths, _ = write_files(root, FILES, args.seed)
        opener = SlowMetadataOpener(args.seed)
        loader = DataLoader(
            SmallFiles(paths, opener, args.seed), batch_size=getattr(args, "batch_size", 64),
            shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
            drop_last=True, worker_init_fn=_hook_in_worker if args.workers > 0 else None,
        )
        model = small_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        t0 = time.monotonic()
        deadline = t0 + args.seconds if args.seconds > 0 else float("inf")
        steps = 0
        while time.monotonic() < deadline:
            for images, labels in watch.loader(loader):
                loss = loss_fn(model(images), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                if time.monotonic() >= deadline:
                    break
        elapsed = max(time.monotonic() - t0, 1e-9)
        hook.close()  # the probe's own opens are not the job's
        totals = _io_totals(watch)
        opens = totals["opens"]
        print(
            f"fault io: {steps} steps in {elapsed:.0f} s; {opens:,.0f} file opens "
            f"({opens / elapsed:,.0f}/s), {totals['bytes'] / max(opens, 1):,.0f} bytes per open, "
            f"mean open {1e3 * totals['open_sum'] / max(opens, 1):.1f} ms",
            flush=True,
        )
        report = probe_io.probe(
            root, readers=(1, 4), sample=32, seed=args.seed,
            open_file=lambda p: open(p, "rb", buffering=0, opener=opener),  # noqa: SIM115
        )
        print(f"probe-io on the same folder: {report.verdict.sentence}", flush=True)
    finally:
        hook.close()
        shutil.rmtree(root, ignore_errors=True)
