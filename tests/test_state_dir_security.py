"""Another local user against the state directory and the rank sockets (issue 12, item 2).

Run as root, a second user is real: `setpriv` drops to nobody, so ownership and SO_PEERCRED
are checked by the kernel, as on a shared node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from helpers import scrape, value, wait_for

from prepwatch.agent.agent import Agent
from prepwatch.context import Context
from prepwatch.exporter.rank_link import RankLink
from prepwatch.identity import Identity
from prepwatch.statedir import UnsafeDirectoryError

ROOT = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as a second local user",
)


def as_nobody(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *cmd], check=True, capture_output=True, text=True, **kw)


@pytest.fixture
def public_tmp():
    """A /tmp of our own: world-writable and sticky, as /tmp is (pytest's tmp_path is not
    reachable by another user)."""
    pub = Path(tempfile.mkdtemp(prefix="prepwatch-test-pub-", dir="/tmp"))
    os.chmod(pub, 0o1777)
    yield pub
    shutil.rmtree(pub, ignore_errors=True)


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "root-owned.txt"
    path.write_text("root's data\n")
    return path


def test_agent_refuses_a_default_state_dir_another_user_created(public_tmp, victim):
    state = public_tmp / "prepwatch-0"
    as_nobody("mkdir", "-p", "-m", "0777", str(state / "ranks"))
    as_nobody("chmod", "0777", str(state))
    as_nobody("ln", "-s", str(victim), str(state / ".write-test"))
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env.update(TMPDIR=str(public_tmp), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "prepwatch.cli.main", "agent", "--port", "0"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert str(state) in out.stderr and "65534 (nobody)" in out.stderr and "0777" in out.stderr
    assert "--state-dir" in out.stderr
    assert victim.read_text() == "root's data\n"


def test_agent_refuses_ranks_writable_by_others_even_in_its_own_dir(tmp_path):
    state = tmp_path / "state"
    (state / "ranks").mkdir(parents=True, mode=0o700)
    os.chmod(state / "ranks", 0o777)
    with pytest.raises(UnsafeDirectoryError, match=r"ranks.*writable by group and others.*0777"):
        Agent(state, port=0, sources=False)


def test_a_planted_identity_temp_symlink_is_not_followed(tmp_path, victim):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    try:
        planted = agent.state_dir / "ranks" / f"{os.getpid()}.json.tmp"
        planted.symlink_to(victim)
        link = RankLink(agent.state_dir, Context.create(Identity(run="r")).registry,
                        {"run": "r", "rank": 0}, lambda c, e: None)
        try:
            assert victim.read_text() == "root's data\n"
            assert json.loads(link.identity_path.read_text()) == {"run": "r", "rank": 0}
        finally:
            link.close()
    finally:
        agent.close()


FORGER = textwrap.dedent("""
    import json, socket, sys
    line = 'prepwatch_steps_total{run="p2good",rank="0"} 999999\\n'
    snap = json.dumps({"v": 2, "identity": {"run": "p2good", "rank": 0}, "families": [
        ["prepwatch_steps", "counter", "Steps.", "", [[]], len(line)]]}) + "\\n" + line
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sys.argv[1]); srv.listen()
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept(); conn.sendall(snap.encode()); conn.close()
""")


def test_a_rank_socket_served_by_another_user_is_not_trusted(tmp_path, public_tmp):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    forger = subprocess.Popen([*NOBODY, sys.executable, "-c", FORGER, str(public_tmp / "f.sock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert forger.stdout.readline().strip() == "ready"
        # Swapped in for a rank's socket (root moves it: the kernel still knows who listens).
        os.rename(public_tmp / "f.sock", agent.state_dir / "ranks" / f"{forger.pid}.sock")
        s = scrape(agent.url)
        assert value(s, "prepwatch_steps_total", run="p2good") is None
        assert value(s, "prepwatch_agent_rank_drops_total", reason="foreign_peer") == 1
        assert value(s, "prepwatch_internal_errors_total", component="aggregator") == 1
    finally:
        forger.kill()
        forger.wait()
        forger.stdout.close()
        agent.close()


def test_the_same_users_rank_is_still_served(tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    ctx = Context.create(Identity(run="mine"))
    ctx.registry.counter("prepwatch_steps_total", "Steps.").labels().inc(3)
    link = RankLink(agent.state_dir, ctx.registry, {"run": "mine", "rank": 0}, lambda c, e: None)
    try:
        s = wait_for(lambda: (s := scrape(agent.url)) and value(s, "prepwatch_rank_up", run="mine") and s)
        assert value(s, "prepwatch_steps_total", run="mine", rank="0") == 3
    finally:
        link.close()
        agent.close()
