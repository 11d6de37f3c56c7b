"""How often PrepwatchRareClassRecallDrop's condition fires on healthy runs, and how often
it catches a real fall, for a fixed 2.5 se floor vs the floor the rule uses.

    python bench/sim_rare_class_alert.py

Binomial model of one class' evaluation recall per pass (n images of the class), the
rule's own arithmetic: best = max of the passes in 6 h, current = the better of the last
two, se from their mean, drop > 10 points and drop > floor. "healthy": recall slowly
improving 60% -> 66% over 24 h. "fall": 68% until 16 h, then 46% (the seed's barn spider).
k = passes in 6 h. Prints, per cadence, the share of classes that fire at least once in
24 h (healthy) and that are caught within the last 8 h (fall).
"""

from __future__ import annotations

import numpy as np

HOURS = 24
CLASSES = 4000


def fixed_floor(se: np.ndarray, k: int) -> np.ndarray:
    return 2.5 * se


def cadence_floor(se: np.ndarray, k: int) -> np.ndarray:
    """The rule's: the best of k noisy passes sits up to sqrt(2 ln k) se above the truth."""
    return (np.sqrt(2 * np.log(max(k, 2))) + 2) * se


def simulate(floor, per_6h: int, n: int, fall: bool, rng: np.random.Generator) -> float:
    passes = per_6h * HOURS // 6
    onset = 2 * passes // 3
    healthy = np.linspace(0.60, 0.66, passes)
    p = np.where(np.arange(passes) < onset, 0.68, 0.46) if fall else healthy
    recall = rng.binomial(n, p, size=(CLASSES, passes)) / n
    fired = np.zeros(CLASSES, bool)
    for i in range(max(2, onset if fall else 2), passes):
        k = min(i + 1, per_6h)
        best = recall[:, i - k + 1:i + 1].max(1)
        current = np.maximum(recall[:, i], recall[:, i - 1])
        mean = (best + current) / 2
        se = np.sqrt(mean * (1 - mean) / n)
        drop = best - current
        fired |= (drop > 0.10) & (drop > floor(se, k))
    return float(fired.mean())


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'floor':22} {'passes/6h':>9} {'n':>4} {'healthy fires (24h)':>20} {'fall caught (8h)':>17}")
    for name, floor in (("fixed 2.5 se", fixed_floor), ("(sqrt(2 ln k) + 2) se", cadence_floor)):
        for per_6h in (6, 24, 72):
            for n in (50, 200):
                healthy = simulate(floor, per_6h, n, False, rng)
                caught = simulate(floor, per_6h, n, True, rng)
                print(f"{name:22} {per_6h:9d} {n:4d} {healthy:20.3f} {caught:17.3f}")


if __name__ == "__main__":
    main()
