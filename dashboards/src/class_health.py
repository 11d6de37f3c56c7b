"""prepwatch / Class health"""

from __future__ import annotations

from functools import partial

from .grafana import (
    CONNECTED,
    DASHED,
    LEGEND_TABLE,
    Dashboard,
    Row,
    bargauge,
    q,
    query_var,
    runbook,
    stat,
    table,
    thresholds,
    timeseries,
)

RUNBOOK = "class_health"  # docs/runbooks/class_health.md

# Recall moves once per evaluation pass: thicker lines with points; legends show the best value.
lines = partial(timeseries, legend={**LEGEND_TABLE, "legend": {**LEGEND_TABLE["legend"],
                                                               "calcs": ["lastNotNull", "max"]}})
RECALL_LINES = {**CONNECTED, "lineWidth": 2, "fillOpacity": 0, "showPoints": "auto"}

ROWS = [
    Row("Is augmentation costing a class its recall?", [
        lines(
            "Rare-class recall vs overall accuracy (clean eval)", "percentunit",
            ("Recall of each rare class (prepwatch_class_rare == 1) on clean evaluation data, last "
             "completed pass, against overall accuracy of the same pass. When no class is rare, the 3 "
             "classes with the lowest recall are shown instead. Right axis: augmentation settings the job "
             "reported (report_augmentation). Over-augmentation looks like a rare class falling while "
             "accuracy and augmentation strength rise."),
            [q(('avg by (run, split) (prepwatch_accuracy_ratio{SEL, split=~"$eval_split"} and on (run, '
                "rank, split) prepwatch_eval_rounds_total)"), "accuracy {{split}}"),
             q(('(avg by (run, split, class) (prepwatch_class_recall_ratio{SEL, split=~"$eval_split"} and '
                "on (run, rank, split) prepwatch_eval_rounds_total) and on (run, class) (max by (run, "
                "class) (prepwatch_class_rare{SEL}) == 1))\n"
                "or on ()\n"
                "bottomk(3, avg by (run, split, class) (prepwatch_class_recall_ratio{SEL, "
                'split=~"$eval_split"} and on (run, rank, split) prepwatch_eval_rounds_total))'),
               "{{class}} recall"),
             q("max by (run, name) (prepwatch_augmentation_param{SEL})", "aug {{name}}")],
            w=16, h=10,
            custom=RECALL_LINES,
            defaults={"min": 0, "max": 1},
            overrides=[{"matcher": {"id": "byFrameRefID", "options": "C"},
                        "properties": [{"id": "unit", "value": "short"},
                                       {"id": "custom.axisPlacement", "value": "right"},
                                       DASHED,
                                       {"id": "min", "value": None}, {"id": "max", "value": None}]}],
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        bargauge(
            "Worst classes now (clean eval)", "percentunit",
            "The 8 classes with the lowest recall in the last completed evaluation pass.",
            [q(("bottomk(8, avg by (run, split, class) (prepwatch_class_recall_ratio{SEL, "
                'split=~"$eval_split"} and on (run, rank, split) prepwatch_eval_rounds_total))'),
               "{{class}}", instant=True)],
            w=8, h=10, display="gradient",
            defaults={"min": 0, "max": 1, "thresholds": thresholds("red", (0.5, "orange"), (0.8, "green"))},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
    ]),
    Row("Per class", [
        table(
            "Per-class recall: clean eval vs augmented train", "percentunit",
            ("Per class: recall on clean evaluation data (last pass), recall on the augmented training "
             "stream (last window_seconds), their gap, its share of the training labels, and whether it "
             "is rare. A class whose train recall is far below its eval recall is being damaged by "
             "augmentation; one whose eval recall is low while train is high is learned only in its "
             "augmented form."),
            [q(('avg by (class) (prepwatch_class_recall_ratio{SEL, split=~"$eval_split"} and on (run, '
                "rank, split) prepwatch_eval_rounds_total)"), instant=True, fmt="table"),
             q(("avg by (class) (prepwatch_class_recall_ratio{SEL} unless on (run, rank, split) "
                "prepwatch_eval_rounds_total)"), instant=True, fmt="table"),
             q(("sum by (class) (prepwatch_class_samples_total{SEL} unless on (run, rank, split) "
                "prepwatch_eval_rounds_total)\n"
                "  / ignoring (class) group_left sum (prepwatch_class_samples_total{SEL} unless on (run, "
                "rank, split) prepwatch_eval_rounds_total)"), instant=True, fmt="table"),
             q("max by (class) (prepwatch_class_rare{SEL})", instant=True, fmt="table")],
            w=14, h=12,
            options={"showHeader": True, "sortBy": [{"displayName": "eval recall", "desc": False}]},
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize",
                              "options": {"excludeByName": {"Time": True},
                                          "renameByName": {"class": "class",
                                                           "Value #A": "eval recall",
                                                           "Value #B": "train recall",
                                                           "Value #C": "train label share",
                                                           "Value #D": "rare"}}}],
            defaults={"custom": {"align": "auto"}},
            overrides=[{"matcher": {"id": "byName", "options": "rare"},
                        "properties": [{"id": "unit", "value": "bool_yes_no"}]},
                       {"matcher": {"id": "byName", "options": "eval recall"},
                        "properties": [{"id": "custom.cellOptions",
                                        "value": {"type": "color-background"}},
                                       {"id": "thresholds",
                                        "value": {"mode": "absolute",
                                                  "steps": [{"color": "red", "value": None},
                                                            {"color": "orange", "value": 0.5},
                                                            {"color": "green", "value": 0.8}]}}]}],
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        bargauge(
            "Train (augmented) minus eval (clean) recall", "percentunit",
            ("Per class, recall on the augmented training stream minus recall on clean evaluation data. "
             "Negative: the augmented samples are harder than the clean ones (augmentation destroys what "
             "identifies the class); strongly positive: clean data looks unlike what the model trained on."),
            [q(("sort(avg by (class) (prepwatch_class_recall_ratio{SEL} unless on (run, rank, split) "
                "prepwatch_eval_rounds_total) - on (class) avg by (class) "
                '(prepwatch_class_recall_ratio{SEL, split=~"$eval_split"} and on (run, rank, split) '
                "prepwatch_eval_rounds_total))"), "{{class}}", instant=True)],
            w=10, h=12, defaults={"min": -1, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
    ]),
    Row("Evaluation and augmentation", [
        lines(
            "Per-class recall over time (clean eval)", "percentunit",
            "Every class' recall in each evaluation pass (the gauge holds between passes).",
            [q(('avg by (run, split, class) (prepwatch_class_recall_ratio{SEL, split=~"$eval_split"} and '
                "on (run, rank, split) prepwatch_eval_rounds_total)"), "{{class}}")],
            w=12, h=9,
            custom=RECALL_LINES,
            defaults={"min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        lines(
            "Augmentation settings", "short",
            ("Named augmentation settings as the job reported them with watch.report_augmentation(...): "
             "read a recall drop against a change of strength."),
            [q("max by (run, name) (prepwatch_augmentation_param{SEL})", "{{name}}")],
            w=12, h=9,
            custom={"drawStyle": "line",
                    "lineWidth": 2,
                    "lineInterpolation": "stepAfter",
                    "spanNulls": True},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        stat(
            "Accuracy (eval: clean, train: augmented)", "percentunit",
            ("Overall accuracy per split: the last evaluation pass for evaluation splits, the last window "
             "for training."),
            [q("avg by (split) (prepwatch_accuracy_ratio{SEL})", "{{split}}", instant=True)],
            w=6, h=6,
            style={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value",
                   "graphMode": "none",
                   "textMode": "value_and_name"},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        stat(
            "Rare classes", "short",
            ("Classes marked rare: training label share below half the uniform share (default), or named "
             "by the user."),
            [q("sum(max by (run, class) (prepwatch_class_rare{SEL}))", "rare", instant=True)],
            w=3, h=6,
            style={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "none",
                   "graphMode": "none"},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        stat(
            "Since last evaluation", "s",
            "Time since the last evaluation pass completed (prepwatch_eval_last_timestamp_seconds).",
            [q("time() - max by (split) (prepwatch_eval_last_timestamp_seconds{SEL})", "{{split}}",
               instant=True)],
            w=4, h=6,
            style={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "none",
                   "graphMode": "none",
                   "textMode": "value_and_name"},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        stat(
            "Evaluation passes", "short",
            "Completed evaluation passes per split.",
            [q("max by (split) (prepwatch_eval_rounds_total{SEL})", "{{split}}", instant=True)],
            w=3, h=6,
            style={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "none",
                   "graphMode": "none",
                   "textMode": "value_and_name"},
            links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
        lines(
            "Counted samples and skipped targets", "cps",
            ("Samples counted per second by split, and targets skipped (ignore_index, or outside [0, "
             "num_classes): should be 0)."),
            [q("sum by (split) (rate(prepwatch_class_samples_total{SEL}[$__rate_interval]))", "{{split}}"),
             q("sum by (split, reason) (rate(prepwatch_class_skipped_total{SEL}[$__rate_interval]))",
               "skipped {{split}} {{reason}}")],
            w=8, h=6, custom={"drawStyle": "line", "lineWidth": 1, "spanNulls": True},
            defaults={"min": 0}, links=[runbook(RUNBOOK, "PrepwatchRareClassRecallDrop")],
        ),
    ]),
]


DASHBOARD = Dashboard(
    slug="class-health",
    title="prepwatch / Class health",
    description=("prepwatch: per-class recall on clean evaluation data and on the augmented training "
                 "stream, rare classes, and the augmentation settings the job reported. Catches "
                 "over-augmentation: a rare class losing recall while overall accuracy rises."),
    tags=["class-health"],
    metric="prepwatch_class_samples_total",
    rows=ROWS,
    instance=False,
    # the node agent sums class series over a node's ranks (docs/distributed.md): one set per
    # run and node, so there is no rank to pick
    rank=False,
    extra_variables=[query_var("eval_split", "Evaluation split",
                               'label_values(prepwatch_eval_rounds_total{run=~"$run"}, split)')],
    runbook_page=RUNBOOK,
    runbook_title="class health alerts",
)
