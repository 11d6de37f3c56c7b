"""From conditions and rank figures to findings: a verdict, evidence, ranked causes, a fix."""

from __future__ import annotations

import math
from typing import Optional

from prepwatch.diagnosis.distributed_verdicts import distributed_findings
from prepwatch.diagnosis.engine import (
    MEMORY_GROWTH_BYTES,
    MEMORY_GROWTH_RATIO,
    MEMORY_RISING_SHARE,
    WORKER_SATURATED,
    Condition,
    RankStats,
    class_gaps,
    conditions,
    rank_stats,
)
from prepwatch.diagnosis.findings import Evidence, Finding, format_value, rank_findings
from prepwatch.diagnosis.series import Window
from prepwatch.diagnosis.thresholds import Thresholds, load

# Worker start-up at each iterator start (no persistent_workers) matters when the loop
# spends more than this share of its time waiting for first batches.
RESTART_SHARE = 0.05


def diagnose(w: Window, th: Optional[Thresholds] = None) -> list[Finding]:
    """Every finding on the window, most severe first; ``[]`` means healthy."""
    th = th or load()
    stats = rank_stats(w)
    conds = conditions(w, th, stats)
    by_rank: dict[tuple[str, str], list[Condition]] = {}
    for c in conds:
        by_rank.setdefault((c.labels.get("run", ""), c.labels.get("rank", "")), []).append(c)
    findings: list[Finding] = []
    for s in stats:
        mine = {c.alert: c for c in by_rank.get((s.run, s.rank), [])}
        findings += _rank_findings(s, mine, th)
    findings += _memory(w)
    findings += _data_findings(conds)
    findings += distributed_findings(w, conds, th)
    findings += _class_gaps(w, conds)
    return rank_findings(findings)


def _scope(s: RankStats) -> dict[str, str]:
    return {"run": s.run, "rank": s.rank}


def _wait_evidence(s: RankStats) -> list[Evidence]:
    ev = [Evidence("data-wait share of step time", s.wait_share, "%")]
    if not math.isnan(s.gpu_busy):
        ev.append(Evidence("GPU busy", s.gpu_busy, "%"))
    if not math.isnan(s.step_p50):
        ev.append(Evidence("step p50", s.step_p50, "s"))
    return ev


def _rank_findings(s: RankStats, c: dict[str, Condition], th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if "PrepwatchTrainingStalled" in c:
        out.append(
            Finding(
                "stalled",
                "critical",
                f"Stalled: rank {s.rank} has had no batch for "
                f"{format_value(c['PrepwatchTrainingStalled'].value, 's')}.",
                [
                    Evidence("time since the last step", c["PrepwatchTrainingStalled"].value, "s"),
                    Evidence("steps in the window", s.steps, "count"),
                ],
                [
                    "a DataLoader deadlock or workers that never start",
                    "a worker stuck on a hung network filesystem",
                    "a collective waiting for a dead rank",
                    "an in-loop evaluation longer than the threshold",
                ],
                "Take a stack dump of the process and its workers: py-spy dump --pid PID --subprocesses.",
                _scope(s),
                ["PrepwatchTrainingStalled"],
                score=c["PrepwatchTrainingStalled"].value,
            )
        )
    input_alerts = [
        a
        for a in ("PrepwatchInputBoundCritical", "PrepwatchInputBoundWarning", "PrepwatchGpuStarvedByInput")
        if a in c
    ]
    if input_alerts:
        out.append(_input_bound(s, c, input_alerts, th))
    else:
        if "PrepwatchSmallFileMetadataStorm" in c:
            out.append(
                Finding(
                    "storage.small_files",
                    "warning",
                    f"Small-file metadata storm: {s.opens_per_s:.0f} opens/s of "
                    f"{format_value(s.bytes_per_open, 'B')} each, p99 open {format_value(s.open_p99, 's')}.",
                    _io_evidence(s),
                    [
                        "the storage's metadata path (NFS, Lustre, FUSE object store)",
                        "a dataset of one small file per sample",
                    ],
                    "Shard the dataset into large sequential files (WebDataset/TFRecord-style tars).",
                    _scope(s),
                    ["PrepwatchSmallFileMetadataStorm"],
                    score=s.opens_per_s,
                )
            )
        if "PrepwatchFileOpenLatencyHigh" in c:
            out.append(
                Finding(
                    "storage.slow_opens",
                    "warning",
                    f"Slow storage: p99 file open takes {format_value(s.open_p99, 's')}.",
                    _io_evidence(s),
                    ["an overloaded metadata server", "a cold cache", "many jobs reading the same share"],
                    "Copy the dataset to local disk or warm the cache before training.",
                    _scope(s),
                    ["PrepwatchFileOpenLatencyHigh"],
                    score=s.open_p99,
                )
            )
        if "PrepwatchSmallFileSlowReads" in c:
            out.append(
                Finding(
                    "storage.slow_reads",
                    "warning",
                    f"Small files slow to read: {s.reads_per_s:.0f} files/s of "
                    f"{format_value(s.bytes_per_read, 'B')} each take {format_value(s.read_mean_s, 's')} "
                    f"from open to close.",
                    _read_evidence(s),
                    [
                        "the storage's per-request latency (object-store FUSE, an overloaded filer, "
                        "a cold cache), paid once per sample",
                        "a dataset of one small file per sample",
                    ],
                    "Shard the dataset into large sequential files (tar shards) or cache it on local "
                    "disk; more DataLoader workers overlap the waits meanwhile.",
                    _scope(s),
                    ["PrepwatchSmallFileSlowReads"],
                    score=s.reads_per_s,
                )
            )
        if (
            not math.isnan(s.gpu_busy)
            and s.gpu_busy < th.starved_gpu_busy
            and s.steps > 0
            and not s.wait_share > th.starved_wait
        ):
            out.append(
                Finding(
                    "gpu_idle_elsewhere",
                    "warning",
                    f"GPU busy only {format_value(s.gpu_busy, '%')} while the loop barely waits "
                    f"({format_value(s.wait_share, '%')}): the bottleneck is outside the input pipeline.",
                    _wait_evidence(s),
                    [
                        "CPU-side work in the loop (logging, metrics, .item() syncs)",
                        "a model too small for the GPU (launch-bound)",
                        "communication between ranks",
                        "a host-to-device copy from unpinned memory",
                    ],
                    "Profile one step with torch.profiler and look for CPU gaps between kernels.",
                    _scope(s),
                    [],
                    score=1 - s.gpu_busy,
                )
            )
    if "PrepwatchStepTimeUnstable" in c:
        causes = ["intermittent storage stalls", "GC or host CPU contention"]
        restarts = s.first_batch_waits > 1 and s.restart_share > RESTART_SHARE
        if restarts:
            causes.insert(0, "DataLoader workers re-created every epoch (persistent_workers=False)")
        if s.open_p99 > th.storm_p99_s:
            causes.insert(0, "slow file opens in the tail")
        ratio = c["PrepwatchStepTimeUnstable"].value
        out.append(
            Finding(
                "step_tail",
                "warning",
                f"Step time has a long tail: p99 is {ratio:.1f}x the median.",
                [
                    Evidence("step p50", s.step_p50, "s"),
                    Evidence("step p99", s.step_p99, "s"),
                    Evidence("p99/p50", ratio, "x"),
                    Evidence("iterator starts", s.first_batch_waits, "count"),
                    Evidence("loop time waiting for first batches", s.restart_share, "%"),
                ],
                causes,
                (
                    "Set persistent_workers=True on the DataLoader."
                    if restarts
                    else "Line the slow steps up with file open latency and worker restarts."
                ),
                _scope(s),
                ["PrepwatchStepTimeUnstable"],
                score=ratio,
            )
        )
    if "PrepwatchStragglerRank" in c:
        ratio = c["PrepwatchStragglerRank"].value
        out.append(
            Finding(
                "straggler",
                "warning",
                f"Rank {s.rank} straggles: its median step is {ratio:.1f}x the median of the run's ranks.",
                [
                    Evidence("step p50", s.step_p50, "s"),
                    Evidence("ratio to the ranks' median", ratio, "x"),
                    Evidence("data-wait share", s.wait_share, "%"),
                ],
                [
                    "a slower or busier node",
                    "a worse storage path",
                    "fewer CPU cores for its workers",
                    "a throttled GPU",
                ],
                "Compare this rank's data-wait share, worker CPU and GPU clocks with its peers'.",
                _scope(s),
                ["PrepwatchStragglerRank"],
                score=ratio,
            )
        )
    return out


def _io_evidence(s: RankStats) -> list[Evidence]:
    return [
        Evidence("file opens", s.opens_per_s, "/s"),
        Evidence("bytes per open", s.bytes_per_open, "B"),
        Evidence("open p99", s.open_p99, "s"),
    ]


def _read_evidence(s: RankStats) -> list[Evidence]:
    ev = [
        Evidence("files read", s.reads_per_s, "/s"),
        Evidence("bytes per file", s.bytes_per_read, "B"),
        Evidence("mean open to close per file", s.read_mean_s, "s"),
    ]
    if not math.isnan(s.open_p99):
        ev.append(Evidence("open p99", s.open_p99, "s"))
    return ev


def _input_bound(s: RankStats, c: dict[str, Condition], alerts: list[str], th: Thresholds) -> Finding:
    """Input-bound, split by where the workers' time goes."""
    critical = "PrepwatchInputBoundCritical" in c or "PrepwatchGpuStarvedByInput" in c
    stages = s.stages
    per = s.fetch_per_sample if not math.isnan(s.fetch_per_sample) else sum(stages.values())
    read = stages.get("read", 0.0)
    cpu = stages.get("decode", 0.0) + stages.get("transform", 0.0)
    scores: dict[str, float] = {}
    io_named = s.opens_per_s > 0 and not math.isnan(s.open_p99)
    if per > 0:
        scores["storage"] = read / per
        scores["cpu"] = cpu / per
    if io_named and s.open_p99 > th.storm_p99_s:
        scores["storage"] = max(scores.get("storage", 0.0), 0.6)
    slow_reads = "PrepwatchSmallFileSlowReads" in c
    if slow_reads:
        scores["storage"] = max(scores.get("storage", 0.0), 0.6)
    saturated = not math.isnan(s.worker_cpu) and s.worker_cpu >= WORKER_SATURATED
    spare = (
        not math.isnan(s.host_busy)
        and s.host_busy < 0.7
        and not math.isnan(s.host_cpus)
        and not math.isnan(s.workers)
        and s.host_cpus > s.workers + 1
    )
    if saturated:
        scores["cpu"] = max(scores.get("cpu", 0.0), s.worker_cpu * 0.8)
    if saturated and spare:
        scores["workers"] = scores.get("cpu", 0.0) + 0.05
    # Transfer/collate: the loop waits per step far longer than the workers need per batch.
    batch = s.samples / s.steps if s.steps else 0.0
    if per > 0 and batch and not math.isnan(s.workers) and s.workers > 0 and s.step_p50 > 0:
        worker_time_per_step = per * batch / s.workers
        wait_per_step = s.wait_share * (1 / s.steps_per_s if s.steps_per_s else 0)
        if wait_per_step > 0 and worker_time_per_step < 0.3 * wait_per_step:
            scores["transfer"] = 1 - worker_time_per_step / wait_per_step
    elif per == 0 and s.wait_share > 0:
        scores["transfer"] = 0.5 if math.isnan(s.workers) or s.workers == 0 else 0.2
    names = {
        "storage": ("storage", "reading from storage"),
        "cpu": ("cpu", "decode and augmentation on the workers' CPU"),
        "workers": ("workers", "too few DataLoader workers (the workers are saturated, the host is not)"),
        "transfer": (
            "transfer",
            "collate/transfer between the workers and the loop (or no workers: loading runs in the loop)",
        ),
    }
    ranked = sorted(scores, key=lambda k: -scores[k]) or ["cpu"]
    top = ranked[0]
    if (
        top == "storage"
        and io_named
        and s.opens_per_s >= th.storm_opens
        and s.bytes_per_open < th.storm_bytes
    ):
        detail, key = (
            (
                f"small files: {s.opens_per_s:.0f} opens/s of {format_value(s.bytes_per_open, 'B')}, "
                f"p99 open {format_value(s.open_p99, 's')}"
            ),
            "input_bound.small_files",
        )
        fix = "Shard the dataset into large sequential files (tar shards) or cache it on local disk."
    elif top == "storage" and slow_reads:
        detail, key = (
            (
                f"small files slow to read: {s.reads_per_s:.0f} files/s of "
                f"{format_value(s.bytes_per_read, 'B')}, {format_value(s.read_mean_s, 's')} each "
                f"from open to close"
            ),
            "input_bound.small_files",
        )
        fix = "Shard the dataset into large sequential files (tar shards) or cache it on local disk."
    elif top == "storage":
        detail, key = (
            (f"reading takes {format_value(read, 's')} of the workers' {format_value(per, 's')} per sample"),
            "input_bound.storage",
        )
        fix = "Move the data to faster or local storage, or prefetch more (prefetch_factor, more workers)."
    elif top == "workers":
        detail, key = (
            (
                f"{s.workers:.0f} workers each use {format_value(s.worker_cpu, '%')} of a core while "
                f"the host is {format_value(s.host_busy, '%')} busy"
            ),
            "input_bound.workers",
        )
        fix = f"Raise num_workers (the host has {s.host_cpus:.0f} CPUs)."
    elif top == "cpu":
        detail, key = (
            (
                f"decode+augment take {format_value(cpu, 's')} of the workers' "
                f"{format_value(per, 's')} per sample"
            ),
            "input_bound.cpu",
        )
        fix = "Make augmentation cheaper (GPU augmentation, smaller decode, pre-decoded data) or add workers."
    else:
        detail, key = (
            "the workers are fast; the time is lost between them and the loop",
            "input_bound.transfer",
        )
        fix = "Use pin_memory=True, a larger prefetch_factor, and move collate work out of the loop."
    tier = "Highly input-bound" if critical else "Input-bound"
    ev = _wait_evidence(s)
    if per > 0:
        ev.append(Evidence("worker fetch per sample", per, "s"))
        for stage, v in sorted(stages.items(), key=lambda kv: -kv[1]):
            ev.append(Evidence(f"  stage {stage}", v, "s"))
    if not math.isnan(s.worker_cpu):
        ev.append(Evidence("worker CPU (per worker)", s.worker_cpu, "%"))
    if io_named:
        ev += _io_evidence(s)
    if slow_reads:
        ev += _read_evidence(s)
    return Finding(
        key,
        "critical" if critical else "warning",
        f"{tier}: the loop waits for data {format_value(s.wait_share, '%')} of its step time; {detail}.",
        ev,
        [names[k][1] for k in ranked],
        fix,
        _scope(s),
        sorted(
            set(alerts)
            | {
                a
                for a in (
                    "PrepwatchSmallFileMetadataStorm",
                    "PrepwatchFileOpenLatencyHigh",
                    "PrepwatchSmallFileSlowReads",
                )
                if a in c
            }
        ),
        score=s.wait_share,
    )


def _memory(w: Window) -> list[Finding]:
    """Worker memory growing steadily over the window (copy-on-access, pytorch#13246)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for snap in w.snapshots:
        for d, v in snap.select("prepwatch_process_resident_memory_bytes", role="workers"):
            n = sum(x for _, x in snap.select("prepwatch_processes", role="workers", run=d.get("run", "")))
            if v > 0 and n > 0:
                series.setdefault(d.get("run", ""), []).append((snap.t, v / n))
    out = []
    for run, pts in series.items():
        if len(pts) < 4:
            continue
        first, last = pts[0][1], pts[-1][1]
        steps = [b[1] - a[1] for a, b in zip(pts, pts[1:])]
        rising = sum(1 for d in steps if d > 0) / len(steps)
        growth = last - first
        if (
            growth >= MEMORY_GROWTH_BYTES
            and growth / first >= MEMORY_GROWTH_RATIO
            and rising >= MEMORY_RISING_SHARE
        ):
            minutes = max((pts[-1][0] - pts[0][0]) / 60, 1e-9)
            out.append(
                Finding(
                    "worker_memory",
                    "warning",
                    f"Worker memory grows: {format_value(first, 'B')} -> {format_value(last, 'B')} "
                    f"per worker "
                    f"({format_value(growth / minutes, 'B')}/min).",
                    [
                        Evidence("RSS per worker at start", first, "B"),
                        Evidence("RSS per worker now", last, "B"),
                        Evidence("intervals rising", rising, "%"),
                    ],
                    [
                        "copy-on-access of Python objects (lists/dicts of samples) in forked "
                        "workers, pytorch#13246",
                        "a cache in the Dataset that is never bounded",
                        "a leak in a decode library",
                    ],
                    "Hold the sample index in numpy arrays or tensors instead of Python lists/dicts.",
                    {"run": run},
                    [],
                    score=growth / first,
                )
            )
    return out


def _data_findings(conds: list[Condition]) -> list[Finding]:
    out = []
    for c in conds:
        lab = c.labels
        if c.alert == "PrepwatchRareClassRecallDrop":
            out.append(
                Finding(
                    "rare_recall",
                    "warning",
                    f"Rare class {lab['class']!r} loses recall on {lab['split']} "
                    f"(down {c.value * 100:.0f} points) while accuracy holds: augmentation is hiding it.",
                    [Evidence("recall drop from its best", c.value, "%")],
                    [
                        "an augmentation that erases what defines the rare class (crop, cutout, "
                        "colour jitter)",
                        "label noise on the rare class",
                        "class imbalance growing with resampling",
                    ],
                    "Weaken the augmentation for this class (or exclude it) and compare recall.",
                    dict(lab),
                    [c.alert],
                    score=c.value,
                )
            )
        elif c.alert in ("PrepwatchInputOffContract", "PrepwatchInputOffContractPartial"):
            full = c.alert == "PrepwatchInputOffContract"
            out.append(
                Finding(
                    "off_contract",
                    "critical" if full else "warning",
                    f"Inputs off contract ({lab['kind']}): {format_value(c.value, '%')} of checked batches.",
                    [Evidence(f"batches with {lab['kind']}", c.value, "%")],
                    [
                        f"{lab['kind']}: the serving/eval preprocessing differs from training's",
                        "a changed image decoder or colour order",
                        "a missing or doubled normalization",
                    ],
                    "Apply the exact training transform (same mean/std, scale and channel order) to "
                    "these inputs.",
                    dict(lab),
                    [c.alert],
                    score=c.value,
                )
            )
        elif c.alert == "PrepwatchBoxesMisaligned":
            out.append(
                Finding(
                    "boxes_misaligned",
                    "critical",
                    f"Boxes do not follow the pixels: {format_value(c.value, '%')} of probed "
                    f"transforms misalign them.",
                    [Evidence("misaligned probes", c.value, "%")],
                    [
                        "a geometric transform applied to the image but not the boxes",
                        "a box format mix-up (xywh vs xyxy, normalized vs pixels)",
                        "a flip without a box flip",
                    ],
                    "Run `prepwatch check-transform` on the transform and use a box-aware transform "
                    "(torchvision v2).",
                    dict(lab),
                    [c.alert],
                    score=c.value,
                )
            )
        elif c.alert == "PrepwatchBoxesInvalid":
            out.append(
                Finding(
                    "boxes_invalid",
                    "warning",
                    f"Invalid boxes: {format_value(c.value, '%')} are out of bounds or degenerate.",
                    [Evidence("invalid boxes", c.value, "%")],
                    ["a box format mix-up", "crops that cut boxes without clipping them"],
                    "Clip and filter boxes after geometric transforms (SanitizeBoundingBoxes).",
                    dict(lab),
                    [c.alert],
                    score=c.value,
                )
            )
        elif c.alert == "PrepwatchClipAugmentationInconsistent":
            out.append(
                Finding(
                    "clips_inconsistent",
                    "warning",
                    f"Video clips are augmented frame by frame: {format_value(c.value, '%')} of "
                    f"clips inconsistent.",
                    [Evidence("inconsistent clips", c.value, "%")],
                    [
                        "a per-image transform applied to each frame with its own random parameters",
                        "colour jitter sampled per frame",
                    ],
                    "Sample augmentation parameters once per clip (a video-aware transform) and "
                    "apply them to every frame.",
                    dict(lab),
                    [c.alert],
                    score=c.value,
                )
            )
    return out


def _class_gaps(w: Window, conds: list[Condition]) -> list[Finding]:
    """The early warning before a rare class' clean recall falls: augmentation hides it in
    training far more than it hides the other classes."""
    held = {
        (c.labels["run"], c.labels["split"], c.labels["class"])
        for c in conds
        if c.alert == "PrepwatchRareClassAugmentationGap"
    }
    out = []
    for g in class_gaps(w):
        if (g.run, g.split, g.cls) not in held:
            continue
        out.append(
            Finding(
                "rare_augmentation_gap",
                "info",
                f"Rare class {g.cls!r} is recognized {g.excess * 100:.0f} points worse on augmented "
                f"training batches than on clean {g.split} data, beyond the same gap of overall "
                f"accuracy: augmentation hides it (early warning).",
                [
                    Evidence("gap beyond overall accuracy's", g.excess, "%"),
                    Evidence(f"clean {g.split} recall (recent passes pooled)", g.eval_recall, "%"),
                    Evidence("augmented training recall", g.train_recall, "%"),
                    Evidence("pooled evaluation samples", g.samples, "count"),
                ],
                [
                    "a crop or cutout larger than the class' objects",
                    "mixing (mixup, cutmix, mosaic) that buries a small or rare class",
                    "colour or blur augmentation that erases what defines it",
                ],
                "Weaken the augmentation for this class (or exclude it) before its clean recall "
                "falls, and watch its train vs eval recall.",
                {"run": g.run, "split": g.split, "class": g.cls},
                ["PrepwatchRareClassAugmentationGap"],
                score=g.excess,
            )
        )
    return out
