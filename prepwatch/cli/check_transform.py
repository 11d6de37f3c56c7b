"""`prepwatch check-transform MODULE:CALLABLE`: do the boxes go where the pixels go?"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from prepwatch.checks.boxes.adapters import CALLS, IMAGE_KINDS
from prepwatch.checks.boxes.alignment import ProbeReport, TrialResult, check_transform
from prepwatch.checks.boxes.formats import FORMATS, NORMALIZED_FORMATS

EXIT_ALIGNED, EXIT_MISALIGNED, EXIT_INCONCLUSIVE = 0, 1, 3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-transform", help="probe a joint image+box transform for label misalignment",
        description="Builds probe images with one box region painted white, pushes them through "
        "the transform with their boxes many times, and compares where the white pixels went "
        "with where the box went. Exit code 0: aligned; 1: misaligned; 3: too few trials could "
        "be judged; 2: usage error.",
    )
    p.add_argument(
        "target", metavar="MODULE:CALLABLE",
        help="the transform, e.g. mypkg.transforms:train_transform (current directory is on "
        "the import path)",
    )
    p.add_argument("--image-size", default="128x96", metavar="WxH",
                   help="probe image size (default 128x96; use your crop size or larger)")
    p.add_argument("--trials", type=int, default=200, help="probe trials (default 200)")
    p.add_argument("--call", choices=CALLS, default="auto",
                   help="calling convention (default: torchvision v2 -> dict, else by signature)")
    p.add_argument("--box-format", choices=FORMATS + NORMALIZED_FORMATS, default="xyxy",
                   help="box convention of a plain callable (default xyxy, continuous pixels)")
    p.add_argument("--image-kind", choices=IMAGE_KINDS, default=None,
                   help="what the transform receives as image (default: detected, float CHW "
                        "tensor first, then uint8)")
    p.add_argument("--tv-tensors", choices=("auto", "yes", "no"), default="auto",
                   help="wrap probe inputs as torchvision tv_tensors (default auto: for v2 "
                        "transforms, or when the transform refuses plain tensors)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per call with --call batch")
    p.add_argument("--factory", action="store_true",
                   help="CALLABLE builds the transform: call it with no arguments first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worst", type=int, default=5, help="worst cases to list and draw (default 5)")
    p.add_argument("--report-image", default="check-transform-worst.png", metavar="PATH",
                   help="where to draw the worst cases (default ./check-transform-worst.png; "
                   "needs Pillow)")
    p.add_argument("--no-image", action="store_true", help="do not draw the worst cases")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        width = height = 0
    if not sep or width < 16 or height < 16:
        raise ValueError(f"--image-size must be WxH with both >= 16, e.g. 128x96; got {text!r}")
    return width, height


def load_target(target: str, factory: bool = False) -> Any:
    """Import ``module:attr[.attr]`` with the current directory on the path."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:CALLABLE, e.g. mypkg.transforms:train_transform; got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if factory:
        obj = obj()
    if not callable(obj):
        raise ValueError(f"{target} is a {type(obj).__name__}, not a callable transform")
    return obj


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.image_size)
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    transform = load_target(args.target, args.factory)
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    report = check_transform(
        transform, args.trials, keep_images=max(args.worst, 0), image_size=size,
        call=args.call, box_format=args.box_format, image_kind=args.image_kind,
        tv_tensors={"auto": None, "yes": True, "no": False}[args.tv_tensors],
        batch_size=args.batch_size, seed=args.seed,
    )
    image_path = None
    code = exit_code(report)
    # Every judged box aligned: there is no worst case to show, only the verdict.
    if not args.no_image and args.worst > 0 and report.trials and code != EXIT_ALIGNED:
        image_path = draw_worst(report, Path(args.report_image), args.worst)
    if args.json:
        json.dump(summary(report, args, image_path, code), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_text(report, args, image_path, code))
    return code


def exit_code(report: ProbeReport) -> int:
    if report.misaligned:
        return EXIT_MISALIGNED
    if not report.ok:
        return EXIT_INCONCLUSIVE
    return EXIT_ALIGNED


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {"min": float(arr.min()), "p5": float(np.percentile(arr, 5)),
            "median": float(np.median(arr))}


def summary(report: ProbeReport, args: argparse.Namespace, image: Path | None, code: int) -> dict:
    return {
        "target": args.target, "trials": len(report.trials), "aligned": report.aligned,
        "misaligned": report.misaligned, "inconclusive": report.inconclusive,
        "kinds": report.kinds(), "boxes": report.outcomes(), "iou": _quantiles(report.ious()),
        "worst": [_trial_dict(t) for t in report.worst(args.worst)] if code != EXIT_ALIGNED else [],
        "image": str(image) if image else None, "exit_code": code,
        "form": None if report.form is None else {
            "image_kind": report.form.image_kind, "tv_tensors": report.form.tv_tensors,
            "how": report.form.how, "refused": report.form.refused,
        },
    }


def _trial_dict(t: TrialResult) -> dict:
    return {
        "trial": t.index, "result": t.result, "kind": t.kind, "iou": t.iou, "error_px": t.error_px,
        "expected": t.expected, "got": t.got, "canvas": t.canvas, "note": t.note,
    }


def _box(b: Any) -> str:
    return "-" if b is None else "[" + ", ".join(f"{v:.1f}" for v in b) + "]"


def format_text(report: ProbeReport, args: argparse.Namespace, image: Path | None, code: int) -> str:
    n = len(report.trials)
    lines = [
        f"prepwatch check-transform {args.target}: {n} trials on {args.image_size} probe images",
        f"  aligned {report.aligned}, misaligned {report.misaligned}, "
        f"inconclusive {report.inconclusive}",
    ]
    if report.form is not None:
        lines.append(f"  the transform was handed {report.form.describe()} ({report.form.how}"
                     + ("; it raised on " + "; ".join(report.form.refused) if report.form.refused
                        else "") + ")")
    kinds = {k: v for k, v in report.kinds().items() if v}
    if kinds:
        lines.append("  misaligned by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    q = _quantiles(report.ious())
    if q:
        lines.append(
            f"  IoU of judged boxes: min {q['min']:.3f}, p5 {q['p5']:.3f}, median {q['median']:.3f}"
        )
    lines.append(
        "  boxes leaving the transform: "
        + ", ".join(f"{k} {v}" for k, v in report.outcomes().items())
    )
    worst = [t for t in report.worst(args.worst) if t.result != "aligned" or t.iou is not None]
    if code == EXIT_ALIGNED:
        worst = []  # nothing went wrong: listing the lowest-IoU aligned trials would alarm
    if worst:
        lines.append("worst cases:")
    for t in worst:
        label = t.kind or t.result
        iou = f"IoU {t.iou:.3f}" if t.iou is not None else "IoU -"
        err = f"error {t.error_px:.2f} px" if t.error_px is not None else ""
        lines.append(f"  trial {t.index:<4d} {label:<13s} {iou}  {err}  {t.note}".rstrip())
        lines.append(
            f"             object at {_box(t.expected)}, box at {_box(t.got)} "
            f"on {t.canvas[0]}x{t.canvas[1]}"
        )
    if image:
        lines.append(
            f"image: {image} (per case: the probe input with the painted box in yellow; the "
            "output with where the object went in green and the transform's box in red)"
        )
    verdict = {
        EXIT_ALIGNED: "ALIGNED: every judged box sits on its object",
        EXIT_MISALIGNED: "MISALIGNED: boxes do not follow the pixels; see worst cases",
        EXIT_INCONCLUSIVE: "INCONCLUSIVE: too few trials could be judged (boxes dropped or "
        "images uniform); try a larger --image-size",
    }[code]
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def draw_worst(report: ProbeReport, path: Path, k: int) -> Path | None:
    """Draw the worst trials (input, output) side by side; None without Pillow."""
    from prepwatch.checks.boxes.overlays import Panel, pillow_available, render_grid, save_png, to_display

    if not pillow_available():
        print("prepwatch: Pillow is not installed; no report image (pip install "
              "'prepwatch[overlays]')", file=sys.stderr)
        return None
    panels = []
    for t in report.worst(k):
        if t.sample is None or t.output is None:
            continue
        boxes = [tuple(b) for b in t.sample.boxes]
        colors = [(255, 255, 0) if i == t.marked else (128, 128, 128) for i in range(len(boxes))]
        panels.append(Panel(to_display(t.sample.image), boxes, colors=colors,
                            caption=f"#{t.index} input"))
        out_boxes, out_colors = [], []
        if t.expected is not None:
            out_boxes.append(t.expected)
            out_colors.append((0, 220, 0))
        if t.got is not None:
            out_boxes.append(t.got)
            out_colors.append((255, 40, 40))
        label = t.kind or t.result
        iou = f" IoU {t.iou:.2f}" if t.iou is not None else ""
        shown = to_display(t.output.gray)
        panels.append(Panel(shown, out_boxes, colors=out_colors, caption=f"#{t.index} {label}{iou}"))
        panels.append(_zoom(shown, out_boxes, out_colors, f"#{t.index} zoomed"))
    if not panels:
        return None
    save_png(render_grid(panels, columns=3, cell=256), path)
    return path.resolve()


def _zoom(image: np.ndarray, boxes: list, colors: list, caption: str) -> Any:
    """The region around the boxes, so a one-pixel offset is visible."""
    from prepwatch.checks.boxes.overlays import Panel

    h, w = image.shape[:2]
    if not boxes:
        return Panel(image, caption=caption)
    arr = np.asarray(boxes, dtype=np.float64)
    x1 = int(max(0, np.floor(arr[:, 0].min()) - 4))
    y1 = int(max(0, np.floor(arr[:, 1].min()) - 4))
    x2 = int(min(w, np.ceil(arr[:, 2].max()) + 4))
    y2 = int(min(h, np.ceil(arr[:, 3].max()) + 4))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return Panel(image, boxes, colors=colors, caption=caption)
    shifted = [(b[0] - x1, b[1] - y1, b[2] - x1, b[3] - y1) for b in boxes]
    return Panel(np.ascontiguousarray(image[y1:y2, x1:x2]), shifted, colors=colors, caption=caption)
