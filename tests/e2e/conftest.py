"""Fixtures for the end-to-end tests; the harness is e2e_stack.py."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Iterator

import pytest
from e2e_stack import HEALTHY_WARMUP_S, ROOT, Stack, running_stack, wait_until


@pytest.fixture(scope="session")
def demo_help() -> str:
    res = subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", "demo", "--help"], capture_output=True,
        text=True, timeout=120, cwd=str(ROOT),
    )
    if res.returncode != 0 or "--fault" not in res.stdout:
        pytest.fail(f"`prepwatch demo` is not available: {res.stdout}{res.stderr}")
    return res.stdout


@pytest.fixture(scope="session")
def healthy_stack(tmp_path_factory: pytest.TempPathFactory, demo_help: str) -> Iterator[Stack]:
    """The default demo (every extra on, no fault), scraped until the session ends.

    Yields once the demo has trained for ``HEALTHY_WARMUP_S``, so every rate window holds
    a steady state and the first passes' worker start-up is behind it.
    """
    with running_stack(tmp_path_factory.mktemp("healthy"), ["--seconds", "0"]) as stack:
        wait_until(lambda: bool(stack.query("prepwatch_steps_total > 0")), 90,
                   "the demo's first steps in Prometheus")
        first = time.time()
        while time.time() - first < HEALTHY_WARMUP_S:
            assert stack.demo.alive(), stack.diagnostics()
            time.sleep(1)
        yield stack
