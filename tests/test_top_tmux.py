"""`prepwatch top` in a real terminal (tmux): it draws the starved demo's verdict and the
rank table in place, and q quits it with status 0."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_url, require_binary, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_top_in_tmux_shows_the_finding_and_q_quits(tmp_path):
    tmux = require_binary("tmux")
    pytest.importorskip("rich")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PREPWATCH_SUMMARY="0")
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prepwatch.cli.main",
            "demo",
            "--port",
            "0",
            "--seconds",
            "0",
            "--fault",
            "starvation",
            "--status-every",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    sock = str(tmp_path / "tmux.sock")
    done = tmp_path / "exit-status"

    def t(*args: str) -> str:
        return subprocess.run([tmux, "-S", sock, *args], capture_output=True, text=True, timeout=30).stdout

    try:
        url = read_url(demo.stdout)
        top = " ".join(
            shlex.quote(a)
            for a in [
                sys.executable,
                "-m",
                "prepwatch.cli.main",
                "top",
                url,
                "--every",
                "1",
            ]
        )
        t(
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "170",
            "-y",
            "45",
            f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(str(ROOT))} {top}; "
            f"echo $? > {shlex.quote(str(done))}; sleep 60",
        )
        screen = wait_for(
            lambda: (lambda s: s if "[input_bound." in s else None)(t("capture-pane", "-p", "-t", "top")),
            timeout=150,
            every=1.0,
        )
        assert "prepwatch top" in screen and url in screen
        assert "input-bound" in screen.lower() and "try first:" in screen
        assert "data-wait" in screen and "demo" in screen  # the rank table
        assert "q or Ctrl-C to quit" in screen
        (tmp_path / "screen.txt").write_text(screen)
        keep = os.environ.get("PREPWATCH_KEEP_TOP_SCREEN")
        if keep:
            Path(keep).write_text(t("capture-pane", "-p", "-e", "-t", "top"))
        t("send-keys", "-t", "top", "q")
        wait_for(lambda: done.exists() and done.read_text().strip(), timeout=20)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run([tmux, "-S", sock, "kill-server"], capture_output=True)
        demo.terminate()
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        demo.stdout.close()
