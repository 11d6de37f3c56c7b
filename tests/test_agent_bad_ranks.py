"""A buggy or hostile rank costs only its own series (issue 12, item 3), and a rank that
hangs or loses its socket is reported down, by name (item 6)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import parse, scrape, value, wait_for

from prepwatch.agent.agent import Agent
from prepwatch.agent.rank_reader import RankDropped
from prepwatch.agent.snapshot_validation import MAX_FAMILIES, MAX_HEADER_LINE, MAX_SERIES, SnapshotChecker
from prepwatch.context import Context
from prepwatch.exporter import snapshot
from prepwatch.exporter.rank_link import RankLink
from prepwatch.identity import Identity

ROOT = Path(__file__).resolve().parent.parent


class FakeRank:
    """A real Unix socket in ranks/ that answers every connection with ``payload``,
    optionally one byte every ``dribble`` seconds."""

    def __init__(self, ranks: Path, name: str, payload: bytes, dribble: float = 0.0,
                 identity: dict | None = None) -> None:
        self.path = ranks / f"{name}.sock"
        if identity is not None:
            (ranks / f"{name}.json").write_text(json.dumps(identity))
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(self.path))
        self.sock.listen(16)
        self.payload, self.dribble = payload, dribble
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not self.dribble:
                    conn.sendall(self.payload)
                    return
                for b in self.payload:
                    if self.stop.wait(self.dribble):
                        return
                    conn.send(bytes([b]))
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def snap(identity=None, families=None, lengths=None, body=None) -> bytes:
    """A snapshot in the wire format (prepwatch/exporter/snapshot.py), each part
    overridable: ``body`` replaces the lines of every family, ``lengths`` their stated size."""
    identity = {"run": "bad", "rank": 0} if identity is None else identity
    families = fam(name="prepwatch_steps", sname="prepwatch_steps_total", mtype="counter", value=5) \
        if families is None else families
    out = json.dumps({"v": snapshot.VERSION, "identity": identity}).encode() + b"\n"
    for f in families:
        text = f[5] if body is None else body
        text = text.encode() if isinstance(text, str) else text
        out += json.dumps([*f[:5], len(text) if lengths is None else lengths]).encode() + b"\n" + text
    return out


def fam(name="prepwatch_thing", labels=None, value=1, doc="Thing.", sname=None, mtype="gauge",
        label_names=None, ident='run="bad",rank="0"', end="\n"):
    """One family [name, type, help, unit, label_names, lines], its line written naively
    (no escaping), as a hostile rank could send it."""
    labels = labels or {}
    own = "".join(f',{k}="{v}"' for k, v in labels.items())
    line = f"{sname or name}{{{ident}{own}}} {value}{end}"
    names = [list(labels)] if label_names is None else label_names
    return [[name, mtype, doc, "", names, line]]


BAD = {
    "identity_not_a_dict": snap(identity="rank0"),
    "identity_without_run": snap(identity={"rank": 0}),
    "label_names_not_lists": snap(families=fam(labels={"split": "a"}, label_names=["split"])),
    "label_not_declared": snap(families=fam(labels={"split": "a"}, label_names=[[]])),
    "label_named_twice": snap(families=[["prepwatch_thing", "gauge", "T.", "", [["a", "a"]],
                                         'prepwatch_thing{run="bad",rank="0",a="1",a="2"} 1\n']]),
    "label_value_unescaped_quote": snap(families=fam(labels={"split": 'a"b'})),
    "label_value_forges_a_line": snap(families=fam(
        labels={"split": 'x"} 1\nprepwatch_forged{run="bad",rank="0",split="y'})),
    "help_not_a_string": snap(families=fam(doc=5)),
    "label_name_injection": snap(families=fam(labels={'a="x"} 1\nprepwatch_forged{b': "y"})),
    "metric_name_newline": snap(families=fam(name="prepwatch_x\nprepwatch_forged", sname="prepwatch_x")),
    "label_run_overrides_identity": snap(families=fam(labels={"run": "someone_else"})),
    "another_ranks_identity": snap(families=fam(ident='run="someone_else",rank="0"')),
    "agent_family": snap(families=fam(name="prepwatch_agent_ranks")),
    "sample_of_another_family": snap(families=fam(sname="prepwatch_forged")),
    "value_not_a_number": snap(families=fam(value="forged")),
    "line_without_newline": snap(families=fam(end="")),
    "line_too_long": snap(families=fam(labels={"split": "x" * 20000})),
    "lengths_do_not_add_up": snap(lengths=3),
    "text_not_utf8": snap(body=b"\xff\xfe" * 20),
    "not_json": b"{\"v\": 3, \"identity\"\n",
    "ends_inside_a_block": snap()[:-3],
    "family_header_not_a_list": snap()[:snap().index(b"\n") + 1] + b'{"name": "x"}\n',
    "too_many_families": snap(families=[f for i in range(MAX_FAMILIES + 1)
                                        for f in fam(name=f"prepwatch_f{i}", labels={})]),
    "too_many_series": snap(families=[["prepwatch_many", "gauge", "M.", "", [["i"]], "".join(
        f'prepwatch_many{{run="bad",rank="0",i="{i}"}} 1\n' for i in range(MAX_SERIES + 1))]]),
}


def test_the_fixture_snapshot_itself_is_served(agent_with_good_rank):
    """The hostile cases above differ from a snapshot the agent serves in one thing each."""
    agent = agent_with_good_rank
    fine = FakeRank(agent.state_dir / "ranks", "4000009",
                    snap(families=fam(labels={"split": 'a \\"b\\" c'})))
    try:
        s = scrape(agent.url, timeout=30)
        assert value(s, "prepwatch_thing", run="bad", rank="0", split='a "b" c') == 1
        assert value(s, "prepwatch_agent_rank_drops_total", reason="invalid_snapshot") is None
    finally:
        fine.close()


@pytest.fixture
def agent_with_good_rank(tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    ctx = Context.create(Identity(run="good"))
    ctx.registry.counter("prepwatch_steps_total", "Steps.").labels().inc(7)
    link = RankLink(agent.state_dir, ctx.registry, {"run": "good", "rank": 0}, lambda c, e: None)
    yield agent
    link.close()
    agent.close()


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_snapshot_drops_only_that_rank(agent_with_good_rank, case):
    agent = agent_with_good_rank
    bad = FakeRank(agent.state_dir / "ranks", "4000001", BAD[case], identity={"run": "bad", "rank": 0})
    try:
        with urllib.request.urlopen(agent.url, timeout=30) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        s = parse(body)  # the whole exposition still parses
        assert value(s, "prepwatch_steps_total", run="good", rank="0") == 7
        assert "forged" not in body and "someone_else" not in body
        assert value(s, "prepwatch_steps_total", run="bad") is None
        assert value(s, "prepwatch_thing") is None
        types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types))
        assert value(s, "prepwatch_rank_up", run="bad", rank="0") == 0
        assert value(s, "prepwatch_internal_errors_total", component="aggregator") == 1
        assert sum(v for (n, lab), v in s.items() if n == "prepwatch_agent_rank_drops_total") == 1
    finally:
        bad.close()


@pytest.mark.parametrize("where", ["first_line", "family_header"])
def test_a_header_without_end_stops_being_read_at_its_cap(where):
    """A header line that never ends is refused once it passes MAX_HEADER_LINE, not buffered
    to the snapshot's size cap (32 MiB, per rank, each scrape)."""
    chunk, taken = b"x" * 65536, []

    def endless():
        if where == "family_header":
            yield snap().split(b"\n", 1)[0] + b"\n"
        for i in range(1024):  # 64 MiB if nothing stops reading
            taken.append(i)
            yield chunk

    with pytest.raises(RankDropped) as err:
        SnapshotChecker().decode(endless())
    assert err.value.reason == "invalid_snapshot" and "longer than" in str(err.value)
    assert len(taken) * len(chunk) <= MAX_HEADER_LINE + 2 * len(chunk)


def test_an_oversized_snapshot_is_cut_off(agent_with_good_rank):
    agent = agent_with_good_rank
    bad = FakeRank(agent.state_dir / "ranks", "4000002", snap(body=b" " * (33 << 20)))
    try:
        s = scrape(agent.url, timeout=30)
        assert value(s, "prepwatch_steps_total", run="good") == 7
        assert value(s, "prepwatch_agent_rank_drops_total", reason="too_large") == 1
    finally:
        bad.close()


@pytest.mark.parametrize("case", ["label_value_forges_a_line", "another_ranks_identity",
                                  "label_run_overrides_identity", "line_too_long"])
def test_a_rank_accepted_once_is_checked_again_when_a_block_changes(agent_with_good_rank, case):
    """The agent does not re-check a block identical to one it accepted from that rank at the
    last scrape (snapshot_validation.SnapshotChecker); a rank that earned that once must not
    slip a changed block through it."""
    agent = agent_with_good_rank
    rank = FakeRank(agent.state_dir / "ranks", "4000008", snap(families=fam(labels={"split": "a"})),
                    identity={"run": "bad", "rank": 0})
    try:
        for _ in range(2):  # accepted, then served from the checker's memory
            s = scrape(agent.url, timeout=30)
            assert value(s, "prepwatch_thing", run="bad", rank="0", split="a") == 1
        rank.payload = BAD[case]
        with urllib.request.urlopen(agent.url, timeout=30) as resp:
            body = resp.read().decode()
        s = parse(body)
        assert "forged" not in body and "someone_else" not in body
        assert value(s, "prepwatch_thing") is None
        assert value(s, "prepwatch_rank_up", run="bad", rank="0") == 0
        assert value(s, "prepwatch_steps_total", run="good", rank="0") == 7
    finally:
        rank.close()


def test_a_rank_that_dribbles_cannot_hold_the_scrape(agent_with_good_rank):
    agent = agent_with_good_rank
    slow = FakeRank(agent.state_dir / "ranks", "4000003", snap(), dribble=0.5,
                    identity={"run": "slow", "rank": 3})
    try:
        t0 = time.monotonic()
        s = scrape(agent.url, timeout=20)
        assert time.monotonic() - t0 < 10  # one 2 s deadline per rank, not per read
        assert value(s, "prepwatch_steps_total", run="good") == 7
        assert value(s, "prepwatch_rank_up", run="slow", rank="3", reason="timeout") == 0
        assert value(s, "prepwatch_agent_rank_drops_total", reason="timeout") == 1
    finally:
        slow.close()


RANK = textwrap.dedent("""
    import time, prepwatch
    w = prepwatch.start(run="hung")
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


def _rank(state: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREPWATCH_AGENT_DIR=str(state))
    proc = subprocess.Popen([sys.executable, "-c", RANK], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_a_stopped_rank_is_reported_down_by_name_and_comes_back(tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    proc = _rank(agent.state_dir)
    try:
        wait_for(lambda: value(scrape(agent.url), "prepwatch_rank_up", run="hung") == 1)
        proc.send_signal(signal.SIGSTOP)  # hung: alive, its socket accepts, nothing answers
        s = scrape(agent.url, timeout=20)
        assert value(s, "prepwatch_rank_up", run="hung", rank="0", reason="timeout") == 0
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: value(scrape(agent.url), "prepwatch_rank_up", run="hung", reason="") == 1)
    finally:
        _stop(proc)
        agent.close()


def test_a_rank_whose_socket_was_deleted_is_reported_down(tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    proc = _rank(agent.state_dir)
    try:
        wait_for(lambda: value(scrape(agent.url), "prepwatch_rank_up", run="hung") == 1)
        for f in (agent.state_dir / "ranks").iterdir():
            f.unlink()  # a cleaner, or `rm -rf` of the state directory's contents
        s = scrape(agent.url)
        assert value(s, "prepwatch_rank_up", run="hung", rank="0", reason="socket_gone") == 0
    finally:
        _stop(proc)
        agent.close()


def test_a_rank_that_died_before_the_agent_was_restarted_is_reported_lost(tmp_path):
    state = tmp_path / "state"
    first = Agent(state, port=0, sources=False)
    proc = _rank(first.state_dir)
    wait_for(lambda: value(scrape(first.url), "prepwatch_rank_up", run="hung") == 1)
    _stop(proc)  # SIGKILL: no goodbye
    first.close()  # the agent is stopped (SIGTERM) before it scraped the dead rank
    second = Agent(state, port=0, sources=False)
    try:
        s = scrape(second.url)
        assert value(s, "prepwatch_rank_up", run="hung", rank="0", reason="exited") == 0
    finally:
        second.close()


def test_a_rank_that_unregistered_and_is_still_exiting_is_not_reported_lost(tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False)
    link = RankLink(agent.state_dir, Context.create(Identity(run="bye")).registry,
                    {"run": "bye", "rank": 0}, lambda c, e: None)
    try:
        wait_for(lambda: value(scrape(agent.url), "prepwatch_rank_up", run="bye") == 1)
        link.close()  # a clean stop; this process (its pid) lives on, as an exiting job does
        s = scrape(agent.url)
        assert value(s, "prepwatch_rank_up", run="bye") is None
        assert not list((agent.state_dir / "ranks").glob("*.sock"))
    finally:
        agent.close()


def test_a_reader_that_stops_reading_is_hung_up_on(tmp_path):
    """Only the agent's user can connect to a rank's socket, but one of its processes that
    connects and never reads must not hold a thread of the training process for ever."""
    from prepwatch.agent import snapshot_validation
    from prepwatch.agent.rank_reader import rank_chunks

    agent = Agent(tmp_path / "state", port=0, sources=False)
    ctx = Context.create(Identity(run="big"))
    gauge = ctx.registry.gauge("prepwatch_wide", "More than a socket buffer.", ["i"])
    with socket.socket(socket.AF_UNIX) as probe:  # the rank's side of the link buffers this much
        buffered = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    series = max(20_000, 4 * buffered // 40)  # a line is ~50 bytes: 4x the buffer and more
    if series > MAX_SERIES:
        pytest.skip(f"a {buffered}-byte socket buffer holds more than a rank may send")
    for i in range(series):
        gauge.labels(str(i)).set(i)
    link = RankLink(agent.state_dir, ctx.registry, {"run": "big", "rank": 0}, lambda c, e: None,
                    write_timeout=2.0)
    try:
        before = set(threading.enumerate())
        stalled = socket.socket(socket.AF_UNIX)
        stalled.connect(str(link.path))  # and never reads

        def sender() -> list[threading.Thread]:
            return [t for t in threading.enumerate()
                    if t not in before and "process_request" in t.name and t.is_alive()]
        wait_for(sender)
        thread = sender()[0]
        thread.join(timeout=30)
        assert not thread.is_alive()  # hung up on, though the reader is still connected
        _identity, families = snapshot_validation.decode(b"".join(rank_chunks(link.path, 30)))
        assert any(f.name == "prepwatch_wide" for f in families)  # the next reader is served
        stalled.close()
    finally:
        link.close()
        agent.close()
