"""The in-process endpoint: binding rules, clear set-up errors, read-only routes, auth, TLS."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from helpers import scrape, value

import prepwatch
from prepwatch.context import Context
from prepwatch.exporter.http import MetricsServer, PortInUseError
from prepwatch.identity import Identity


@pytest.fixture(autouse=True)
def _clean():
    prepwatch.stop()
    yield
    prepwatch.stop()


def test_defaults_bind_loopback_and_carry_identity_and_build_info(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "elastic-42")
    w = prepwatch.start(port=0, sources=False)
    assert w.url.startswith("http://127.0.0.1:")
    s = scrape(w.url)
    assert value(s, "prepwatch_build_info", run="elastic-42", rank="3", version=prepwatch.__version__) == 1
    assert prepwatch.start() is w  # idempotent


def test_default_port_is_9400_plus_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.delenv("PREPWATCH_PORT", raising=False)
    try:
        w = prepwatch.start(sources=False)
    except PortInUseError:
        pytest.skip("9402 is taken on this machine")
    assert w.url.endswith(":9402/metrics")


def test_prepwatch_port_is_a_base_that_each_local_rank_adds_to(monkeypatch):
    with socket.socket() as s:  # a free pair of ports: base and base + 1
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    if base >= 65535:
        pytest.skip("no room above the free port")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("PREPWATCH_PORT", str(base - 1))
    try:
        w = prepwatch.start(sources=False)
    except PortInUseError:
        pytest.skip(f"{base} was taken in between")
    assert w.url.endswith(f":{base}/metrics")


def test_taken_port_names_the_local_rank_when_there_is_one(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=r"local rank 3, so every rank needs its own port"):
            prepwatch.start(port=port, sources=False)


def test_taken_port_names_the_port_and_the_option():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} on 127.0.0.1 .*prepwatch.start\(port=...\)"):
            prepwatch.start(port=port, sources=False)


@pytest.mark.parametrize("port", [-1, 70000, "9400", True])
def test_port_out_of_range_is_rejected(port):
    with pytest.raises(ValueError, match="0..65535"):
        prepwatch.start(port=port, sources=False)


def test_unwritable_state_dir_fails_at_setup(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: use a file as parent instead
        target = tmp_path / "afile"
        target.write_text("x")
        target = target / "sub"
    else:
        target = locked / "sub"
    with pytest.raises(PermissionError, match="not writable.*state_dir"):
        prepwatch.start(port=0, state_dir=target, sources=False)


def test_agent_dir_without_agent_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepwatch agent"):
        prepwatch.start(agent_dir=tmp_path, sources=False)


def test_artifacts_are_served_read_only_without_traversal(tmp_path):
    w = prepwatch.start(port=0, state_dir=tmp_path, sources=False)
    (w.artifacts_dir / "overlays").mkdir()
    (w.artifacts_dir / "overlays" / "latest.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.py").write_text("x")
    base = w.url.rsplit("/metrics", 1)[0]
    rel = w.artifacts_dir.relative_to(tmp_path)
    body = urllib.request.urlopen(f"{base}/artifacts/{rel}/overlays/latest.png").read()
    assert body.startswith(b"\x89PNG")
    for bad in ("/artifacts/secret.py", "/artifacts/../../etc/passwd", "/artifacts/%2e%2e/%2e%2e/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + bad)
        assert err.value.code == 404
        err.value.close()
    req = urllib.request.Request(w.url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 501  # nothing accepts writes
    err.value.close()


def test_basic_auth_rejects_a_wrong_password():
    ctx = Context.create(Identity(run="auth"))
    server = MetricsServer(ctx.registry, port=0, basic_auth=("prom", "s3cret"))
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url)
        assert err.value.code == 401
        err.value.close()
        for password, code in (("wrong", 401), ("s3cret", 200)):
            token = base64.b64encode(f"prom:{password}".encode()).decode()
            req = urllib.request.Request(server.url, headers={"Authorization": f"Basic {token}"})
            try:
                assert urllib.request.urlopen(req).status == code
            except urllib.error.HTTPError as exc:
                assert exc.code == code
                exc.close()
    finally:
        server.close()


def test_tls_serves_https_and_plain_http_fails(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"], capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("openssl not available")
    ctx = Context.create(Identity(run="tls"))
    server = MetricsServer(ctx.registry, port=0, tls=(str(cert), str(key)))
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        body = urllib.request.urlopen(server.url, context=context).read()
        assert b"prepwatch_internal_errors_total" in body
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(server.url.replace("https://", "http://"), timeout=5).read()
    finally:
        server.close()


def test_identity_from_torchrun_environment():
    ident = Identity.from_env(env={"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8",
                                   "TORCHELASTIC_RUN_ID": "none", "PREPWATCH_RUN": "bert\nlarge"})
    assert (ident.rank, ident.local_rank, ident.world_size) == (5, 1, 8)
    assert ident.run == "bert_large"  # sanitized: no newline in a label
    with pytest.raises(ValueError, match="RANK"):
        Identity.from_env(env={"RANK": "zero"})


@pytest.mark.parametrize("env,expected", [
    # srun without torchrun: one task per rank
    ({"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16"}, (9, 1, 16)),
    # mpirun (Open MPI)
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
      "OMPI_COMM_WORLD_SIZE": "4"}, (3, 3, 4)),
    # mpirun inside an sbatch allocation: Slurm's variables leak in, MPI's are the ranks'
    ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1", "OMPI_COMM_WORLD_RANK": "5",
      "OMPI_COMM_WORLD_LOCAL_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16"}, (5, 5, 16)),
    # torchrun inside an srun allocation: torchrun's own variables win
    ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "SLURM_PROCID": "0",
      "SLURM_LOCALID": "0", "SLURM_NTASKS": "2"}, (5, 1, 8)),
])
def test_identity_from_launchers_without_torchrun(env, expected):
    ident = Identity.from_env(env=env)
    assert (ident.rank, ident.local_rank, ident.world_size) == expected


def test_default_run_name_keeps_two_slurm_jobs_of_one_script_apart():
    a = Identity.from_env(env={"SLURM_JOB_ID": "1001"})
    b = Identity.from_env(env={"SLURM_JOB_ID": "1002"})
    assert a.run != b.run and a.run.endswith("-1001")
    assert Identity.from_env(env={"SLURM_JOB_ID": "1001", "PREPWATCH_RUN": "bert"}).run == "bert"
