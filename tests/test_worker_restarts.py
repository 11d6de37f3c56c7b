"""Workers restarted every epoch must not grow series, files or scrape cost."""

from __future__ import annotations

import os
import time
import urllib.request

from datasets import TensorPairs
from helpers import parse, value
from torch.utils.data import DataLoader


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_100_epochs_of_restarted_workers_leave_the_scrape_unchanged(watch):
    dl = DataLoader(TensorPairs(16), batch_size=4, num_workers=2, persistent_workers=False)
    loader = watch.loader(dl)

    def scrape_once():
        t0 = time.perf_counter()
        body = urllib.request.urlopen(watch.url).read().decode()
        return body, time.perf_counter() - t0

    for _ in loader:
        pass
    first_body, _ = scrape_once()
    first_series = set(parse(first_body))
    fds_before = _fds()
    for _ in range(99):
        for _ in loader:
            pass
    body, _ = scrape_once()
    samples = parse(body)
    assert set(samples) == first_series  # no series per worker pid
    assert len(body) < 1.05 * len(first_body)  # only the numbers (their digits) changed
    assert value(samples, "prepwatch_sample_fetch_seconds_count", stage="total") == 1600
    assert _fds() <= fds_before + 2  # no file or shared-memory handle per restart
    timings = sorted(scrape_once()[1] for _ in range(5))
    assert timings[2] < 0.05, timings  # a scrape stays cheap (median of 5)
