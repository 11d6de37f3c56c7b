"""prepwatch / Input pipeline"""

from __future__ import annotations

from functools import partial

from .grafana import (
    LEGEND_LIST,
    LINES,
    STAT_SPARK,
    Dashboard,
    Row,
    heatmap,
    q,
    query_var,
    rank_heatmap,
    runbook,
    stat,
    thresholds,
    timeseries,
)

# Narrow panels, few series each: legends as a list under the graph.
lines = partial(timeseries, legend=LEGEND_LIST)
spark = partial(stat, style=STAT_SPARK)  # stats with their sparkline
THRESHOLD_LINES = {**LINES, "thresholdsStyle": {"mode": "dashed"}}  # the alert's thresholds drawn

RUNBOOK = "input_pipeline"  # docs/runbooks/input_pipeline.md

ROWS = [
    Row("Is the accelerator fed?", [
        lines(
            "GPU busy vs data-wait share", "percentunit",
            ("GPU busy: share of time a kernel ran (rate of prepwatch_gpu_busy_seconds_total, node "
             "agent). Data-wait share: share of step time the loop blocked in next() for a batch. Starved "
             "input shows as GPU busy falling while the wait share rises. Needs a GPU for the busy line."),
            [q(('avg by (instance) (rate(prepwatch_gpu_busy_seconds_total{instance=~"$instance", '
                'gpu=~"$gpu"}[$__rate_interval]))'), "GPU busy {{instance}}"),
             q(("sum by (run, rank) (rate(prepwatch_data_wait_seconds_sum{SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) (rate(prepwatch_step_duration_seconds_sum{SEL}[$__rate_interval]))"),
               "data wait {{run}}/{{rank}}")],
            w=12,
            custom=THRESHOLD_LINES,
            defaults={"min": 0, "max": 1, "thresholds": thresholds("green", (0.1, "orange"), (0.2, "red"))},
            links=[runbook(RUNBOOK, "PrepwatchGpuStarvedByInput"),
                   runbook(RUNBOOK, "PrepwatchInputBoundWarning")],
        ),
        spark(
            "Data-wait share", "percentunit",
            ("Share of step time spent waiting for the next batch, per rank. Warning above 10%, critical "
             "above 20% (see the rule file's Thresholds table)."),
            [q(("sum by (run, rank) (rate(prepwatch_data_wait_seconds_sum{SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) (rate(prepwatch_step_duration_seconds_sum{SEL}[$__rate_interval]))"),
               "{{run}}/{{rank}}")],
            w=4,
            defaults={"min": 0, "max": 1, "thresholds": thresholds("green", (0.1, "orange"), (0.2, "red"))},
            links=[runbook(RUNBOOK, "PrepwatchInputBoundWarning"),
                   runbook(RUNBOOK, "PrepwatchInputBoundCritical")],
        ),
        lines(
            "Throughput", "suffix: samples/s",
            "Samples per second consumed by the training loop, per rank.",
            [q("sum by (run, rank) (rate(prepwatch_samples_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=8,
        ),
    ]),
    Row("Step time", [
        lines(
            "Step time p50 / p99 and data wait p99", "s",
            ("From the step-period and data-wait histograms over the rate interval. A p99 that follows "
             "the data-wait p99 is a tail caused by input."),
            [q(("histogram_quantile(0.5, sum by (run, rank, le) "
                "(rate(prepwatch_step_duration_seconds_bucket{SEL}[$__rate_interval])))"),
               "step p50 {{run}}/{{rank}}"),
             q(("histogram_quantile(0.99, sum by (run, rank, le) "
                "(rate(prepwatch_step_duration_seconds_bucket{SEL}[$__rate_interval])))"),
               "step p99 {{run}}/{{rank}}"),
             q(("histogram_quantile(0.99, sum by (run, rank, le) "
                "(rate(prepwatch_data_wait_seconds_bucket{SEL}[$__rate_interval])))"),
               "data wait p99 {{run}}/{{rank}}")],
            w=9, links=[runbook(RUNBOOK, "PrepwatchStepTimeUnstable")],
        ),
        lines(
            "Step time spread (p99 / p50)", "suffix:×",
            ("Histogram p99 over p50 (alert above 3 over 10 minutes), and the same from the process' "
             "exact rolling window of the last 512 steps."),
            [q(("histogram_quantile(0.99, sum by (run, rank, le) "
                "(rate(prepwatch_step_duration_seconds_bucket{SEL}[$__rate_interval])))\n"
                "  / histogram_quantile(0.5, sum by (run, rank, le) "
                "(rate(prepwatch_step_duration_seconds_bucket{SEL}[$__rate_interval])))"),
               "histogram {{run}}/{{rank}}"),
             q(("max by (run, rank) (prepwatch_step_duration_p99_seconds{SEL})\n"
                "  / max by (run, rank) (prepwatch_step_duration_p50_seconds{SEL})"),
               "last 512 steps {{run}}/{{rank}}")],
            w=6,
            custom=THRESHOLD_LINES,
            defaults={"min": 1, "thresholds": thresholds("green", (3, "orange"))},
            links=[runbook(RUNBOOK, "PrepwatchStepTimeUnstable")],
        ),
        spark(
            "Step time CV", "percentunit",
            "Coefficient of variation (std/mean) of the last 512 step periods.",
            [q("max by (run, rank) (prepwatch_step_duration_cv{SEL})", "{{run}}/{{rank}}")],
            w=3,
        ),
        spark(
            "Since last step", "s",
            ("Seconds since the loop last received a batch, or, before the first batch of a run, since it "
             "asked for one (alert above 600 s while the target is up)."),
            [q(("(time() - max by (run, rank) (prepwatch_last_step_timestamp_seconds{SEL})) or (time() - "
                "max by (run, rank) (prepwatch_first_batch_wait_started_timestamp_seconds{SEL}))"),
               "{{run}}/{{rank}}")],
            w=3,
            defaults={"thresholds": thresholds("green", (120, "orange"), (600, "red"))},
            links=[runbook(RUNBOOK, "PrepwatchTrainingStalled")],
        ),
        spark(
            "Time to first batch", "s",
            ("Wait for the first batch of each pass over a loader (worker start-up, cache warm-up): mean "
             "and worst over the job so far."),
            [q(("sum by (run, rank) (prepwatch_first_batch_wait_seconds_sum{SEL})\n"
                "  / sum by (run, rank) (prepwatch_first_batch_wait_seconds_count{SEL})"),
               "mean {{run}}/{{rank}}"),
             q(("histogram_quantile(1, sum by (run, rank, le) "
                "(prepwatch_first_batch_wait_seconds_bucket{SEL}))"),
               "worst (bucket bound) {{run}}/{{rank}}")],
            w=3,
        ),
        lines(
            "Step time p50 per rank", "s",
            ("Median step period per rank; a straggler stands above the others of its run (alert at twice "
             "the run's median, 3+ ranks)."),
            [q(("histogram_quantile(0.5, sum by (run, rank, le) "
                "(rate(prepwatch_step_duration_seconds_bucket{SEL}[$__rate_interval])))"),
               "{{run}}/{{rank}}")],
            w=12, links=[runbook(RUNBOOK, "PrepwatchStragglerRank")],
        ),
        lines(
            "Steps per second", "suffix: steps/s",
            "Batches handed to the loop per second, per rank.",
            [q("sum by (run, rank) (rate(prepwatch_steps_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=12,
        ),
    ]),
    Row("Ranks (synchronous data-parallel: who makes the others wait)", [
        rank_heatmap(
            "Data-wait share by rank", "percentunit",
            ("Share of each rank's step spent waiting for its next batch (5 m), one row per rank. In a "
             "synchronous job every rank's step is the slowest rank's, so the input straggler is the one "
             "bright row; see PrepwatchInputStragglerRank."),
            [q(('run_rank:prepwatch_data_wait_seconds:per_step_rate5m{SEL}\n'
                '  / run_rank:prepwatch_step_duration_seconds:mean_rate5m{SEL}'), "{{rank}}")],
            w=12, h=9,
            links=[runbook("distributed", "PrepwatchInputStragglerRank")],
        ),
        rank_heatmap(
            "Collective-wait share by rank", "percentunit",
            ("Share of each rank's step spent waiting in gradient all-reduces (watch.ddp(model)), one row "
             "per rank. The compute straggler is the dark row among bright ones: it waits least because the "
             "others wait for it; see PrepwatchComputeStragglerRank."),
            [q(('run_rank:prepwatch_collective_wait_seconds:per_step_rate5m{SEL}\n'
                '  / run_rank:prepwatch_step_duration_seconds:mean_rate5m{SEL}'), "{{rank}}")],
            w=12, h=9,
            links=[runbook("distributed", "PrepwatchComputeStragglerRank")],
        ),
    ]),
    Row("DataLoader workers", [
        heatmap(
            "Worker fetch latency per sample", "s",
            "Per-sample time inside DataLoader workers (stage=total), as a heatmap of the histogram.",
            [q(("sum by (le) (rate(prepwatch_sample_fetch_seconds_bucket{SEL, "
                'stage="total"}[$__rate_interval]))'), "{{le}}", fmt="heatmap")],
            w=12, links=[runbook(RUNBOOK, "PrepwatchInputBoundWarning")],
        ),
        lines(
            "Worker time per sample by stage", "s",
            "Mean per-sample time in workers for each stage (read, decode, transform, other, total).",
            [q(("sum by (stage) (rate(prepwatch_sample_fetch_seconds_sum{SEL}[$__rate_interval]))\n"
                "  / sum by (stage) (rate(prepwatch_sample_fetch_seconds_count{SEL}[$__rate_interval]))"),
               "{{stage}}")],
            w=6,
        ),
        spark(
            "DataLoader workers", "short",
            "num_workers of the wrapped DataLoader (0 = loading in the training process).",
            [q("max by (run, rank) (prepwatch_dataloader_workers{SEL})", "{{run}}/{{rank}}")],
            w=6,
        ),
        lines(
            "CPU by role", "suffix: cores",
            ("CPU cores used by the training processes (main) and their DataLoader workers. Workers near "
             "their core budget with a high data-wait share: CPU-bound input."),
            [q(("sum by (instance, role) "
                '(rate(prepwatch_process_cpu_seconds_total{instance=~"$instance"}[$__rate_interval]))'),
               "{{role}} {{instance}}")],
            w=12,
        ),
        lines(
            "Resident memory by role", "bytes",
            "Resident memory of the training processes and their workers.",
            [q('sum by (instance, role) (prepwatch_process_resident_memory_bytes{instance=~"$instance"})',
               "{{role}} {{instance}}")],
            w=12,
        ),
    ]),
    Row("Storage IO (dataset file opens)", [
        lines(
            "File open latency p50 / p99", "s",
            "Latency of file opens made by dataset code (opt-in IO instrumentation).",
            [q(("histogram_quantile(0.5, sum by (run, rank, le) "
                "(rate(prepwatch_file_open_seconds_bucket{SEL}[$__rate_interval])))"),
               "p50 {{run}}/{{rank}}"),
             q(("histogram_quantile(0.99, sum by (run, rank, le) "
                "(rate(prepwatch_file_open_seconds_bucket{SEL}[$__rate_interval])))"),
               "p99 {{run}}/{{rank}}")],
            w=6,
            custom=THRESHOLD_LINES,
            defaults={"thresholds": thresholds("green", (0.02, "orange"), (0.1, "red"))},
            links=[runbook(RUNBOOK, "PrepwatchFileOpenLatencyHigh")],
        ),
        lines(
            "Opens per second", "ops",
            "File opens per second by dataset code.",
            [q("sum by (run, rank) (rate(prepwatch_file_opens_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=6, links=[runbook(RUNBOOK, "PrepwatchSmallFileMetadataStorm")],
        ),
        lines(
            "Bytes per open", "bytes",
            ("Mean bytes read per file opened: small values with many opens/s mean a small-file dataset "
             "whose cost is metadata, not bandwidth."),
            [q(("sum by (run, rank) (rate(prepwatch_read_bytes_total{SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) (rate(prepwatch_file_opens_total{SEL}[$__rate_interval]))"),
               "{{run}}/{{rank}}")],
            w=6, links=[runbook(RUNBOOK, "PrepwatchSmallFileMetadataStorm")],
        ),
        lines(
            "Read throughput", "Bps",
            "Bytes per second read through instrumented dataset files.",
            [q("sum by (run, rank) (rate(prepwatch_read_bytes_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=6,
        ),
        lines(
            "Time per file, open to close, p50 / p99", "s",
            ("Wall time from open to close of each file dataset code read (opt-in IO instrumentation): "
             "where slow storage or a cold cache shows when opens are fast and the cost is in the reads. "
             "Many files per second, small, each slow: PrepwatchSmallFileSlowReads."),
            [q(("histogram_quantile(0.5, sum by (run, rank, le) "
                "(rate(prepwatch_file_read_seconds_bucket{SEL}[$__rate_interval])))"),
               "p50 {{run}}/{{rank}}"),
             q(("histogram_quantile(0.99, sum by (run, rank, le) "
                "(rate(prepwatch_file_read_seconds_bucket{SEL}[$__rate_interval])))"),
               "p99 {{run}}/{{rank}}")],
            w=12, links=[runbook(RUNBOOK, "PrepwatchSmallFileSlowReads")],
        ),
        lines(
            "Bytes per file read", "bytes",
            "Mean bytes read from each file between its open and its close.",
            [q(("sum by (run, rank) (rate(prepwatch_file_read_bytes_sum{SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) (rate(prepwatch_file_read_bytes_count{SEL}[$__rate_interval]))"),
               "{{run}}/{{rank}}")],
            w=12, links=[runbook(RUNBOOK, "PrepwatchSmallFileSlowReads")],
        ),
    ]),
    Row("GPU (node agent, NVML)", [
        lines(
            "GPU busy per GPU", "percentunit",
            ("Share of time each GPU had a kernel running, from NVML's sample buffer (not one point per "
             "scrape). Empty without an NVIDIA driver: see prepwatch_gpu_available."),
            [q(('rate(prepwatch_gpu_busy_seconds_total{instance=~"$instance", '
                'gpu=~"$gpu"}[$__rate_interval])'), "GPU {{gpu}} {{instance}}")],
            w=12, defaults={"min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchGpuStarvedByInput")],
        ),
        lines(
            "GPU memory used", "bytes",
            "Device memory in use and the device's total, per GPU.",
            [q(('max by (instance, gpu) (prepwatch_gpu_memory_used_bytes{instance=~"$instance", '
                'gpu=~"$gpu"})'), "used GPU {{gpu}} {{instance}}"),
             q(('max by (instance, gpu) (prepwatch_gpu_memory_total_bytes{instance=~"$instance", '
                'gpu=~"$gpu"})'), "total GPU {{gpu}} {{instance}}")],
            w=12, defaults={"min": 0},
        ),
    ]),
    Row("Targets", [
        spark(
            "Ranks up", "short",
            "1 while a rank answers its node agent, 0 once it vanished without a clean shutdown.",
            [q("max by (instance, run, rank) (prepwatch_rank_up{SEL})", "{{run}}/{{rank}} {{instance}}")],
            w=12, defaults={"thresholds": thresholds("red", (1, "green"))},
            links=[runbook(RUNBOOK, "PrepwatchRankLost")],
        ),
        spark(
            "Scrape targets up", "short",
            "Prometheus' own view: 1 when the endpoint answered the last scrape.",
            [q('max by (job, instance) (up{job=~".*prepwatch.*", instance=~"$instance"})',
               "{{job}} {{instance}}")],
            w=6, defaults={"thresholds": thresholds("red", (1, "green"))},
            links=[runbook(RUNBOOK, "PrepwatchTargetDown")],
        ),
        spark(
            "prepwatch internal errors", "short",
            ("Faults inside prepwatch that were survived (the job went on), by component, over the rate "
             "interval. Each kind is logged once by the process."),
            [q("sum by (component) (increase(prepwatch_internal_errors_total{SEL}[$__rate_interval]))",
               "{{component}}")],
            w=6, defaults={"thresholds": thresholds("green", (1, "orange"))},
        ),
    ]),
]


DASHBOARD = Dashboard(
    slug="input-pipeline",
    title="prepwatch / Input pipeline",
    description=("prepwatch: is the accelerator fed? Data-wait share, GPU busy, step time, workers, "
                 "storage IO."),
    tags=["input-pipeline"],
    metric="prepwatch_steps_total",
    rows=ROWS,
    extra_variables=[query_var("gpu", "GPU",
                               'label_values(prepwatch_gpu_busy_seconds_total{instance=~"$instance"}, gpu)',
                               sort=3)],
    runbook_page=RUNBOOK,
    runbook_title="input pipeline alerts",
)
