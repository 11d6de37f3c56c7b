"""Shared by the framework integration tests: tiny data, a hand-wrapped reference loop,
and the loop figures read from a real scrape of the endpoint."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch
from helpers import scrape, value

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread for every loop compared: Lightning sets torch's thread count from the CPU count
# unless OMP_NUM_THREADS is set, which would give it a different compute speed than the
# hand-written reference.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

SEQ = 16
VOCAB = 100


class TokenDataset(torch.utils.data.Dataset):
    """Synthetic token sequences; the label is the first token's parity (learnable).

    ``sleep`` per sample plants a slow input pipeline; ``fail_at`` raises on that index.
    """

    def __init__(self, n: int, sleep: float = 0.0, fail_at: int | None = None, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(5, VOCAB, (n, SEQ), generator=g)
        self.sleep = sleep
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError(f"planted failure at sample {i}")
        if self.sleep:
            time.sleep(self.sleep)
        return {"input_ids": self.x[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": int(self.x[i, 0] % 2)}


def tiny_bert() -> torch.nn.Module:
    """A 1-layer BERT for sequence classification, built from its config (no download)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=SEQ * 2, num_labels=2)
    return with_device_time(BertForSequenceClassification(cfg))


FIGURES = {
    "wait": "prepwatch_data_wait_seconds_sum",
    "waits": "prepwatch_data_wait_seconds_count",
    "period": "prepwatch_step_duration_seconds_sum",
    "periods": "prepwatch_step_duration_seconds_count",
    "first": "prepwatch_first_batch_wait_seconds_count",
    "steps": "prepwatch_steps_total",
    "samples": "prepwatch_samples_total",
    "fetches": "prepwatch_sample_fetch_seconds_count",
}


def figures(watch: Any) -> dict[str, float]:
    samples = scrape(watch.url)
    out = {}
    for key, name in FIGURES.items():
        labels = {"stage": "total"} if key == "fetches" else {}
        out[key] = value(samples, name, **labels) or 0.0
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    d = {k: after[k] - before[k] for k in FIGURES}
    d["share"] = d["wait"] / d["period"] if d["period"] > 0 else math.nan
    return d


def hand_loop(watch: Any, model: torch.nn.Module, dataset: Any, *, batch_size: int,
              accumulation: int, workers: int = 0, collate_fn: Any = None) -> None:
    """The reference: the documented one line in a hand-written loop with accumulation.

    ``collate_fn``: the framework's own (the Trainer collates with
    ``default_data_collator``), so both loops do the same input work per batch.
    """
    dl = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                     collate_fn=collate_fn)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    n = len(dl)
    for i, batch in enumerate(watch.loader(dl)):
        loss = model(**batch).loss / accumulation
        loss.backward()
        if (i + 1) % accumulation == 0 or i + 1 == n:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()


def input_bound(d: dict[str, float]) -> bool:
    """PrepwatchInputBoundWarning's condition (alerts/input_pipeline.rules.yml) on a run's
    increases: data-wait seconds over step-duration seconds above 0.10 (no GPU here)."""
    return d["share"] > 0.10


class ImageDataset(torch.utils.data.Dataset):
    """Synthetic images in [0, 1] (N, 3, 16, 16); label: which half is brighter."""

    def __init__(self, n: int, sleep: float = 0.0, fail_at: int | None = None, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 16, 16, generator=g)
        self.y = (self.x[:, :, :8].mean((1, 2, 3)) > self.x[:, :, 8:].mean((1, 2, 3))).long()
        self.sleep = sleep
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError(f"planted failure at sample {i}")
        if self.sleep:
            time.sleep(self.sleep)
        return self.x[i], self.y[i]


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return with_device_time(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 2),
    ))


DEVICE_TIME = 0.015  # s per training forward


class _DeviceTime:
    """A forward pre-hook that sleeps while training (a class: ddp_spawn pickles it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, module: torch.nn.Module, args: tuple) -> None:
        if module.training:
            time.sleep(self.seconds)


def with_device_time(model: torch.nn.Module, seconds: float = DEVICE_TIME) -> torch.nn.Module:
    """Each training forward also waits ``seconds``, as a loop waits on an accelerator.

    The loops compared must spend the same time per step outside their data wait; CPU
    compute on a shared 2-core runner swings by 2x between two runs, a sleep does not, and
    a framework's own few milliseconds per step stay a small part of the step.
    """

    model.register_forward_pre_hook(_DeviceTime(seconds))
    return model


def hand_loop_images(watch: Any, model: torch.nn.Module, dataset: Any, *, batch_size: int,
                     accumulation: int = 1, workers: int = 0) -> None:
    dl = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    n = len(dl)
    for i, (x, y) in enumerate(watch.loader(dl)):
        loss = torch.nn.functional.cross_entropy(model(x), y) / accumulation
        loss.backward()
        if (i + 1) % accumulation == 0 or i + 1 == n:
            opt.step()
            opt.zero_grad()


def share_agrees(framework: dict[str, float], hands: list[dict[str, float]],
                 rel: float = 0.10) -> bool:
    shares = [h["share"] for h in hands]
    return min(shares) * (1 - rel) <= framework["share"] <= max(shares) * (1 + rel)


def assert_share_agrees(framework: dict[str, float], hands: list[dict[str, float]],
                        rel: float = 0.10) -> None:
    """The framework's data-wait share within ``rel`` of the hand-wrapped loop's.

    The hand loop runs before and after the framework: on a shared runner the load drifts
    between runs, and the two hand runs bracket the same conditions the framework saw.
    """
    shares = [h["share"] for h in hands]
    low, high = min(shares) * (1 - rel), max(shares) * (1 + rel)
    assert low <= framework["share"] <= high, (framework, hands)
