"""watch.loader() on real DataLoaders with real workers, scraped over real HTTP."""

from __future__ import annotations

import functools
import os
import queue
import threading
import time

import pytest
from datasets import DictSamples, Stream, TensorPairs
from helpers import scrape, value, wait_for
from torch.utils.data import DataLoader


def counts(url: str) -> dict[str, float]:
    s = scrape(url)
    return {
        "steps": value(s, "prepwatch_steps_total"),
        "samples": value(s, "prepwatch_samples_total"),
        "wait_n": value(s, "prepwatch_data_wait_seconds_count"),
        "wait_sum": value(s, "prepwatch_data_wait_seconds_sum"),
        "step_n": value(s, "prepwatch_step_duration_seconds_count"),
        "first_n": value(s, "prepwatch_first_batch_wait_seconds_count"),
        "fetch_n": value(s, "prepwatch_sample_fetch_seconds_count", stage="total"),
        "read_n": value(s, "prepwatch_sample_fetch_seconds_count", stage="read"),
        "read_sum": value(s, "prepwatch_sample_fetch_seconds_sum", stage="read"),
        "errors": value(s, "prepwatch_internal_errors_total"),
        "workers": value(s, "prepwatch_dataloader_workers"),
    }


@pytest.mark.parametrize(
    "workers,context,persistent",
    [(0, None, False), (2, "fork", False), (2, "fork", True), (2, "spawn", False), (2, "spawn", True)],
)
def test_every_batch_is_recorded_across_epochs(watch, workers, context, persistent):
    dl = DataLoader(
        TensorPairs(48, delay=0.001), batch_size=8, num_workers=workers,
        multiprocessing_context=context, persistent_workers=persistent,
    )
    loader = watch.loader(dl)
    seen = 0
    for _epoch in range(3):
        for x, y in loader:
            assert x.shape == (len(y), 3, 8, 8)  # batches are passed through untouched
            seen += len(y)
    c = counts(watch.url)
    assert seen == 144
    assert c["samples"] == 144 and c["steps"] == 18
    assert c["first_n"] == 3  # one first batch per pass
    assert c["wait_n"] == c["step_n"] == 15
    assert c["workers"] == workers
    assert c["errors"] == 0
    if workers:
        # measured inside the workers, carried home in shared memory
        assert c["fetch_n"] == 144
        assert c["read_n"] == 144
        assert 144 * 0.001 <= c["read_sum"] < 144 * 0.05
    else:
        assert c["fetch_n"] == 0  # in-process fetch is the loop's own data wait


def test_break_out_of_the_loop_and_start_again(watch):
    dl = DataLoader(TensorPairs(64), batch_size=4, num_workers=2, persistent_workers=True)
    loader = watch.loader(dl)
    for i, _ in enumerate(loader):
        if i == 4:
            break
    for i, _ in enumerate(loader):
        if i == 2:
            break
    c = counts(watch.url)
    assert c["steps"] == 8 and c["samples"] == 32
    assert c["first_n"] == 2


def test_batch_size_found_in_dicts_tuples_lists_or_given(watch):
    list(watch.loader(DataLoader(DictSamples(10), batch_size=4)))  # dict of tensors: 4+4+2
    list(watch.loader([[1, 2, 3], [4, 5]]))  # plain lists of samples
    list(watch.loader(DataLoader(Stream(6), batch_size=3, num_workers=1)))  # iterable dataset
    list(watch.loader(iter([object(), object()]), batch_size=16))  # given
    assert counts(watch.url)["samples"] == 10 + 5 + 6 + 32


def test_waits_are_what_the_loop_waits_for_a_slow_generator(watch):
    def slow():
        for i in range(6):
            time.sleep(0.05)
            yield i

    for _ in watch.loader(slow()):
        pass
    c = counts(watch.url)
    assert c["wait_n"] == 5
    # at least the sleeps; under twice them (counted once, with room for a busy machine)
    assert 5 * 0.05 <= c["wait_sum"] < 2 * 5 * 0.05


class Prefetcher:
    """A background-thread prefetcher, like the ones used to overlap host-to-device copies."""

    def __init__(self, iterable, depth=8):
        self.iterable, self.depth = iterable, depth

    def __iter__(self):
        q: queue.Queue = queue.Queue(self.depth)
        done = object()

        def fill():
            for item in self.iterable:
                q.put(item)
            q.put(done)

        threading.Thread(target=fill, daemon=True).start()
        while (item := q.get()) is not done:
            yield item


def test_prefetching_wrapper_hides_the_slow_loader_and_that_is_what_is_measured(watch):
    dl = DataLoader(TensorPairs(40, delay=0.004), batch_size=4, num_workers=2)
    steps = 0
    for _ in watch.loader(Prefetcher(dl), dataloader=dl):
        time.sleep(0.03)  # the "model step" is slower than loading: the prefetcher keeps up
        steps += 1
    samples = scrape(watch.url)
    c = counts(watch.url)
    assert steps == 10
    # The loop itself barely waited, although each batch took ~8 ms of worker time: at
    # most two of its 9 waits (a busy machine's scheduling hiccups) reach 5 ms; measured on
    # the slow loader inside, every wait would.
    quick = sum(v for (name, labels), v in samples.items()
                if name == "prepwatch_data_wait_seconds_bucket" and dict(labels).get("le") == "0.00512")
    assert c["wait_n"] == 9 and quick >= c["wait_n"] - 2, (quick, c)
    # ...and the worker-side fetch time is still measured through dataloader=.
    assert c["fetch_n"] == 40
    assert c["read_sum"] >= 40 * 0.004


def test_len_and_attributes_fall_through(watch):
    dl = DataLoader(TensorPairs(10), batch_size=4)
    wrapped = watch.loader(dl)
    assert len(wrapped) == 3
    assert wrapped.dataset is dl.dataset and wrapped.batch_size == 4


def test_bad_arguments_fail_at_setup_with_a_clear_message(watch):
    with pytest.raises(TypeError, match="iterable of batches"):
        watch.loader(42)
    with pytest.raises(TypeError, match="DataLoader behind"):
        watch.loader([1], dataloader=[1])
    with pytest.raises(ValueError, match="batch_size must be"):
        watch.loader([1], batch_size=-3)


def test_a_fault_inside_the_hook_is_counted_and_the_loop_goes_on(watch, caplog):
    def broken_size(batch):
        raise RuntimeError("bad sizer")

    out = [b for b in watch.loader([1, 2, 3, 4], batch_size=broken_size)]
    assert out == [1, 2, 3, 4]
    s = scrape(watch.url)
    assert value(s, "prepwatch_internal_errors_total", component="loader") == 4
    assert sum("bad sizer" in r.getMessage() for r in caplog.records) == 1  # logged once
    # a failing sizer costs the sample count, not the progress signals the stall alert reads
    assert value(s, "prepwatch_steps_total") == 4
    assert time.time() - value(s, "prepwatch_last_step_timestamp_seconds") < 5


def test_a_sizer_returning_a_tensor_is_said_once_and_shapes_count_instead(watch, caplog):
    import torch

    batches = [torch.zeros(8, 3), torch.zeros(8, 3), torch.zeros(5, 3)]
    for _ in range(2):
        out = list(watch.loader(batches, batch_size=lambda b: b.sum() + 8))
        assert len(out) == 3
    s = scrape(watch.url)
    assert value(s, "prepwatch_samples_total") == 2 * 21  # counted by shape, every batch
    assert value(s, "prepwatch_internal_errors_total", component="loader") == 2  # once a pass
    said = [r.getMessage() for r in caplog.records if "batch_size=" in r.getMessage()]
    assert len(said) == 1 and "Tensor, not int" in said[0]


def test_user_worker_init_fn_still_runs(watch, tmp_path):
    marker = tmp_path / "seen"

    def init(worker_id):
        (marker.parent / f"seen{worker_id}").write_text("1")

    dl = DataLoader(TensorPairs(8), batch_size=2, num_workers=2, worker_init_fn=init)
    list(watch.loader(dl))
    assert (tmp_path / "seen0").exists() and (tmp_path / "seen1").exists()


def test_a_loop_stuck_before_its_first_batch_shows_since_when(watch, tmp_path):
    """Workers that never start leave no last step to age; the pending request is exported."""
    release = tmp_path / "release"
    dl = DataLoader(
        TensorPairs(16), batch_size=4, num_workers=2,
        worker_init_fn=functools.partial(_stuck_until, str(release)),
    )
    loader = watch.loader(dl)
    before = scrape(watch.url)
    # no sample rather than NaN: absent until the loop asks, absent again once it is served
    assert value(before, "prepwatch_first_batch_wait_started_timestamp_seconds") is None
    assert value(before, "prepwatch_last_step_timestamp_seconds") is None

    got: list = []
    asked = time.time()
    runner = threading.Thread(target=lambda: got.extend(loader), daemon=True)
    runner.start()
    # The workers are parked in worker_init_fn; the loop starts waiting once the thread runs
    # (poll: on a loaded machine that may take more than a second).
    stuck = wait_for(lambda: (s := scrape(watch.url)) and
                     value(s, "prepwatch_first_batch_wait_started_timestamp_seconds") and s)
    since = value(stuck, "prepwatch_first_batch_wait_started_timestamp_seconds")
    assert asked - 0.1 <= since <= time.time()
    assert value(stuck, "prepwatch_last_step_timestamp_seconds") is None
    assert not got

    release.write_text("go")
    runner.join(timeout=30)
    assert len(got) == 4
    after = scrape(watch.url)
    assert value(after, "prepwatch_first_batch_wait_started_timestamp_seconds") is None
    assert value(after, "prepwatch_last_step_timestamp_seconds") >= since


def _stuck_until(path: str, worker_id: int) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)
