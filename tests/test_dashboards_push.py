"""`prepwatch dashboards push` against a local server speaking Grafana's HTTP API.

The server implements the endpoints grafana-client calls for a push (folder list and
create, dashboard get by uid and upsert) with Grafana's semantics: numeric ids and
versions assigned by the server, 404 for a missing uid, 412 for a uid clash without
``overwrite``, 401 for wrong credentials. Every request is recorded with its headers.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from runbook_links import ROOT

from prepwatch.cli.main import main
from prepwatch.tools.grafana_push import connection_reason, default_dashboards_dir, folder_uid_for

TOKEN = "glsa_test_token"
BASIC = ("admin", "s3cret")


class FakeGrafana:
    def __init__(self, auth_header: str, prefix: str = "") -> None:
        self.auth_header = auth_header
        self.prefix = prefix
        self.requests: list[dict[str, Any]] = []
        self.folders: list[dict[str, Any]] = []
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid"}
        self._next_id = 1
        self.lock = threading.Lock()

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any):
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        if not path.startswith(self.prefix + "/api/"):
            return 404, {"message": "not found"}
        path = path[len(self.prefix):].split("?", 1)[0]
        if headers.get("authorization") != self.auth_header:
            return 401, {"message": "Unauthorized"}
        if method == "GET" and path == "/api/folders":
            return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders]
        if method == "POST" and path == "/api/folders":
            uid = body.get("uid") or f"auto{self.new_id()}"
            if any(f["uid"] == uid or f["title"] == body["title"] for f in self.folders):
                return 409, {"message": "a folder with the same name or uid already exists"}
            folder = {"id": self.new_id(), "uid": uid, "title": body["title"]}
            self.folders.append(folder)
            return 200, folder
        m = re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path)
        if method == "GET" and m:
            stored = self.dashboards.get(m.group(1))
            if stored is None:
                return 404, {"message": "Dashboard not found"}
            dash = stored["dashboard"]
            return 200, {"dashboard": copy.deepcopy(dash), "meta": {
                "folderUid": stored["folderUid"], "url": f"/d/{dash['uid']}/x",
                "version": dash["version"]}}
        if method == "POST" and path == "/api/dashboards/db":
            dash = copy.deepcopy(body["dashboard"])
            if not any(f["uid"] == body.get("folderUid") for f in self.folders):
                return 400, {"message": "folder not found"}
            existing = self.dashboards.get(dash["uid"])
            if existing and not body.get("overwrite"):
                return 412, {"status": "name-exists", "message": "uid exists"}
            dash["id"] = existing["dashboard"]["id"] if existing else self.new_id()
            dash["version"] = existing["dashboard"]["version"] + 1 if existing else 1
            self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"]}
            return 200, {"id": dash["id"], "uid": dash["uid"], "status": "success",
                         "version": dash["version"], "url": f"/d/{dash['uid']}/x"}
        return 404, {"message": f"no route {method} {path}"}

    def writes(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if r["method"] != "GET"]


def _serve(fake: FakeGrafana) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def _do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake.lock:
                status, answer = fake.handle(self.command, self.path, headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _do  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def grafana(request) -> Iterator[tuple[FakeGrafana, str]]:
    auth, prefix = getattr(request, "param", (f"Bearer {TOKEN}", ""))
    fake = FakeGrafana(auth, prefix)
    server, thread = _serve(fake)
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _basic() -> str:
    return "Basic " + base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()


def _push(url: str, *extra: str) -> int:
    return main(["dashboards", "push", "--grafana-url", url, *extra])


def _repo_dashboards() -> dict[str, dict[str, Any]]:
    return {
        d["uid"]: d for d in
        (json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json")))
    }


def test_push_creates_then_is_idempotent(grafana, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    fake, url = grafana
    assert _push(url, "--token", TOKEN) == 0
    first = capsys.readouterr().out
    expected = _repo_dashboards()
    assert set(fake.dashboards) == set(expected)
    for uid, dash in expected.items():
        stored = fake.dashboards[uid]["dashboard"]
        assert {k: v for k, v in stored.items() if k not in ("id", "version")} == {
            k: v for k, v in dash.items() if k not in ("id", "version")}
        assert stored["version"] == 1
    assert [f["title"] for f in fake.folders] == ["prepwatch"]
    assert all(d["folderUid"] == fake.folders[0]["uid"] for d in fake.dashboards.values())
    assert first.count("created") == len(expected)
    assert f"{url}/d/prepwatch-input-pipeline/x" in first

    writes_before = len(fake.writes())
    assert _push(url, "--token", TOKEN) == 0
    second = capsys.readouterr().out
    assert second.count("unchanged") == len(expected)
    assert len(fake.writes()) == writes_before, "a second push must not write anything"
    assert len(fake.folders) == 1
    assert all(d["dashboard"]["version"] == 1 for d in fake.dashboards.values())
    # every request carried the token, as a Bearer header
    assert fake.requests and all(
        r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in fake.requests
    )


def test_changed_dashboard_is_updated_in_place(grafana, tmp_path: Path, capsys) -> None:
    fake, url = grafana
    assert _push(url, "--token", TOKEN) == 0
    dash = _repo_dashboards()["prepwatch-input-pipeline"]
    dash["title"] = "Training input pipeline (edited)"
    (tmp_path / "input-pipeline.json").write_text(json.dumps(dash))
    capsys.readouterr()
    assert _push(url, "--token", TOKEN, "--dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("updated")
    stored = fake.dashboards["prepwatch-input-pipeline"]["dashboard"]
    assert stored["title"] == "Training input pipeline (edited)"
    assert stored["version"] == 2
    assert len([d for d in fake.dashboards.values()]) == len(_repo_dashboards())


@pytest.mark.parametrize("grafana", [(_basic(), "/grafana")], indirect=True)
def test_basic_auth_sub_path_and_existing_folder(grafana, capsys) -> None:
    fake, url = grafana
    fake.folders.append({"id": 99, "uid": "team-ml", "title": "ML platform"})
    assert _push(url, "--user", BASIC[0], "--password", BASIC[1], "--folder", "ML platform") == 0
    assert len(fake.folders) == 1, "an existing folder of that title is reused"
    assert all(d["folderUid"] == "team-ml" for d in fake.dashboards.values())
    assert all(r["path"].startswith("/grafana/api/") for r in fake.requests)
    assert all(r["headers"].get("authorization") == _basic() for r in fake.requests)
    # moving to another folder is an update, not a duplicate
    capsys.readouterr()
    assert _push(url, "--user", BASIC[0], "--password", BASIC[1], "--folder", "Training") == 0
    assert "updated" in capsys.readouterr().out
    assert {f["title"] for f in fake.folders} == {"ML platform", "Training"}
    new_uid = folder_uid_for("Training")
    assert all(d["folderUid"] == new_uid for d in fake.dashboards.values())


def test_wrong_token_is_reported(grafana, capsys) -> None:
    fake, url = grafana
    assert _push(url, "--token", "wrong") == 1
    err = capsys.readouterr().err
    assert "Unauthorized" in err and "--token" in err
    assert not fake.dashboards


def test_token_from_environment(grafana, monkeypatch, capsys) -> None:
    fake, url = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert _push(url) == 0
    assert fake.dashboards


def test_unreachable_grafana(capsys) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    assert _push(f"http://127.0.0.1:{port}", "--token", TOKEN, "--timeout", "2") == 1
    # one line, the reason in words: no HTTP client's retry report
    assert capsys.readouterr().err == (
        f"prepwatch: cannot reach Grafana at http://127.0.0.1:{port}: connection refused\n")


def test_an_http_client_connection_error_is_said_in_a_few_words() -> None:
    niquests = pytest.importorskip("niquests")
    try:  # the client's own report, past the reachability check (a Grafana that went away)
        niquests.get("http://127.0.0.1:9/api/folders", timeout=2)
    except niquests.exceptions.ConnectionError as exc:
        assert "Max retries" in str(exc)
        assert connection_reason(exc) == "connection refused"
    else:
        pytest.skip("something answers on port 9 here")


@pytest.mark.parametrize("args, message", [
    (["--user", "admin"], "--user and --password go together"),
    (["--password", "x"], "--password needs --user"),
    (["--token", TOKEN, "--dir", "/nonexistent-dir"], "no *.json dashboards"),
])
def test_bad_arguments_fail_at_once(args: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GRAFANA_PASSWORD", raising=False)
    assert _push("http://127.0.0.1:9", *args) == 2
    assert message in capsys.readouterr().err


def test_bad_url_scheme(capsys) -> None:
    assert _push("127.0.0.1:3000", "--token", TOKEN) == 2
    assert "http://" in capsys.readouterr().err


def test_default_dashboards_dir_is_the_repository_s(monkeypatch) -> None:
    monkeypatch.delenv("PREPWATCH_DASHBOARDS_DIR", raising=False)
    assert default_dashboards_dir().resolve() == (ROOT / "dashboards").resolve()
