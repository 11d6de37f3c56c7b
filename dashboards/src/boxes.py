"""prepwatch / Boxes: do box labels follow the pixels through the augmentation?"""

from __future__ import annotations

from .grafana import (
    CONNECTED,
    STACKED,
    Dashboard,
    Row,
    q,
    query_var,
    runbook,
    stat,
    table,
    thresholds,
    timeseries,
)

RUNBOOK = "boxes"  # docs/runbooks/boxes.md
OVERLAY_INFO = 'label_values(prepwatch_box_overlay_info{run=~"$run", rank=~"$rank", instance=~"$instance"}'

ROWS = [
    Row("Do the boxes follow the pixels? (alignment probes through the training transform)", [
        stat(
            "Misaligned probe share", "percentunit",
            ("Share of judged alignment probes (aligned + misaligned) whose box came out off its object, "
             "per rank, over the rate interval. A correct transform stays at 0; the alert fires above 5% "
             "over 10 minutes (alerts/geometry.rules.yml)."),
            [q(('sum by (run, rank) (rate(prepwatch_box_alignment_checks_total{result="misaligned", '
                "SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) "
                '(rate(prepwatch_box_alignment_checks_total{result=~"aligned|misaligned", '
                "SEL}[$__rate_interval]))"), "{{run}}/{{rank}}")],
            w=6, defaults={"thresholds": thresholds("green", (0.05, "red")), "min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
        timeseries(
            "Probe trials by result", "short",
            ("Alignment probe trials per rate interval: aligned, misaligned, inconclusive (the transform "
             "dropped the painted box, or the image came out uniform: nothing to compare)."),
            [q("sum by (result) (increase(prepwatch_box_alignment_checks_total{SEL}[$__rate_interval]))",
               "{{result}}")],
            w=9, custom=STACKED, defaults={"min": 0, "decimals": 0},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
        timeseries(
            "Misalignments by kind", "short",
            ("Misaligned probe trials per rate interval, by kind: iou (box off its object: transform "
             "applied to the image only), offset (edges 0.5-2 px off: flip W-x vs W-1-x), out_of_bounds "
             "(not clipped after a crop or resize), foreign (boxes of another sample of the batch), "
             "phantom (box kept where its object left the image). Every kind is exported from the start "
             "at 0."),
            [q("sum by (kind) (increase(prepwatch_box_misalignments_total{SEL}[$__rate_interval]))",
               "{{kind}}")],
            w=9, custom=STACKED, defaults={"min": 0, "decimals": 0},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
        timeseries(
            "Probe IoU with the object", "percentunit",
            ("IoU of each probed box with the enclosing box of where its object's pixels went: 5th "
             "percentile and median over the rate interval. Rotated boxes of a correct transform sit "
             "around 0.9 (interpolation shaves the corner tips); verdicts use a per-box floor, not this "
             "curve (docs/boxes.md)."),
            [q(("histogram_quantile(0.05, sum by (le) "
                "(rate(prepwatch_box_alignment_iou_bucket{SEL}[$__rate_interval])))"), "p5"),
             q(("histogram_quantile(0.5, sum by (le) "
                "(rate(prepwatch_box_alignment_iou_bucket{SEL}[$__rate_interval])))"), "median")],
            w=12,
            custom=CONNECTED,
            defaults={"min": 0, "max": 1}, links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
        timeseries(
            "Probe box error", "suffix: px",
            ("Worst edge error (axis-aligned boxes) or centre offset (rotated boxes) of each probed box, "
             "in output pixels: median and 95th percentile. A correct transform stays below 0.5 px; an "
             "off-by-one flip sits at 1 px; a missing rotation at tens of pixels."),
            [q(("histogram_quantile(0.5, sum by (le) "
                "(rate(prepwatch_box_alignment_error_pixels_bucket{SEL}[$__rate_interval])))"), "median"),
             q(("histogram_quantile(0.95, sum by (le) "
                "(rate(prepwatch_box_alignment_error_pixels_bucket{SEL}[$__rate_interval])))"), "p95")],
            w=12,
            custom=CONNECTED,
            defaults={"min": 0}, links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
    ]),
    Row("Boxes leaving the augmentation (sampled training batches)", [
        timeseries(
            "Boxes by outcome", "short",
            ("Boxes per second in the sampled training batches, by outcome: kept, clipped (touching the "
             "image border), out_of_bounds, degenerate (zero or negative area), dropped (fewer boxes out "
             "than in; counted when the targets carry boxes_in)."),
            [q("sum by (outcome) (rate(prepwatch_boxes_total{SEL}[$__rate_interval]))", "{{outcome}}")],
            w=12, custom=STACKED, defaults={"min": 0},
            links=[runbook(RUNBOOK, "PrepwatchBoxesInvalid")],
        ),
        stat(
            "Invalid box share", "percentunit",
            ("Out-of-bounds plus degenerate boxes over all boxes that left the augmentation (dropped ones "
             "excluded). The alert fires above 1% over 10 minutes."),
            [q(('sum by (run, rank) (rate(prepwatch_boxes_total{outcome=~"out_of_bounds|degenerate", '
                "SEL}[$__rate_interval]))\n"
                '  / sum by (run, rank) (rate(prepwatch_boxes_total{outcome!="dropped", '
                "SEL}[$__rate_interval]))"), "{{run}}/{{rank}}")],
            w=6, defaults={"thresholds": thresholds("green", (0.01, "orange")), "min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchBoxesInvalid")],
        ),
        stat(
            "Dropped box share", "percentunit",
            ("Boxes the augmentation removed over boxes that went in (needs boxes_in in the targets). "
             "Some dropping is normal (SanitizeBoundingBoxes, IoU crops); a jump means crops got more "
             "aggressive or boxes are lost."),
            [q(('sum by (run, rank) (rate(prepwatch_boxes_total{outcome="dropped", '
                "SEL}[$__rate_interval]))\n"
                "  / sum by (run, rank) (rate(prepwatch_boxes_total{SEL}[$__rate_interval]))"),
               "{{run}}/{{rank}}")],
            w=6, defaults={"thresholds": thresholds("green", (0.3, "orange")), "min": 0, "max": 1},
            links=[runbook(RUNBOOK, "PrepwatchBoxesInvalid")],
        ),
        table(
            "Latest overlay", "dateTimeAsIso",
            ("Where each process serves its latest sampled batch drawn with boxes and labels (a PNG "
             "written every overlay_every steps; off by default). Click the row to open it; the agent's "
             "HTTP server serves it read-only and must be reachable from your browser."),
            [q(("max by (instance, run, rank, path) (prepwatch_box_overlay_info{SEL})\n"
                "  * on (instance, run, rank) group_left max by (instance, run, rank) "
                "(prepwatch_box_overlay_last_timestamp_seconds{SEL} * 1000)"), instant=True, fmt="table")],
            w=16, h=6, options={"showHeader": True, "cellHeight": "sm"},
            transformations=[{"id": "organize",
                              "options": {"excludeByName": {"Time": True},
                                          "renameByName": {"Value": "written"}}}],
            defaults={"links": [{"title": "Open the latest overlay",
                                 "url": "http://${__data.fields.instance}${__data.fields.path}",
                                 "targetBlank": True}]},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
        stat(
            "Overlay age", "s",
            ("Seconds since the latest overlay was written, per rank. Overlays are written on a "
             "background thread every overlay_every steps; a growing age means the job stopped or Pillow "
             "is missing (prepwatch_overlays_available 0)."),
            [q("time() - max by (run, rank) (prepwatch_box_overlay_last_timestamp_seconds{SEL})",
               "{{run}}/{{rank}}")],
            w=8, h=6, defaults={"thresholds": thresholds("green", (600, "orange")), "min": 0},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
    ]),
    Row("Check cost", [
        timeseries(
            "Check cost", "percentunit",
            ("Share of the training loop's wall time spent in box checks, by part (seconds per second). "
             "Probes are budgeted to 1% by default."),
            [q("sum by (part) (rate(prepwatch_box_check_seconds_total{SEL}[$__rate_interval]))",
               "boxes {{part}}")],
            w=24, h=6, custom=STACKED, defaults={"min": 0},
            links=[runbook(RUNBOOK, "PrepwatchBoxesMisaligned")],
        ),
    ]),
]


DASHBOARD = Dashboard(
    slug="boxes",
    title="prepwatch / Boxes (alignment and sanity)",
    description=("prepwatch: do box labels follow the pixels through the augmentation, and do boxes leave it "
                 "valid? Alignment probes, box sanity, sampled overlays."),
    tags=["boxes"],
    metric="prepwatch_boxes_total",
    rows=ROWS,
    extra_variables=[
        query_var("overlay_instance", "Overlay endpoint", OVERLAY_INFO + ", instance)",
                  all_values=False, hide=2),
        query_var("overlay_path", "Overlay path", OVERLAY_INFO + ", path)", all_values=False, hide=2),
    ],
    links=[{"title": "Latest overlay", "type": "link", "url": "http://${overlay_instance}${overlay_path}",
            "targetBlank": True, "icon": "external link",
            "tooltip": ("The latest sampled batch drawn with its boxes (first matching process; see the "
                        "Latest overlay table for all)")}],
    runbook_page=RUNBOOK,
    runbook_title="box alerts",
)
