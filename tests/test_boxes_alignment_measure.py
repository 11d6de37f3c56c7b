"""Box conventions, IoU, sanity outcomes, and the probe's sub-pixel evidence measurement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prepwatch.checks.boxes import formats as bf
from prepwatch.checks.boxes.adapters import ProbeInput, ProbeOutput, TransformAdapter, resolve_call
from prepwatch.checks.boxes.alignment import judge, measure_region


def render_rect(height: int, width: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Exact area coverage of a continuous xyxy box (what a perfect resampler gives)."""
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    ox = np.clip(np.minimum(xs + 1, box[2]) - np.maximum(xs, box[0]), 0, 1)
    oy = np.clip(np.minimum(ys + 1, box[3]) - np.maximum(ys, box[1]), 0, 1)
    return oy[:, None] * ox[None, :]


def render_rotated(height: int, width: int, center, size, angle_deg: float, samples: int = 6) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.zeros((height, width))
    a = math.radians(angle_deg)
    offs = (np.arange(samples) + 0.5) / samples
    for dy in offs:
        for dx in offs:
            px, py = xs + dx - center[0], ys + dy - center[1]
            u = px * math.cos(a) + py * math.sin(a)
            v = -px * math.sin(a) + py * math.cos(a)
            out += (np.abs(u) <= size[0] / 2) & (np.abs(v) <= size[1] / 2)
    return out / samples**2


def test_format_round_trips_and_inclusive_convention() -> None:
    boxes = np.array([[3.0, 4.0, 10.0, 20.0], [0.5, 1.5, 2.5, 9.0]])
    for fmt in bf.FORMATS:
        np.testing.assert_allclose(bf.to_xyxy(bf.from_xyxy(boxes, fmt), fmt), boxes)
    # Pixel-index boxes name the last covered column: [3, 4, 9, 19] covers x 3..9.
    np.testing.assert_allclose(bf.to_xyxy([[3, 4, 9, 19]], "xyxy_inclusive"), [[3, 4, 10, 20]])
    np.testing.assert_allclose(bf.to_xyxy([[3, 4, 7, 16]], "xywh"), [[3, 4, 10, 20]])
    with pytest.raises(ValueError, match="box_format must be one of"):
        bf.check_format("yolo")


def test_iou_and_shrink_floor() -> None:
    assert bf.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert bf.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert bf.iou([0, 0, 10, 10], [1, 0, 11, 10]) == pytest.approx(90 / 110)
    # A 1 px error on every edge costs a 10 px box far more than a 100 px one.
    assert bf.shrink_iou(10, 10, 1.0) == pytest.approx(0.64)
    assert bf.shrink_iou(100, 100, 1.0) == pytest.approx(0.9604)
    assert bf.shrink_iou(2, 10, 1.5) == 0.0


def test_classify_outcomes_partition() -> None:
    boxes = np.array([
        [10, 10, 20, 20],   # kept
        [0, 10, 20, 20],    # touches the border: clipped
        [-5, 10, 20, 20],   # out of bounds
        [10, 10, 10, 20],   # zero width: degenerate
        [30, 10, 20, 20],   # negative width: degenerate
        [10, 10, 20, 41],   # beyond H=40
        [np.nan, 0, 1, 1],  # not finite: degenerate
    ])
    names = [bf.OUTCOMES[i] for i in bf.classify(boxes, 50, 40)]
    assert names == [
        "kept", "clipped", "out_of_bounds", "degenerate", "degenerate", "out_of_bounds", "degenerate",
    ]


@pytest.mark.parametrize("box", [(10.3, 7.6, 30.8, 21.2), (0.0, 5.25, 17.5, 40.0), (5.9, 6.1, 9.2, 8.0)])
def test_axis_aligned_edges_are_measured_to_a_small_fraction_of_a_pixel(box) -> None:
    gray = render_rect(40, 50, box)
    ev = measure_region(gray)
    assert ev.present and ev.axis_aligned
    np.testing.assert_allclose(ev.box, box, atol=0.03)


def test_blurred_edges_keep_their_position() -> None:
    """Interpolation smears an edge over pixels but conserves its coverage."""
    box = (12.4, 9.7, 33.1, 27.9)
    sharp = torch.from_numpy(render_rect(48, 64, box))[None, None].float()
    kernel = torch.tensor([0.25, 0.5, 0.25])
    blurred = torch.nn.functional.conv2d(
        torch.nn.functional.pad(sharp, (1, 1, 1, 1)), (kernel[:, None] * kernel[None, :])[None, None],
    )[0, 0].numpy()
    ev = measure_region(blurred, ramp=3)
    assert ev.axis_aligned
    np.testing.assert_allclose(ev.box, box, atol=0.05)


def test_rotated_region_centroid_and_enclosing_box() -> None:
    gray = render_rotated(96, 128, center=(60.3, 45.7), size=(40, 20), angle_deg=30)
    ev = measure_region(gray)
    assert ev.present and not ev.axis_aligned and ev.symmetric and not ev.touches_border
    assert ev.centroid == pytest.approx((60.3, 45.7), abs=0.05)
    a = math.radians(30)
    half_w = (40 * math.cos(a) + 20 * math.sin(a)) / 2
    half_h = (40 * math.sin(a) + 20 * math.cos(a)) / 2
    expected = (60.3 - half_w, 45.7 - half_h, 60.3 + half_w, 45.7 + half_h)
    # The thresholded region loses at most about a pixel at the sharp corners.
    for got, want in zip(ev.box, expected):
        assert abs(got - want) <= 1.1


def test_photometric_changes_do_not_move_the_evidence() -> None:
    box = (10.0, 8.0, 30.0, 25.0)
    base = render_rect(40, 50, box)
    for gray in (0.3 + 0.4 * base, -2.1 + 4.4 * base, 200 * base + 20):
        np.testing.assert_allclose(measure_region(gray).box, box, atol=0.03)
    assert measure_region(np.full((40, 50), 0.7)).uniform


def _sample() -> ProbeInput:
    image = np.zeros((3, 40, 50), dtype=np.float32)
    image[:, 10:20, 5:25] = 1.0
    boxes = np.array([[5.0, 10.0, 25.0, 20.0], [30.0, 5.0, 45.0, 35.0]])
    return ProbeInput(image, boxes, np.array([7, 8]))


def _out(image: np.ndarray, boxes, labels=None) -> ProbeOutput:
    return ProbeOutput(gray=image.mean(axis=0), boxes=np.asarray(boxes, dtype=np.float64),
                       labels=None if labels is None else np.asarray(labels))


def test_judge_verdicts() -> None:
    s = _sample()
    assert judge(s, 0, _out(s.image, s.boxes, [7, 8])).result == "aligned"
    shifted = judge(s, 0, _out(s.image, [[4, 10, 24, 20], [30, 5, 45, 35]], [7, 8]))
    assert (shifted.result, shifted.kind) == ("misaligned", "offset")
    assert shifted.error_px == pytest.approx(1.0)
    far = judge(s, 0, _out(s.image, [[25, 20, 45, 30], [30, 5, 45, 35]], [7, 8]))
    assert (far.result, far.kind) == ("misaligned", "iou")
    oob = judge(s, 0, _out(s.image, [[5, 10, 55, 20], [30, 5, 45, 35]], [7, 8]))
    assert oob.kind == "out_of_bounds"
    foreign = judge(s, 0, _out(s.image, s.boxes, [7, 99]))
    assert foreign.kind == "foreign"
    dropped = judge(s, 0, _out(s.image, [[30, 5, 45, 35]], [8]))
    assert dropped.result == "inconclusive" and dropped.outcomes["dropped"] == 1
    gone = np.zeros_like(s.image)
    phantom = judge(s, 0, _out(gone, s.boxes, [7, 8]))
    assert phantom.kind == "phantom"
    both_gone = judge(s, 0, _out(gone, [[5, 10, 5, 20], [30, 5, 45, 35]], [7, 8]))
    assert both_gone.result == "aligned" and both_gone.iou is None


def test_calling_conventions_are_resolved_and_checked() -> None:
    def pair(image, boxes):
        return image, boxes

    def triple(image, boxes, labels):
        return image, boxes, labels

    def one(image):
        return image

    assert resolve_call(pair, "auto") == "pair"
    assert resolve_call(triple, "auto") == "tuple"
    with pytest.raises(TypeError, match="call='tuple'"):
        resolve_call(one, "auto")
    with pytest.raises(ValueError, match="call must be one of"):
        resolve_call(pair, "kwargs")
    with pytest.raises(TypeError, match="must be callable"):
        TransformAdapter("flip")  # type: ignore[arg-type]
    adapter = TransformAdapter(lambda i, b, lab: (i, b), call="tuple", image_kind="numpy")
    [out] = adapter([_sample()])
    assert out.gray.shape == (40, 50) and out.labels is None
    np.testing.assert_allclose(out.boxes, _sample().boxes)
