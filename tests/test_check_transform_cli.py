"""`prepwatch check-transform MODULE:CALLABLE`: exit codes, report, worst-case image."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from PIL import Image

from prepwatch.cli.main import main

MODULE = textwrap.dedent('''
    import torch
    from prepwatch.demo.geometry_transforms import Compose, RandomAffine, RandomHorizontalFlip

    good = Compose([RandomHorizontalFlip(), RandomAffine(degrees=20)])

    def off_by_one(image, boxes, labels):
        w = image.shape[-1]
        flipped = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], 1)
        return image.flip(-1), flipped, labels

    def flip_yolo(image, boxes, labels):  # normalized (cx, cy, w, h), YOLO style
        flipped = torch.stack([1 - boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]], 1)
        return image.flip(-1), flipped, labels

    def flip_image_only(image, boxes, labels):
        return image.flip(-1), boxes, labels

    def drops_everything(image, boxes, labels):
        return image, boxes[:0], labels[:0]

    def build():
        return good

    not_callable = 42
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "user_transforms_cli"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_aligned_transform_exits_zero(user_module, capsys, tmp_path) -> None:
    code = main(["check-transform", f"{user_module}:good", "--trials", "40", "--image-size", "96x64"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "aligned 40, misaligned 0" in out
    assert "verdict: ALIGNED" in out
    # nothing went wrong: no "worst cases" list and no picture of them
    assert "worst cases" not in out and "image:" not in out
    assert not (tmp_path / "check-transform-worst.png").exists()


def test_normalized_box_formats(user_module, capsys) -> None:
    args = ["--trials", "20", "--box-format", "cxcywh_norm", "--no-image"]
    assert main(["check-transform", f"{user_module}:flip_yolo", *args]) == 0
    assert "aligned 20, misaligned 0" in capsys.readouterr().out
    assert main(["check-transform", f"{user_module}:flip_image_only", *args]) == 1
    assert "verdict: MISALIGNED" in capsys.readouterr().out


def test_misaligned_transform_exits_one_with_worst_cases_and_image(user_module, capsys, tmp_path) -> None:
    image = tmp_path / "worst.png"
    code = main([
        "check-transform", f"{user_module}:off_by_one", "--trials", "30", "--worst", "3",
        "--report-image", str(image),
    ])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "aligned 0, misaligned 30" in out  # every trial flips
    assert "misaligned by kind: offset" in out
    assert "box edge minus object edge: left -1.00, right -1.00 px" in out
    assert "verdict: MISALIGNED" in out
    with Image.open(image) as img:
        assert img.width == 3 * 256  # input, output, zoom per case
    assert str(image) in out


def test_json_summary_and_inconclusive_exit(user_module, capsys) -> None:
    code = main(["check-transform", f"{user_module}:drops_everything", "--trials", "10", "--json",
                 "--no-image"])
    data = json.loads(capsys.readouterr().out)
    assert code == 3
    assert data["inconclusive"] == 10 and data["boxes"]["dropped"] >= 10
    assert data["image"] is None and data["exit_code"] == 3


def test_factory_option(user_module, capsys) -> None:
    assert main(["check-transform", f"{user_module}:build", "--factory", "--trials", "10",
                 "--no-image"]) == 0


@pytest.mark.parametrize("target, message", [
    ("no_such_module_xyz:t", "cannot import"),
    ("user_transforms_cli:missing", "has no attribute"),
    ("user_transforms_cli:not_callable", "not a callable"),
    ("user_transforms_cli", "MODULE:CALLABLE"),
])
def test_usage_errors_exit_two(user_module, capsys, target, message) -> None:
    assert main(["check-transform", target]) == 2
    assert message in capsys.readouterr().err


def test_bad_image_size(user_module, capsys) -> None:
    assert main(["check-transform", f"{user_module}:good", "--image-size", "10x10"]) == 2
    assert "WxH" in capsys.readouterr().err
