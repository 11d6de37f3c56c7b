"""Which classes are rare: from the training label frequency, or named by the user.

Two rules, both over classes seen at least once in training (a class never seen in
training is absent, not rare):

* ``share`` (default 0.5): a class is rare when its share of the training labels is below
  ``share / num_classes``, i.e. below half of what a uniform class would get. A balanced
  dataset has no rare class under this rule, which is the point.
* ``quantile`` q: the classes whose label count is at or below the q-quantile of the
  counts. It always marks some classes, even on balanced data; use it when "the 10%
  least frequent classes" is what you want to watch.

The decision waits until ``min_samples`` training labels were counted, then follows
the running counts at every flush.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class RareRule:
    def __init__(
        self, num_classes: int, explicit: frozenset[int] = frozenset(),
        share: Optional[float] = 0.5, quantile: Optional[float] = None,
        min_samples: Optional[int] = None,
    ) -> None:
        if share is not None and quantile is not None:
            raise ValueError("pass rare_share or rare_quantile, not both")
        if share is not None and not 0 < share < 1:
            raise ValueError(f"rare_share must be in (0, 1) (a fraction of the uniform share), got {share}")
        if quantile is not None and not 0 < quantile < 1:
            raise ValueError(f"rare_quantile must be in (0, 1), got {quantile}")
        self.num_classes = num_classes
        self.explicit = explicit
        self.share = share
        self.quantile = quantile
        self.min_samples = 50 * num_classes if min_samples is None else int(min_samples)
        self.by_frequency = share is not None or quantile is not None
        self.flags = np.zeros(num_classes, dtype=bool)
        for c in explicit:
            self.flags[c] = True
        self.decided = not self.by_frequency

    def update(self, train_counts: np.ndarray) -> bool:
        """Recompute from per-class training label counts; True when the flags changed."""
        if not self.by_frequency:
            return False
        total = int(train_counts.sum())
        if total < self.min_samples:
            return False
        seen = train_counts > 0
        if self.share is not None:
            rare = seen & (train_counts < self.share * total / self.num_classes)
        else:
            cut = np.quantile(train_counts[seen], self.quantile) if seen.any() else -1
            rare = seen & (train_counts <= cut)
        for c in self.explicit:
            rare[c] = True
        changed = not self.decided or bool((rare != self.flags).any())
        self.flags = rare
        self.decided = True
        return changed

    def exported(self) -> np.ndarray:
        """1.0 rare, 0.0 not rare, NaN not decided yet (explicitly named classes are 1)."""
        out = self.flags.astype(np.float64)
        if not self.decided:
            out[~self.flags] = np.nan
        return out
