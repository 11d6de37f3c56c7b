"""Shared-memory tables of wrapped DataLoaders: retired when the loader is gone, hooks that
cannot take effect are reported, and forked children never write into a dead row.

Real DataLoaders with real (forked) workers, scraped over real HTTP.
"""

from __future__ import annotations

import gc
import logging
import os

from datasets import TensorPairs
from helpers import scrape, value
from torch.utils.data import DataLoader, Dataset

import prepwatch
from prepwatch.hooks import worker_recorder

FETCH_COUNT = "prepwatch_sample_fetch_seconds_count"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fetched(url: str) -> float:
    return value(scrape(url), FETCH_COUNT, stage="total") or 0.0


def _run_once(watch, n: int) -> None:
    """One short-lived evaluation loader, built, consumed and dropped (as in evaluate())."""
    for _ in watch.loader(DataLoader(TensorPairs(n), batch_size=4, num_workers=1)):
        pass


def test_short_lived_dataloaders_release_tables_and_fds_and_keep_counting(watch):
    _run_once(watch, 8)  # warm-up: torch and multiprocessing open their lazy fds once
    gc.collect()
    fetched = _fetched(watch.url)
    assert fetched == 8
    fds_before = _fds()
    last = fetched
    for i in range(50):
        _run_once(watch, 8)
        fetched += 8
        if i % 10 == 9:
            gc.collect()
            now = _fetched(watch.url)
            assert now >= last  # counters never go down when tables are retired
            assert now == fetched
            last = now
    gc.collect()
    assert _fetched(watch.url) == fetched == 51 * 8
    assert _fds() <= fds_before + 3, (fds_before, _fds())  # not one fd per loader
    # one table per live DataLoader (none left) plus the main process' row
    assert len(watch.worker_stats._tables) <= 2


def test_table_is_kept_while_an_iterator_outlives_its_dataloader(watch):
    dl = DataLoader(TensorPairs(16), batch_size=4, num_workers=1)
    watch.loader(dl)  # attaches the worker hook
    tables = len(watch.worker_stats._tables)
    it = iter(dl)  # the iterator holds no reference to the DataLoader
    del dl
    gc.collect()
    assert sum(len(y) for _, y in it) == 16  # its worker still records into the table
    assert len(watch.worker_stats._tables) == tables
    assert _fetched(watch.url) == 16
    del it  # workers shut down: now the table can go
    gc.collect()
    assert _fetched(watch.url) == 16
    assert len(watch.worker_stats._tables) == tables - 1


def test_persistent_workers_started_before_wrapping_are_reported_once(watch, caplog):
    early = DataLoader(TensorPairs(8), batch_size=4, num_workers=1, persistent_workers=True)
    for _ in early:  # e.g. a framework's sanity-check pass before the loop wraps it
        pass
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        loader = watch.loader(early)
        watch.loader(early)  # wrapping again is idempotent and reports nothing more
        for _ in loader:
            pass
        # wrapped before its first iteration: nothing to report
        timely = DataLoader(TensorPairs(8), batch_size=4, num_workers=1, persistent_workers=True)
        for _ in watch.loader(timely):
            pass
    samples = scrape(watch.url)
    assert value(samples, "prepwatch_internal_errors_total", component="worker_hook") == 1
    assert watch.ctx.errors.count("worker_hook") == 1
    logged = [r.getMessage() for r in caplog.records if "worker_hook" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "already running" in logged[0] and "before its first iteration" in logged[0]
    # the early loader's running workers never got the hook; the timely one's did
    assert value(samples, FETCH_COUNT, stage="total") == 8


class RecorderProbe(Dataset):
    """Returns, from inside the worker, whether the worker has a recorder at all."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> bool:
        with prepwatch.stage("read"):
            pass
        return worker_recorder.recorder() is not None


def test_forked_workers_of_an_unwatched_loader_record_nothing(watch):
    assert worker_recorder.recorder() is watch.worker_stats.main_recorder
    plain = DataLoader(RecorderProbe(), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert list(plain) == [False] * 4  # not the inherited copy of the main process' row
    # an attached loader's workers still get their own row after the reset at fork
    watched = DataLoader(RecorderProbe(), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert list(watch.loader(watched)) == [True] * 4
    samples = scrape(watch.url)
    assert value(samples, FETCH_COUNT, stage="read") == 4
    assert value(samples, FETCH_COUNT, stage="total") == 4
