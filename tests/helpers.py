"""Small helpers shared by tests: scrape a real endpoint and index its samples."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Callable, Optional

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(url, timeout=timeout).read().decode()
    return parse(body)


def parse(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> Optional[float]:
    """Sum of samples named ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for (n, lab), v in samples.items():
        if n == name and all(dict(lab).get(k) == val for k, val in labels.items()):
            total += v
            found = True
    return total if found else None


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # not ready yet
            last_exc = exc
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_url(stream, max_lines: int = 20) -> str:
    """The first http(s)://.../metrics URL a command prints (log lines may come first)."""
    import re

    seen = []
    for _ in range(max_lines):
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"(https?://\S+/metrics)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no metrics URL in output: {seen!r}")


def require_binary(name: str) -> str:
    """Path of a Debian-packaged tool the test needs; missing fails under CI, skips elsewhere."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)")
        pytest.skip(f"{name} not installed")
    return path
