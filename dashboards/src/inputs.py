"""prepwatch / Inputs (normalization contract)"""

from __future__ import annotations

from .grafana import (
    CONNECTED,
    DASHED,
    STACKED,
    Dashboard,
    Row,
    q,
    runbook,
    stat,
    table,
    thresholds,
    timeseries,
)

RUNBOOK = "inputs"  # docs/runbooks/inputs.md

OFF_CONTRACT = [runbook(RUNBOOK, "PrepwatchInputOffContract"),
                runbook(RUNBOOK, "PrepwatchInputOffContractPartial")]

ROWS = [
    Row("Is what the model receives what it was trained on?", [
        stat(
            "Off-contract share", "percentunit",
            ("Share of checked batches that broke the input contract (any kind), per rank, over the rate "
             "interval. Critical above 50%, warning above 1% (see alerts/normalization.rules.yml)."),
            [q(("sum by (run, rank) "
                "(rate(prepwatch_input_batches_off_contract_total{SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) "
                "(rate(prepwatch_input_batches_checked_total{SEL}[$__rate_interval]))"), "{{run}}/{{rank}}")],
            w=6,
            defaults={"thresholds": thresholds("green", (0.01, "orange"), (0.5, "red")), "min": 0, "max": 1},
            links=OFF_CONTRACT,
        ),
        timeseries(
            "Violations by kind", "short",
            ("Checked batches flagged per likely cause (batches per rate interval). Kinds: scale_255 "
             "(/255 forgotten), double_scaled (/255 or normalization twice), range ([0,1] / [-1,1] / "
             "[0,255] / other mean-std), channel_order (RGB/BGR), per_image (each image scaled on its "
             "own), dtype, layout. Every kind is exported from the start at 0."),
            [q(("sum by (kind) "
                "(increase(prepwatch_input_contract_violations_total{SEL}[$__rate_interval]))"), "{{kind}}")],
            w=12,
            custom={**STACKED, "fillOpacity": 60},
            defaults={"min": 0, "decimals": 0},
            links=OFF_CONTRACT,
        ),
        stat(
            "Batches checked", "suffix: batch/s",
            "Batches the guard checked per second, per rank (serving, or eval batches in the demo).",
            [q("sum by (run, rank) (rate(prepwatch_input_batches_checked_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=6, h=4, defaults={"thresholds": thresholds("green"), "decimals": 2},
        ),
        stat(
            "Channel order verifiable", "none",
            ("Whether the contract's channels differ enough to call an RGB/BGR swap. 'ambiguous': most "
             "training images look the same swapped (grey-ish or mixed colour content), so the guard "
             "never names channel_order and says 'ambiguous' instead of guessing."),
            [q("max by (run, rank) (prepwatch_input_channel_order_verifiable{SEL})", "{{run}}/{{rank}}")],
            w=6, h=4,
            defaults={"thresholds": thresholds("orange", (1, "green")),
                      "mappings": [{"type": "value",
                                    "options": {"0": {"text": "ambiguous", "index": 0},
                                                "1": {"text": "verifiable", "index": 1}}}]},
        ),
    ]),
    Row("Train vs serve channel statistics (model-input units)", [
        timeseries(
            "Channel mean: train vs serve", "none",
            ("Per-channel mean of the tensor the model receives. train: recorded training batches "
             "(smoothed over ~10), or the contract's values in a serving process; serve (dashed): checked "
             "batches, smoothed over ~10. On contract they overlap; a scale or range mistake pulls serve "
             "away in every channel, a channel swap makes the first and last channels trade places."),
            [q("avg by (stage, channel) (prepwatch_input_channel_mean{SEL})", "{{stage}} {{channel}}")],
            w=12,
            custom=CONNECTED,
            overrides=[{"matcher": {"id": "byRegexp", "options": "serve.*"},
                        "properties": [DASHED]}],
        ),
        timeseries(
            "Channel std: train vs serve", "none",
            ("Per-channel standard deviation of the model input, train vs serve (dashed). A forgotten "
             "/255 multiplies it by ~255, /255 twice divides it; per-image standardization pins it to 1."),
            [q("avg by (stage, channel) (prepwatch_input_channel_std{SEL})", "{{stage}} {{channel}}")],
            w=12,
            custom=CONNECTED,
            overrides=[{"matcher": {"id": "byRegexp", "options": "serve.*"},
                        "properties": [DASHED]}],
        ),
        timeseries(
            "Serve mean minus train mean, in train std", "none",
            ("(serve mean - train mean) / train std per channel, in the same process (demo eval, or a "
             "server with a contract loaded). Within about +-1 the served batches sit inside the training "
             "spread."),
            [q(("avg by (channel) (\n"
                '  (prepwatch_input_channel_mean{stage="serve", SEL}\n'
                '    - ignoring (stage) prepwatch_input_channel_mean{stage="train", SEL})\n'
                '  / ignoring (stage) prepwatch_input_channel_std{stage="train", SEL})'), "{{channel}}")],
            w=12,
            custom=CONNECTED,
        ),
        timeseries(
            "Channel min / max: train vs serve", "none",
            ("Smallest and largest value per channel in the last recorded (train) or checked (serve, "
             "dashed) batch, model-input units. The contract's range is the recorded training range; "
             "values far outside it are named range, scale_255 or double_scaled by the guard."),
            [q("min by (stage, channel) (prepwatch_input_channel_min{SEL})", "{{stage}} min {{channel}}"),
             q("max by (stage, channel) (prepwatch_input_channel_max{SEL})", "{{stage}} max {{channel}}")],
            w=12,
            custom=CONNECTED,
            overrides=[{"matcher": {"id": "byRegexp", "options": "serve.*"},
                        "properties": [DASHED]}],
        ),
    ]),
    Row("Contract and guard cost", [
        table(
            "Contract in force", "none",
            ("The input contract each process guards against: layout, dtype, and whether its "
             "normalization was declared (Declared / torchvision Normalize) or inferred from the recorded "
             "range."),
            [q("max by (run, rank, source, layout, dtype) (prepwatch_input_contract_info{SEL})",
               instant=True, fmt="table")],
            w=8, h=7,
            transformations=[{"id": "organize",
                              "options": {"excludeByName": {"Time": True, "Value": True}}}],
        ),
        timeseries(
            "Guard time per checked batch", "s",
            ("p50 and p99 of the time guard() took per checked batch (prepwatch_input_check_seconds). The "
             "guard reads a strided grid of ~4,096 pixels per channel per image; on a 64x3x224x224 batch "
             "it is ~0.5% of a ResNet-18 forward on CPU (bench/bench_normalization.py)."),
            [q(("histogram_quantile(0.5, sum by (le) "
                "(rate(prepwatch_input_check_seconds_bucket{SEL}[$__rate_interval])))"), "p50"),
             q(("histogram_quantile(0.99, sum by (le) "
                "(rate(prepwatch_input_check_seconds_bucket{SEL}[$__rate_interval])))"), "p99")],
            w=8, h=7,
            custom=CONNECTED,
        ),
        timeseries(
            "Training batches recorded", "suffix: batch/s",
            ("Training batches reduced into the contract per second (one in sample_every is recorded, off "
             "the loop)."),
            [q("sum by (run, rank) (rate(prepwatch_input_batches_recorded_total{SEL}[$__rate_interval]))",
               "{{run}}/{{rank}}")],
            w=8, h=7,
            custom=CONNECTED,
        ),
    ]),
]


DASHBOARD = Dashboard(
    slug="inputs",
    title="prepwatch / Inputs (normalization contract)",
    description=("prepwatch: does the model receive the input it was trained on? Input contract "
                 "violations by kind, train vs serve channel statistics side by side, guard cost."),
    tags=["inputs"],
    metric="prepwatch_input_batches_checked_total",
    rows=ROWS,
    runbook_page=RUNBOOK,
    runbook_title="normalization alerts",
)
