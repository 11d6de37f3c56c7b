"""Real photographs that packages ship offline, cut into patches: evidence beyond FakeData.

scikit-learn's ``load_sample_images`` (china.jpg, flower.jpg) and scikit-image's bundled
photos (astronaut, coffee, chelsea, rocket, immunohistochemistry; camera, coins, moon in
grey). Installed with the ``test`` extra. Variants:

- ``photo``: colour patches as they are;
- ``narrow``: each channel squeezed into 42% of the range around a per-channel level,
  with pixel noise (sigma 2 levels): the narrow, noisy channels issue 14 was found on;
- ``grey``: grey photos (three equal channels).
"""

from __future__ import annotations

import numpy as np
import torch

COLOUR = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
GREY = ("camera", "coins", "moon")
VARIANTS = ("photo", "narrow", "grey")


def _photos(grey: bool) -> list[np.ndarray]:
    import skimage.data

    if grey:
        out = [getattr(skimage.data, n)() for n in GREY]
        return [np.repeat(a[..., None], 3, axis=2) for a in out]
    from sklearn.datasets import load_sample_images

    out = list(load_sample_images().images)
    out += [getattr(skimage.data, n)()[..., :3] for n in COLOUR]
    return out


def patches(variant: str, n: int, seed: int, size: int = 32) -> torch.Tensor:
    """``n`` uint8 patches ``(n, 3, size, size)``, random crops (and flips) of the photos."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    rng = np.random.default_rng(seed)
    photos = _photos(variant == "grey")
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        a = photos[int(rng.integers(len(photos)))]
        y = int(rng.integers(0, a.shape[0] - size + 1))
        x = int(rng.integers(0, a.shape[1] - size + 1))
        p = a[y:y + size, x:x + size]
        out[i] = p[:, ::-1] if rng.random() < 0.5 else p
    if variant == "narrow":
        level = np.array([0.35, 0.30, 0.25])
        u = out.astype(np.float64) / 255.0
        u = level + 0.42 * u + rng.normal(0.0, 2.0 / 255.0, u.shape)
        out = np.clip(np.round(u * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
