"""Run probe transforms on their own random numbers, leaving the training job's untouched.

Random transforms draw from the process-global generators (torch's CPU generator for
torchvision, ``random`` and NumPy for others). A probe run in the training process would
otherwise shift the job's random stream, and a job seeded for reproducibility would no
longer reproduce. CUDA generators are neither used nor touched.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch (CPU), ``random`` and NumPy with ``seed``; restore their states on exit."""
    torch_state = torch.random.get_rng_state()
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        torch.random.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)
