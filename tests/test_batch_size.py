"""Batch-size detection on the layouts real collates make (prepwatch_samples_total counts these)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import DictSamples, TensorPairs
from helpers import scrape, value
from torch.utils.data import DataLoader, Dataset

from prepwatch.hooks import batch_size
from prepwatch.hooks.batch_size import BatchSizer


class DetectionSamples(Dataset):
    """torchvision-detection style: (image of its own size, {"boxes", "labels"})."""

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        k = 1 + i % 4
        image = torch.rand(3, 16 + i % 5, 20 + i % 3)
        return image, {"boxes": torch.rand(k, 4), "labels": torch.arange(k)}


class TokenSequences(Dataset):
    """Variable-length token ids, as a text dataset hands them to a padding-free collate."""

    def __init__(self, n: int = 40) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.arange(7 + (5 * i) % 11)


class NestedTargets(TensorPairs):
    """(x, (y1, y2)): default_collate stacks both targets."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x, (y, torch.rand(4))


def sizes(loader, sizer: BatchSizer | None = None) -> list[int]:
    sizer = sizer or BatchSizer()
    return [sizer(batch) for batch in loader]


def test_detection_collate_counts_images_not_channels():
    dl = DataLoader(DetectionSamples(20), batch_size=8, collate_fn=lambda b: tuple(zip(*b)))
    images, targets = next(iter(dl))
    assert len(images) == 8 and images[0].shape[0] == 3 and isinstance(targets[0], dict)
    assert sizes(dl) == [8, 8, 4]


def test_detection_collate_through_the_loader_feeds_samples_total(watch):
    dl = DataLoader(DetectionSamples(20), batch_size=8, collate_fn=lambda b: tuple(zip(*b)))
    list(watch.loader(dl))
    assert value(scrape(watch.url), "prepwatch_samples_total") == 20


def test_samples_kept_as_records_count_samples():
    # collate_fn that keeps the samples: a list of (image, label) tuples
    dl = DataLoader(TensorPairs(20), batch_size=8, collate_fn=lambda b: b)
    assert sizes(dl) == [8, 8, 4]
    dl = DataLoader(DetectionSamples(20), batch_size=8, collate_fn=lambda b: b)
    assert sizes(dl) == [8, 8, 4]


def test_variable_length_sequences_count_sequences_not_tokens():
    dl = DataLoader(TokenSequences(40), batch_size=16, collate_fn=lambda b: b)
    first = next(iter(dl))
    assert len(first) == 16 and first[0].shape == (7,) and first[1].shape == (12,)
    assert sizes(dl) == [16, 16, 8]


def test_variable_length_sequences_inside_a_dict():
    def collate(b):
        return {"input_ids": list(b), "lengths": torch.tensor([len(t) for t in b])}

    dl = DataLoader(TokenSequences(40), batch_size=16, collate_fn=collate)
    assert sizes(dl) == [16, 16, 8]
    only_lists = DataLoader(TokenSequences(40), batch_size=16, collate_fn=lambda b: {"ids": list(b)})
    assert sizes(only_lists) == [16, 16, 8]


def test_one_element_side_tensor_does_not_win():
    s = BatchSizer()
    assert s({"lr_scale": torch.tensor([0.5]), "x": torch.zeros(32, 3)}) == 32
    assert s({"lr_scale": torch.tensor([0.5]), "x": torch.zeros(7, 3)}) == 7
    # 0-d side values never say anything
    assert BatchSizer()({"step": torch.tensor(3), "x": torch.zeros(5, 2)}) == 5
    # the majority of fields wins over a side tensor of any size
    side = {"w": torch.ones(10), "x": torch.zeros(4, 3), "y": torch.zeros(4)}
    assert BatchSizer()(side) == 4
    # the same as tuples: two fields that disagree are fields, not two samples
    assert BatchSizer()((torch.zeros(32, 3), torch.tensor([0.5]))) == 32
    assert BatchSizer()((torch.zeros(32, 3), torch.ones(10))) == 32
    assert BatchSizer()((torch.ones(10), torch.zeros(4, 3), torch.zeros(4))) == 4


def test_plain_tensor_pairs_and_dicts_from_default_collate():
    assert BatchSizer()(torch.zeros(7, 3)) == 7
    assert sizes(DataLoader(TensorPairs(20), batch_size=8)) == [8, 8, 4]
    assert sizes(DataLoader(DictSamples(10), batch_size=4)) == [4, 4, 2]
    assert sizes(DataLoader(NestedTargets(20), batch_size=8)) == [8, 8, 4]
    x, (y1, y2) = next(iter(DataLoader(NestedTargets(20), batch_size=8)))
    assert y1.shape == (8,) and y2.shape == (8, 4)
    # the same by hand, with stacked targets only under the top level
    assert BatchSizer()((torch.zeros(5, 3), (torch.zeros(5), torch.zeros(5, 4)))) == 5
    assert BatchSizer()((torch.zeros(5, 3), torch.zeros(5))) == 5


def test_lists_of_strings_and_other_non_arrays():
    s = BatchSizer()
    assert s(["a", "bb", "ccc"]) == 3
    assert s(["d", "e"]) == 2
    assert BatchSizer()([{"text": "a"}, {"text": "b"}, {"text": "c"}]) == 3
    # default_collate keeps strings as a per-sample list beside the stacked field
    assert BatchSizer()([torch.zeros(6, 2), ["n"] * 6]) == 6
    assert BatchSizer()(object()) == 0
    assert BatchSizer()(torch.tensor(1.0)) == 0
    assert BatchSizer()([]) == 0


def test_numpy_arrays():
    assert BatchSizer()(np.zeros((6, 3))) == 6
    assert BatchSizer()((np.zeros((6, 3)), np.zeros(6))) == 6
    assert BatchSizer()([np.zeros(n) for n in (9, 4, 11, 2, 5)]) == 5
    assert BatchSizer()({"scale": np.array([2.0]), "x": np.zeros((12, 4))}) == 12
    assert BatchSizer()({"images": tuple(np.zeros((3, 8 + i, 8)) for i in range(10))}) == 10


def test_layout_change_mid_run_is_detected_again():
    s = BatchSizer()
    assert s([torch.zeros(8, 3), torch.zeros(8)]) == 8
    assert s.strategy == batch_size.Strategy((0,), "dim0")
    # a plain tensor where a list was: indexing [0] would still "work" and say 3
    assert s(torch.zeros(5, 3)) == 5
    assert s.strategy == batch_size.Strategy((), "dim0")
    assert s({"x": torch.zeros(6, 2), "y": torch.zeros(6)}) == 6
    assert s({"image": torch.zeros(2, 3, 4, 4)}) == 2  # other keys: the path fails
    assert s([torch.arange(n) for n in (3, 9, 4)]) == 3  # now samples of different lengths
    assert s.strategy == batch_size.Strategy((), "len")
    assert s((tuple(torch.zeros(3, 4, 4) for _ in range(7)), tuple({} for _ in range(7)))) == 7
    assert s.strategy == batch_size.Strategy((0,), "len")
    assert s(torch.zeros(4, 2)) == 4


def test_strategy_is_found_once_and_reused(monkeypatch):
    calls = []
    real = batch_size.detect

    def counting(batch):
        calls.append(type(batch))
        return real(batch)

    monkeypatch.setattr(batch_size, "detect", counting)
    s = BatchSizer()
    dl = DataLoader(DetectionSamples(50), batch_size=4, collate_fn=lambda b: tuple(zip(*b)))
    assert sum(s(b) for b in dl) == 50
    assert len(calls) == 1
    assert s.strategy is not None and s.strategy.kind == "len"
    assert len(s.strategy.path) <= 2  # one or two indexing ops per batch
    tokens = DataLoader(TokenSequences(40), batch_size=16, collate_fn=lambda b: b)
    calls.clear()
    s = BatchSizer()
    assert sum(s(b) for b in tokens) == 40
    assert len(calls) == 1


@pytest.mark.parametrize("fixed", [1, 16])
def test_given_size_is_used_as_is(fixed):
    s = BatchSizer(fixed)
    assert s(torch.zeros(3)) == fixed and s(["a"]) == fixed and s(object()) == fixed
