"""Run the real `prepwatch demo` and read its verdict in top, summary.json and the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from helpers import read_url

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def prepwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=str(ROOT),
    )


def top_key(text: str) -> str:
    """The first finding key `prepwatch top` printed, or 'healthy'."""
    m = re.search(r"(?:CRITICAL|WARNING|INFO) \[([\w.]+)\]", text)
    if m:
        return m.group(1)
    return "healthy" if "HEALTHY: no finding" in text else ""


def run_demo(tmp_path: Path, fault: str | None, seconds: float, expect: str | tuple[str, ...]) -> dict:
    """Run the demo; poll `prepwatch top --once` while it trains until it names ``expect``;
    then return {"top": key, "summary": key, "report": key, "summary_data": ...}."""
    summary = tmp_path / f"summary-{fault or 'healthy'}.json"
    cmd = [
        sys.executable,
        "-m",
        "prepwatch.cli.main",
        "demo",
        "--port",
        "0",
        "--seconds",
        str(seconds),
        "--status-every",
        "1000",
        "--summary",
        str(summary),
    ]
    if fault:
        cmd += ["--fault", fault]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=str(ROOT)
    )
    seen: list[str] = []
    try:
        url = read_url(proc.stdout)
        while proc.poll() is None:
            res = prepwatch("top", url, "--once", "--every", "3")
            m = re.search(r"ranks \d+\s+([\d.]+) steps/s", res.stdout)
            if res.returncode == 0 and m and float(m.group(1)) > 0:  # judged once it trains
                seen.append(top_key(res.stdout))
                if seen[-1].startswith(expect) if expect != "healthy" else len(seen) >= 3:
                    break
            time.sleep(1)
        out, err = proc.communicate(timeout=seconds + 180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    data = json.loads(summary.read_text())
    assert "prepwatch summary: run 'demo'" in err
    html = tmp_path / "report.html"
    res = prepwatch("report", "--summary", str(summary), "-o", str(html))
    assert res.returncode == 0, res.stderr
    m = re.search(r'data-finding="([^"]*)"', html.read_text())
    return {
        "top": seen[-1] if expect != "healthy" and seen else ",".join(sorted(set(seen))),
        "summary": data["findings"][0]["key"] if data["findings"] else "healthy",
        "report": (m.group(1) or "healthy") if m else "",
        "stderr": err,
        "data": data,
    }
