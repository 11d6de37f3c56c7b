"""Recorded-style series for the engine tests: a job's /metrics text at chosen times.

``Job`` advances real prepwatch counters and histograms (the same bucket layouts the
exporter uses) by what a loop with the given behaviour would record, and renders the
Prometheus text exposition format, which the tests parse with the engine's own parser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prepwatch.diagnosis.series import Snapshot, Window, parse_text
from prepwatch.metrics.buckets import IO_BUCKETS, STEP_BUCKETS


def _le(b: float) -> str:
    return "+Inf" if math.isinf(b) else repr(float(b))


@dataclass
class Hist:
    bounds: tuple
    counts: list = field(default_factory=list)
    total: float = 0.0
    n: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0.0] * (len(self.bounds) + 1)

    def observe(self, v: float, times: float = 1.0) -> None:
        i = next((k for k, b in enumerate(self.bounds) if v <= b), len(self.bounds))
        self.counts[i] += times
        self.total += v * times
        self.n += times

    def lines(self, name: str, labels: str) -> list[str]:
        out, acc = [], 0.0
        for b, c in zip([*self.bounds, math.inf], self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{_le(b)}"}} {acc}')
        out.append(f"{name}_sum{{{labels}}} {self.total}")
        out.append(f"{name}_count{{{labels}}} {self.n}")
        return out


@dataclass
class Rank:
    run: str = "job"
    rank: str = "0"
    step_s: float = 0.1  # median step period
    wait_share: float = 0.02
    slow_every: int = 0  # every Nth step takes slow_factor x longer
    slow_factor: float = 10.0
    batch: int = 64
    stage_s: dict = field(default_factory=lambda: {"read": 0.0002, "decode": 0.0005, "transform": 0.0003})
    opens_per_sample: float = 0.0
    open_s: float = 0.0001
    bytes_per_open: float = 4 * 2**20
    steps: float = 0.0
    stalled_at: float = math.inf
    collective_share: float = math.nan  # watch.ddp: share of each step blocked in the all-reduce
    # state
    step: Hist = field(default_factory=lambda: Hist(STEP_BUCKETS))
    opens: Hist = field(default_factory=lambda: Hist(IO_BUCKETS))
    wait: float = 0.0
    collective: float = 0.0
    read_bytes: float = 0.0
    fetch: dict = field(default_factory=dict)
    last_step: float = 0.0

    def advance(self, t0: float, t1: float) -> None:
        t = t0
        while True:
            period = self.step_s
            if self.slow_every and int(self.steps) % self.slow_every == self.slow_every - 1:
                period *= self.slow_factor
            if t + period > min(t1, self.stalled_at):
                break
            t += period
            self.steps += 1
            self.step.observe(period)
            self.wait += period * self.wait_share
            if not math.isnan(self.collective_share):
                self.collective += period * self.collective_share
            self.last_step = t
            for stage, v in self.stage_s.items():
                self.fetch[stage] = self.fetch.get(stage, 0.0) + v * self.batch
            n_open = self.opens_per_sample * self.batch
            if n_open:
                self.opens.observe(self.open_s, n_open)
                self.read_bytes += n_open * self.bytes_per_open

    def lines(self) -> list[str]:
        lab = f'run="{self.run}",rank="{self.rank}"'
        out = self.step.lines("prepwatch_step_duration_seconds", lab)
        out.append(f"prepwatch_data_wait_seconds_sum{{{lab}}} {self.wait}")
        out.append(f"prepwatch_data_wait_seconds_count{{{lab}}} {self.steps}")
        out.append(f"prepwatch_steps_total{{{lab}}} {self.steps}")
        if not math.isnan(self.collective_share):
            out.append(f"prepwatch_collective_wait_seconds_sum{{{lab}}} {self.collective}")
            out.append(f"prepwatch_collective_wait_seconds_count{{{lab}}} {self.steps}")
        out.append(f"prepwatch_samples_total{{{lab}}} {self.steps * self.batch}")
        out.append(f"prepwatch_last_step_timestamp_seconds{{{lab}}} {self.last_step}")
        out.append(f"prepwatch_rank_up{{{lab}}} 1")
        total = sum(self.fetch.values())
        n = self.steps * self.batch
        for stage, v in [*self.fetch.items(), ("total", total)]:
            out.append(f'prepwatch_sample_fetch_seconds_sum{{{lab},stage="{stage}"}} {v}')
            out.append(f'prepwatch_sample_fetch_seconds_count{{{lab},stage="{stage}"}} {n}')
        if self.opens.n:
            out += self.opens.lines("prepwatch_file_open_seconds", lab)
            out.append(f"prepwatch_file_opens_total{{{lab}}} {self.opens.n}")
            out.append(f"prepwatch_read_bytes_total{{{lab}}} {self.read_bytes}")
        return out


@dataclass
class Job:
    ranks: list
    workers: int = 4
    worker_cpu: float = 0.3  # cores per worker
    worker_rss: float = 500 * 2**20
    rss_growth_per_s: float = 0.0
    gpu_busy: float = math.nan
    host_cpus: int = 16
    host_busy: float = 0.3
    t: float = 1_800_000_000.0
    cpu: float = 0.0
    gpu: float = 0.0
    host: dict = field(default_factory=lambda: {"user": 0.0, "idle": 0.0})
    extra: list = field(default_factory=list)  # callables (job, t) -> lines

    def snapshot(self) -> Snapshot:
        run = self.ranks[0].run
        lines = []
        for r in self.ranks:
            lines += r.lines()
        lines.append(f'prepwatch_process_cpu_seconds_total{{run="{run}",role="workers"}} {self.cpu}')
        lines.append(f'prepwatch_processes{{run="{run}",role="workers"}} {self.workers}')
        rss = (self.worker_rss + self.rss_growth_per_s * (self.t - 1_800_000_000.0)) * self.workers
        lines.append(f'prepwatch_process_resident_memory_bytes{{run="{run}",role="workers"}} {rss}')
        lines.append(f'prepwatch_host_cpus{{run="{run}"}} {self.host_cpus}')
        for mode, v in self.host.items():
            lines.append(f'prepwatch_host_cpu_seconds_total{{run="{run}",mode="{mode}"}} {v}')
        if not math.isnan(self.gpu_busy):
            lines.append(f'prepwatch_gpu_busy_seconds_total{{run="{run}",gpu="0",uuid="GPU-0"}} {self.gpu}')
        for fn in self.extra:
            lines += fn(self, self.t)
        return parse_text("\n".join(lines) + "\n", self.t)

    def advance(self, seconds: float) -> None:
        for r in self.ranks:
            r.advance(self.t, self.t + seconds)
        self.t += seconds
        self.cpu += self.worker_cpu * self.workers * seconds
        if not math.isnan(self.gpu_busy):
            self.gpu += self.gpu_busy * seconds
        self.host["user"] += self.host_busy * self.host_cpus * seconds
        self.host["idle"] += (1 - self.host_busy) * self.host_cpus * seconds

    def record(self, seconds: float, every: float = 15.0) -> Window:
        snaps = [self.snapshot()]
        while seconds > 1e-9:
            self.advance(min(every, seconds))
            seconds -= every
            snaps.append(self.snapshot())
        return Window(snaps, start=snaps[0].t)
