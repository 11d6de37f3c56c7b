"""The diagnosis engine: a window of prepwatch series in, ranked findings out. No I/O.

Two layers. :func:`conditions` mirrors the alert rules one for one (same quantities, same
thresholds, read from alerts/ by :mod:`prepwatch.diagnosis.thresholds`), so the engine and
Prometheus cannot disagree about what is wrong. :func:`diagnose` turns those conditions,
plus the finer evidence (worker stage timings, worker CPU, opens and bytes per open), into
findings that say why in plain words, rank the likely causes and name the first fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from prepwatch.diagnosis.distributed import Regression, regressions, step_shares
from prepwatch.diagnosis.series import Window, median
from prepwatch.diagnosis.thresholds import Thresholds, load

RATE = 300.0  # the rules' rate window (5m)
QUANTILE = 600.0  # the rules' quantile/increase window (10m)
HOUR = 3600.0
RECALL_HISTORY = 6 * HOUR
# Worker memory growth has no alert rule (a trend needs a long window that the rules'
# windows do not give); the engine's own line: workers' resident memory up by a quarter
# and 64 MiB or more, rising in most intervals (copy-on-access of Python objects in forked
# workers, pytorch#13246, grows steadily; a cache filling up levels off).
MEMORY_GROWTH_RATIO = 0.25
MEMORY_GROWTH_BYTES = 64 * 2**20
MEMORY_RISING_SHARE = 0.75
# A worker counts as CPU-saturated at 85% of a core: decode/augmentation is the bound.
WORKER_SATURATED = 0.85
STAGES = ("read", "decode", "transform", "other")
LOOP_PREFIXES = (
    "prepwatch_step_duration_seconds",
    "prepwatch_data_wait_seconds",
    "prepwatch_steps_total",
    "prepwatch_rank_up",
    "prepwatch_last_step_timestamp",
    "prepwatch_first_batch_wait",
    "prepwatch_file_open",
    "prepwatch_file_read",
    "prepwatch_sample_fetch",
)
INVALID_OUTCOMES = ("out_of_bounds", "degenerate")


@dataclass
class RankStats:
    run: str
    rank: str
    instance: str = ""
    seconds: float = 0.0
    steps: float = 0.0
    samples: float = 0.0
    steps_per_s: float = math.nan
    samples_per_s: float = math.nan
    wait_share: float = math.nan
    step_p50: float = math.nan
    step_p99: float = math.nan
    gpu_busy: float = math.nan
    opens_per_s: float = math.nan
    bytes_per_open: float = math.nan
    open_p99: float = math.nan
    reads_per_s: float = math.nan  # files read open to close (prepwatch_file_read_seconds)
    bytes_per_read: float = math.nan
    read_mean_s: float = math.nan  # mean time per file, open to close
    fetch_per_sample: float = math.nan
    stages: dict[str, float] = field(default_factory=dict)  # seconds per sample per stage
    workers: float = math.nan
    worker_cpu: float = math.nan  # cores per worker (1.0 = one core busy)
    host_cpus: float = math.nan
    host_busy: float = math.nan  # share of the host's CPU time busy
    last_step_age: float = math.nan
    first_batch_waits: float = 0.0
    restart_share: float = 0.0  # first-batch waits (iterator starts) over the loop's time
    up: bool = True

    def to_dict(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass
class Condition:
    alert: str
    labels: dict[str, str]
    value: float


def _one(d: dict, key: tuple, default: float = math.nan) -> float:
    return d.get(key, default)


def rank_stats(w: Window) -> list[RankStats]:
    """Per (run, rank): the figures the dashboards show, over the rules' windows."""
    steps = w.increase("prepwatch_step_duration_seconds_count", span=RATE)
    keys: set[tuple[str, ...]] = set()
    instances: dict[tuple[str, ...], str] = {}
    for (name, labels), _ in w.last.samples.items():
        if name.startswith(LOOP_PREFIXES):
            d = dict(labels)
            if d.get("rank", "") != "":
                keys.add((d.get("run", ""), d["rank"]))
                instances.setdefault((d.get("run", ""), d["rank"]), d.get("instance", ""))
    sec = w.span_seconds(RATE)
    step_sum = w.increase("prepwatch_step_duration_seconds_sum", span=RATE)
    wait_sum = w.increase("prepwatch_data_wait_seconds_sum", span=RATE)
    samples = w.increase("prepwatch_samples_total", span=RATE)
    p50 = w.quantile(0.5, "prepwatch_step_duration_seconds", span=QUANTILE)
    p99 = w.quantile(0.99, "prepwatch_step_duration_seconds", span=QUANTILE)
    opens = w.increase("prepwatch_file_opens_total", span=RATE)
    nbytes = w.increase("prepwatch_read_bytes_total", span=RATE)
    open_p99 = w.quantile(0.99, "prepwatch_file_open_seconds", span=RATE)
    reads = w.increase("prepwatch_file_read_seconds_count", span=RATE)
    read_s = w.increase("prepwatch_file_read_seconds_sum", span=RATE)
    read_n = w.increase("prepwatch_file_read_bytes_count", span=RATE)
    read_b = w.increase("prepwatch_file_read_bytes_sum", span=RATE)
    fetch = w.increase("prepwatch_sample_fetch_seconds_sum", by=("run", "rank", "stage"), span=RATE)
    fetch_n = w.increase("prepwatch_sample_fetch_seconds_count", by=("run", "rank", "stage"), span=RATE)
    fbw = w.increase("prepwatch_first_batch_wait_seconds_count")
    fbw_sum = w.increase("prepwatch_first_batch_wait_seconds_sum")
    last_step = w.gauge("prepwatch_last_step_timestamp_seconds", agg="max")
    endpoint_up = w.gauge("up", by=("instance",), agg="min")  # Prometheus' own; absent live
    up = w.gauge("prepwatch_rank_up", agg="min")
    gpu_inc = w.increase("prepwatch_gpu_busy_seconds_total", by=("instance", "gpu", "uuid"), span=RATE)
    gpu_by_inst: dict[str, list[float]] = {}
    for (inst, _gpu, _uuid), v in gpu_inc.items():
        gpu_by_inst.setdefault(inst, []).append(v / sec)
    cpu = w.increase("prepwatch_process_cpu_seconds_total", by=("run",), span=RATE, role="workers")
    nworkers = w.gauge("prepwatch_processes", by=("run",), role="workers")
    loader_workers = w.gauge("prepwatch_dataloader_workers", agg="max")
    host_cpus = w.gauge("prepwatch_host_cpus", by=(), agg="max")
    host_cpu = w.increase("prepwatch_host_cpu_seconds_total", by=("mode",), span=RATE)
    host_total = sum(host_cpu.values())
    host_idle = sum(v for (m,), v in host_cpu.items() if m in ("idle", "iowait"))
    out = []
    for key in sorted(keys):
        run, rank = key
        s = RankStats(run, rank, instances.get(key, ""), sec)
        s.steps = _one(steps, key, 0.0)
        s.samples = _one(samples, key, 0.0)
        s.steps_per_s = s.steps / sec
        s.samples_per_s = s.samples / sec
        ss = _one(step_sum, key, 0.0)
        s.wait_share = _one(wait_sum, key, 0.0) / ss if ss > 0 else math.nan
        s.step_p50, s.step_p99 = _one(p50, key), _one(p99, key)
        o = _one(opens, key, 0.0)
        s.opens_per_s = o / sec
        s.bytes_per_open = _one(nbytes, key, 0.0) / o if o > 0 else math.nan
        s.open_p99 = _one(open_p99, key) if o > 0 else math.nan
        r = _one(reads, key, 0.0)
        if r > 0:
            s.reads_per_s = r / sec
            s.read_mean_s = _one(read_s, key, 0.0) / r
        rn = _one(read_n, key, 0.0)
        s.bytes_per_read = _one(read_b, key, 0.0) / rn if rn > 0 else math.nan
        total_n = fetch_n.get((run, rank, "total"), 0.0)
        if total_n > 0:
            s.fetch_per_sample = fetch.get((run, rank, "total"), 0.0) / total_n
            for stage in STAGES:
                v = fetch.get((run, rank, stage))
                if v:
                    s.stages[stage] = v / total_n
        # "the GPUs of the node this rank runs on": same instance (one endpoint: no label).
        gpus = gpu_by_inst.get(s.instance, [])
        s.gpu_busy = sum(gpus) / len(gpus) if gpus else math.nan
        nw = nworkers.get((run,), 0.0) or loader_workers.get(key, 0.0)
        s.workers = nw if nw else math.nan
        if nw and (run,) in cpu:
            s.worker_cpu = cpu[(run,)] / sec / nw
        s.host_cpus = host_cpus.get((), math.nan)
        s.host_busy = 1 - host_idle / host_total if host_total > 0 else math.nan
        ls = last_step.get(key, 0.0)
        s.last_step_age = w.last.t - ls if ls > 0 else math.nan
        s.first_batch_waits = fbw.get(key, 0.0)
        s.restart_share = fbw_sum.get(key, 0.0) / ss if ss > 0 else 0.0
        s.up = up.get(key, 1.0) != 0 and endpoint_up.get((s.instance,), 1.0) != 0
        out.append(s)
    return out


def conditions(
    w: Window, th: Optional[Thresholds] = None, stats: Optional[list[RankStats]] = None
) -> list[Condition]:
    """The alert rules' conditions (without ``for:``) evaluated on the window."""
    th = th or load()
    stats = stats if stats is not None else rank_stats(w)
    out: list[Condition] = []

    def add(alert: str, s: RankStats, value: float, **extra: str) -> None:
        out.append(Condition(alert, {"run": s.run, "rank": s.rank, **extra}, value))

    for s in stats:
        share, gpu = s.wait_share, s.gpu_busy
        fed = not math.isnan(gpu) and gpu >= th.gpu_fed
        if share > th.wait_warning and not fed:
            add("PrepwatchInputBoundWarning", s, share)
        if share > th.wait_critical and not fed:
            add("PrepwatchInputBoundCritical", s, share)
        if share > th.starved_wait and not math.isnan(gpu) and gpu < th.starved_gpu_busy:
            add("PrepwatchGpuStarvedByInput", s, share)
        steps10 = w.increase("prepwatch_step_duration_seconds_count", span=QUANTILE).get((s.run, s.rank), 0)
        if s.step_p50 > 0 and s.step_p99 / s.step_p50 > th.spread_ratio and steps10 >= th.spread_min_steps:
            add("PrepwatchStepTimeUnstable", s, s.step_p99 / s.step_p50)
        if s.up and s.last_step_age > th.stalled_s:
            add("PrepwatchTrainingStalled", s, s.last_step_age)
        if s.open_p99 > th.open_p99_s and s.opens_per_s >= th.open_min_rate:
            add("PrepwatchFileOpenLatencyHigh", s, s.open_p99)
        if (
            s.opens_per_s >= th.storm_opens
            and s.bytes_per_open < th.storm_bytes
            and s.open_p99 > th.storm_p99_s
        ):
            add("PrepwatchSmallFileMetadataStorm", s, s.opens_per_s)
        if (
            s.reads_per_s >= th.reads_min_rate
            and s.bytes_per_read < th.reads_bytes
            and s.read_mean_s > th.reads_mean_s
        ):
            add("PrepwatchSmallFileSlowReads", s, s.reads_per_s)
    started = w.gauge("prepwatch_first_batch_wait_started_timestamp_seconds", agg="max")
    up = {(s.run, s.rank): s.up for s in stats}
    for key, t0 in started.items():
        if w.last.t - t0 > th.stalled_s and up.get(key, True):
            if not any(
                c.alert == "PrepwatchTrainingStalled" and (c.labels["run"], c.labels["rank"]) == key
                for c in out
            ):
                out.append(
                    Condition("PrepwatchTrainingStalled", {"run": key[0], "rank": key[1]}, w.last.t - t0)
                )
    by_run: dict[str, list[RankStats]] = {}
    for s in stats:
        if not math.isnan(s.step_p50):
            by_run.setdefault(s.run, []).append(s)
    # Ranks of a synchronous job (they export collective wait: watch.ddp) all share the
    # slowest rank's step period, so the step-p50 comparison says nothing there; the rules
    # skip such runs the same way (PrepwatchStragglerRank's `unless`).
    synchronous = {d.get("run") for d, _ in w.last.select("prepwatch_collective_wait_seconds_count")}
    for run, ranks in by_run.items():
        if len(ranks) < th.straggler_min_ranks or run in synchronous:
            continue
        med = median(r.step_p50 for r in ranks)
        for r in ranks:
            if med > 0 and r.step_p50 / med > th.straggler_ratio:
                add("PrepwatchStragglerRank", r, r.step_p50 / med)
    out += _distributed_conditions(w, th)
    out += _ratio_conditions(w, th)
    out += _recall_conditions(w, th)
    out += _gap_conditions(w, th)
    return out


def run_regressions(w: Window, th: Thresholds) -> list[Regression]:
    """Each run's step p50 against its baseline, over the rule's windows."""
    baseline, offset = th.regression_baseline_h * HOUR, th.regression_offset_m * 60
    return regressions(w, QUANTILE, baseline, offset, th.regression_history_m * 60)


def _distributed_conditions(w: Window, th: Thresholds) -> list[Condition]:
    """alerts/distributed.rules.yml: input and compute stragglers (seconds per step against
    the run's reference rank), and the run's step p50 against its own earlier hour."""
    out = []
    for r in step_shares(w, RATE):
        labels = {"run": r.run, "rank": r.rank}
        if r.excess > th.input_straggler:
            out.append(Condition("PrepwatchInputStragglerRank", labels, r.excess))
        if r.deficit > th.compute_straggler and not r.excess > th.compute_unless_input:
            out.append(Condition("PrepwatchComputeStragglerRank", labels, r.deficit))
    for g in run_regressions(w, th):
        if g.ratio > th.regression_ratio and g.now - g.baseline > th.regression_iqr * g.spread:
            out.append(Condition("PrepwatchThroughputRegression", {"run": g.run}, g.ratio))
    return out


def _judged(w: Window, name: str, label: str, bad: str, good: str, span: float) -> dict:
    bad_inc = w.increase(name, by=("run", "rank"), span=span, **{label: bad})
    good_inc = w.increase(name, by=("run", "rank"), span=span, **{label: good})
    out = {}
    for g in set(bad_inc) | set(good_inc):
        b, ok = bad_inc.get(g, 0.0), good_inc.get(g, 0.0)
        if b + ok > 0:
            out[g] = (b, b + ok, b / (b + ok))
    return out


def _ratio_conditions(w: Window, th: Thresholds) -> list[Condition]:
    out = []
    checked = w.increase("prepwatch_input_batches_checked_total", span=QUANTILE)
    viol = w.increase("prepwatch_input_contract_violations_total", by=("run", "rank", "kind"), span=QUANTILE)
    for (run, rank, kind), nv in viol.items():
        dv = checked.get((run, rank), 0.0)
        if dv <= 0 or nv < th.contract_min:
            continue
        ratio = nv / dv
        labels = {"run": run, "rank": rank, "kind": kind}
        if ratio > th.contract_full:
            out.append(Condition("PrepwatchInputOffContract", labels, ratio))
        elif ratio > th.contract_partial:
            out.append(Condition("PrepwatchInputOffContractPartial", labels, ratio))
    for span in (QUANTILE, HOUR):
        mis = _judged(w, "prepwatch_box_alignment_checks_total", "result", "misaligned", "aligned", span)
        short = _judged(
            w, "prepwatch_box_alignment_checks_total", "result", "misaligned", "aligned", QUANTILE
        )
        for (run, rank), (_b, n, r) in mis.items():
            if span == HOUR and short.get((run, rank), (0, 0, 0))[1] >= th.misaligned_min:
                continue
            if r > th.misaligned_ratio and n >= th.misaligned_min:
                if not any(
                    c.alert == "PrepwatchBoxesMisaligned" and c.labels == {"run": run, "rank": rank}
                    for c in out
                ):
                    out.append(Condition("PrepwatchBoxesMisaligned", {"run": run, "rank": rank}, r))
    boxes = w.increase("prepwatch_boxes_total", span=QUANTILE)
    invalid: dict[tuple[str, ...], float] = {}
    for bad in INVALID_OUTCOMES:
        for g, v in w.increase("prepwatch_boxes_total", span=QUANTILE, outcome=bad).items():
            invalid[g] = invalid.get(g, 0.0) + v
    for g, v in invalid.items():
        total = boxes.get(g, 0.0)
        if total >= th.boxes_invalid_min and v / total > th.boxes_invalid_ratio:
            out.append(Condition("PrepwatchBoxesInvalid", {"run": g[0], "rank": g[1]}, v / total))
    clips = _judged(w, "prepwatch_clips_total", "outcome", "inconsistent", "consistent", QUANTILE)
    for (run, rank), (_b, n, r) in clips.items():
        if r > th.clips_ratio and n >= th.clips_min:
            out.append(Condition("PrepwatchClipAugmentationInconsistent", {"run": run, "rank": rank}, r))
    return out


def _avg_by(snap_select, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    acc: dict[tuple[str, ...], list[float]] = {}
    for labels, v in snap_select:
        if not math.isnan(v):
            acc.setdefault(tuple(labels.get(k, "") for k in by), []).append(v)
    return {k: sum(v) / len(v) for k, v in acc.items()}


# The margin the rule's noise floor adds to the multiple-comparison term (the
# run_split_class:prepwatch_class_recent_correct:recall_noise_floor record); the promtool-fixture
# test (tests/test_diagnosis_rules.py) fails if the two drift apart.
NOISE_MARGIN = 2.34


def _recent_recall(snap: Any) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float],
                                        dict[tuple[str, ...], float]]:
    """Pooled recall of each (run, split, class) over its last evaluation passes, as the
    rule computes it: counts summed over ranks, only where every rank holds >= 2 passes."""
    passes: dict[tuple[str, ...], float] = {}
    for d, v in snap.select("prepwatch_eval_recent_passes"):
        k = (d.get("run", ""), d.get("split", ""))
        passes[k] = min(passes.get(k, math.inf), v)
    by = ("run", "split", "class")
    samples = {k: v for k, v in _sum_by(snap.select("prepwatch_class_recent_samples"), by).items()
               if passes.get(k[:2], 0.0) >= 2}
    correct = _sum_by(snap.select("prepwatch_class_recent_correct"), by)
    recall = {k: correct.get(k, 0.0) / n for k, n in samples.items() if n > 0}
    return recall, samples, passes


def _recall_conditions(w: Window, th: Thresholds) -> list[Condition]:
    """PrepwatchRareClassRecallDrop: a rare class's recall pooled over its last evaluation
    passes against the best such pool of the last 6 h, beyond the binomial noise floor of
    the pooled counts, while overall accuracy holds or rises."""
    history: dict[tuple[str, ...], float] = {}
    acc_max: dict[tuple[str, ...], float] = {}
    acc_min: dict[tuple[str, ...], float] = {}
    for snap in w.snapshots:
        if snap.t < w.last.t - RECALL_HISTORY:
            continue
        for k, v in _recent_recall(snap)[0].items():
            history[k] = max(history.get(k, -1.0), v)
        evaluated = {
            (d.get("run"), d.get("rank"), d.get("split"))
            for d, _ in snap.select("prepwatch_eval_rounds_total")
        }
        acc = _avg_by(
            (
                (d, v)
                for d, v in snap.select("prepwatch_accuracy_ratio")
                if (d.get("run"), d.get("rank"), d.get("split")) in evaluated
            ),
            ("run", "split"),
        )
        for k, v in acc.items():
            acc_max[k] = max(acc_max.get(k, -1.0), v)
            acc_min[k] = min(acc_min.get(k, 2.0), v)
    last = w.last
    recall, samples, passes = _recent_recall(last)
    acur = {
        (d.get("run"), d.get("rank"), d.get("split")): v for d, v in last.select("prepwatch_accuracy_ratio")
    }
    aprev = {
        (d.get("run"), d.get("rank"), d.get("split")): v
        for d, v in last.select("prepwatch_accuracy_previous_ratio")
    }
    acc_last2: dict[tuple[str, ...], list[float]] = {}
    for k, pv in aprev.items():
        v = acur.get(k, math.nan)
        acc_last2.setdefault((k[0], k[2]), []).append(v if v >= pv else pv)
    rounds_inc = w.increase("prepwatch_eval_rounds_total", by=("run", "rank", "split"), span=RECALL_HISTORY)
    rounds6h: dict[tuple[str, ...], float] = {}
    for (run, _rank, split), v in rounds_inc.items():
        rounds6h[(run, split)] = max(rounds6h.get((run, split), 0.0), v)
    rare = _max_by(last.select("prepwatch_class_rare"), ("run", "class"))
    out = []
    for k, now in recall.items():
        run, split, cls = k
        best = history.get(k)
        if best is None or rare.get((run, cls), 0.0) != 1 or (run, split) not in acc_last2:
            continue
        drop = best - now
        p = (best + now) / 2
        stderr = math.sqrt(max(p * (1 - p), 0.0) * 2 / samples[k])
        recent = passes.get((run, split), 0.0)
        looks = max(rounds6h.get((run, split), 0.0) / recent, 2.0) if recent > 0 else 2.0
        floor = (math.sqrt(2 * math.log(looks)) + NOISE_MARGIN) * stderr
        a2 = sum(acc_last2[(run, split)]) / len(acc_last2[(run, split)])
        if (
            drop > th.recall_drop
            and drop > floor
            and a2 >= acc_max.get((run, split), a2) - th.accuracy_hold
            and a2 >= acc_min.get((run, split), a2) + th.accuracy_rise
        ):
            out.append(
                Condition("PrepwatchRareClassRecallDrop", {"run": run, "split": split, "class": cls}, drop)
            )
    return out


def _sum_by(select, by):
    out: dict[tuple[str, ...], float] = {}
    for d, v in select:
        k = tuple(d.get(x, "") for x in by)
        out[k] = out.get(k, 0.0) + v
    return out


def _max_by(select, by):
    out: dict[tuple[str, ...], float] = {}
    for d, v in select:
        k = tuple(d.get(x, "") for x in by)
        out[k] = max(out.get(k, -math.inf), v)
    return out


@dataclass
class ClassGap:
    """A class' clean-eval recall (pooled over recent passes) minus its augmented-train
    recall, minus the same gap of overall accuracy (the augmentation-gap record)."""

    run: str
    split: str
    cls: str
    excess: float
    eval_recall: float
    train_recall: float
    samples: float  # pooled evaluation samples of the class

    @property
    def stderr(self) -> float:
        p = self.eval_recall
        return math.sqrt(max(p * (1 - p), 0.0) / self.samples)


def class_gaps(w: Window) -> list[ClassGap]:
    """Per rare (run, split, class) with pooled eval counts and a train split beside it."""
    last = w.last
    evaluated = {
        (d.get("run"), d.get("rank"), d.get("split")) for d, _ in last.select("prepwatch_eval_rounds_total")
    }

    def is_eval(d: dict[str, str]) -> bool:
        return (d.get("run"), d.get("rank"), d.get("split")) in evaluated

    train_recall = _avg_by(
        ((d, v) for d, v in last.select("prepwatch_class_recall_ratio") if not is_eval(d)), ("run", "class")
    )
    accuracy = list(last.select("prepwatch_accuracy_ratio"))
    eval_acc = _avg_by(((d, v) for d, v in accuracy if is_eval(d)), ("run", "split"))
    train_acc = _avg_by(((d, v) for d, v in accuracy if not is_eval(d)), ("run",))
    rare = _max_by(last.select("prepwatch_class_rare"), ("run", "class"))
    recall, samples, _ = _recent_recall(last)
    out = []
    for (run, split, cls), r in recall.items():
        tr, ea, ta = train_recall.get((run, cls)), eval_acc.get((run, split)), train_acc.get((run,))
        if tr is None or ea is None or ta is None or rare.get((run, cls), 0.0) != 1:
            continue
        out.append(ClassGap(run, split, cls, (r - tr) - (ea - ta), r, tr, samples[(run, split, cls)]))
    return out


def _gap_conditions(w: Window, th: Thresholds) -> list[Condition]:
    """PrepwatchRareClassAugmentationGap: the excess gap beyond its line and beyond
    ``gap_stderrs`` standard errors of the pooled eval recall."""
    alert = "PrepwatchRareClassAugmentationGap"
    return [
        Condition(alert, {"run": g.run, "split": g.split, "class": g.cls}, g.excess)
        for g in class_gaps(w)
        if g.excess > th.gap_excess and g.excess > th.gap_stderrs * g.stderr
    ]
