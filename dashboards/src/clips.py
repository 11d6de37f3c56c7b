"""prepwatch / Clips: is a video clip's photometric augmentation the same in every frame?"""

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
    thresholds,
    timeseries,
)

RUNBOOK = "clips"  # docs/runbooks/clips.md

ROWS = [
    Row("Video clips: is the photometric augmentation the same in every frame?", [
        timeseries(
            "Clip jitter", "percentunit",
            ("Per-clip frame-to-frame variation of the photometric change (augmented vs raw, frame by "
             "frame, so changes of the content itself cancel), relative to the signal: median and 95th "
             "percentile by source (probe: generated clips through the clip transform; stream: clips "
             "observed in the loop), with the threshold. Consistent augmentation sits near 0."),
            [q(("histogram_quantile(0.5, sum by (le, source) "
                "(rate(prepwatch_clip_photometric_jitter_bucket{SEL}[$__rate_interval])))"),
               "median {{source}}"),
             q(("histogram_quantile(0.95, sum by (le, source) "
                "(rate(prepwatch_clip_photometric_jitter_bucket{SEL}[$__rate_interval])))"),
               "p95 {{source}}"),
             q("max(prepwatch_clip_jitter_threshold{SEL})", "threshold")],
            w=12,
            custom=CONNECTED,
            defaults={"min": 0},
            overrides=[{"matcher": {"id": "byName", "options": "threshold"},
                        "properties": [DASHED,
                                       {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}],
            links=[runbook(RUNBOOK, "PrepwatchClipAugmentationInconsistent")],
        ),
        stat(
            "Inconsistent clip share", "percentunit",
            ("Share of judged clips whose photometric augmentation varied between frames beyond the "
             "threshold, per rank. The alert fires above 25% over 10 minutes."),
            [q(('sum by (run, rank) (rate(prepwatch_clips_total{outcome="inconsistent", '
                "SEL}[$__rate_interval]))\n"
                '  / sum by (run, rank) (rate(prepwatch_clips_total{outcome=~"consistent|inconsistent", '
                "SEL}[$__rate_interval]))"), "{{run}}/{{rank}}")],
            w=6, defaults={"thresholds": thresholds("green", (0.25, "orange")), "min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchClipAugmentationInconsistent")],
        ),
        timeseries(
            "Clips by outcome", "short",
            ("Clips checked per rate interval, by source and outcome (skipped: too few unsaturated "
             "pixels, a single frame, or a flat frame)."),
            [q("sum by (source, outcome) (increase(prepwatch_clips_total{SEL}[$__rate_interval]))",
               "{{source}} {{outcome}}")],
            w=6, custom=STACKED, defaults={"min": 0, "decimals": 0},
            links=[runbook(RUNBOOK, "PrepwatchClipAugmentationInconsistent")],
        ),
        timeseries(
            "Check cost", "percentunit",
            ("Share of the training loop's wall time spent in clip checks, by part (seconds per second). "
             "Probes are budgeted to 1% by default."),
            [q("sum by (part) (rate(prepwatch_clip_check_seconds_total{SEL}[$__rate_interval]))",
               "clips {{part}}")],
            w=24, h=6, custom=STACKED, defaults={"min": 0},
            links=[runbook(RUNBOOK, "PrepwatchClipAugmentationInconsistent")],
        ),
    ]),
]


DASHBOARD = Dashboard(
    slug="clips",
    title="prepwatch / Clips (video consistency)",
    description=("prepwatch: is clip augmentation the same in every frame? Frame-to-frame jitter of the "
                 "photometric change, inconsistent clips, check cost."),
    tags=["clips"],
    metric="prepwatch_clips_total",
    rows=ROWS,
    runbook_page=RUNBOOK,
    runbook_title="clip alerts",
)
