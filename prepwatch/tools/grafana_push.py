"""Install or update prepwatch's dashboards in an existing Grafana, idempotently.

For teams whose Grafana is not provisioned from files (docker-compose.yml is). Uses
grafana-client (the ``grafana`` extra). Idempotent: a dashboard whose stored JSON already
equals the file, in the right folder, is left alone (no new version in Grafana's
history); otherwise it is written with ``overwrite`` under its stable uid, so a second
push never duplicates anything. The folder is found by title and created when missing.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import urlsplit, urlunsplit

DEFAULT_FOLDER = "prepwatch"
ENV_DASHBOARDS_DIR = "PREPWATCH_DASHBOARDS_DIR"
# Keys Grafana sets on what it stores; they say nothing about the dashboard's content.
_VOLATILE = ("id", "version")

Credential = Union[str, tuple[str, str], None]


@dataclass(frozen=True)
class PushResult:
    uid: str
    title: str
    action: str  # "created", "updated" or "unchanged"
    url: str


def default_dashboards_dir() -> Path:
    """Where the dashboards are: $PREPWATCH_DASHBOARDS_DIR, packaged data, or the checkout.

    ``prepwatch/dashboards/`` is used when a build ships the JSON inside the package;
    otherwise the repository's ``dashboards/`` next to the package (a source checkout or
    an editable install).
    """
    env = os.environ.get(ENV_DASHBOARDS_DIR)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "dashboards", package.parent / "dashboards"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise FileNotFoundError(
        "no prepwatch dashboards found next to the package; pass --dir PATH to the "
        f"repository's dashboards/ directory (or set ${ENV_DASHBOARDS_DIR})"
    )


def load_dashboards(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory``; each must have a uid and a title."""
    paths = sorted(Path(directory).glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no *.json dashboards in {directory}")
    dashboards = []
    for path in paths:
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
            raise ValueError(f"{path} needs a dashboard object with a uid and a title")
        dashboards.append(dash)
    return dashboards


def credential_from(
    token: Optional[str] = None, user: Optional[str] = None, password: Optional[str] = None
) -> Credential:
    """A grafana-client credential: a token (Bearer) or a (user, password) pair (Basic)."""
    if token and (user or password):
        raise ValueError("give either a token or a user and password, not both")
    if token:
        return token
    if user or password:
        if not (user and password):
            raise ValueError("--user and --password go together")
        return (user, password)
    return None


def folder_uid_for(title: str) -> str:
    """A stable folder uid from its title, so a re-created folder keeps its uid."""
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", title.strip()).strip("-").lower()
    return (slug or "prepwatch")[:40]


def _content(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _VOLATILE}


class DashboardPusher:
    """Pushes dashboards through a ``grafana_client.GrafanaApi``."""

    def __init__(self, api: Any, base_url: str = "") -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")

    def ensure_folder(self, title: str) -> str:
        """The uid of the folder titled ``title``, created when missing."""
        for folder in self.api.folder.get_all_folders() or []:
            if folder.get("title") == title:
                return str(folder["uid"])
        created = self.api.folder.create_folder(title, uid=folder_uid_for(title))
        return str(created["uid"])

    def _existing(self, uid: str) -> Optional[dict[str, Any]]:
        from grafana_client.client import GrafanaClientError

        try:
            return self.api.dashboard.get_dashboard(uid)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise

    def push(self, dashboard: dict[str, Any], folder_uid: str) -> PushResult:
        uid, title = dashboard["uid"], dashboard["title"]
        existing = self._existing(uid)
        if existing is not None:
            meta = existing.get("meta") or {}
            same = _content(existing.get("dashboard") or {}) == _content(dashboard)
            if same and meta.get("folderUid") == folder_uid:
                return PushResult(uid, title, "unchanged", self.base_url + meta.get("url", ""))
        body = {
            "dashboard": dict(dashboard, id=None),
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "prepwatch dashboards push",
        }
        answer = self.api.dashboard.update_dashboard(body) or {}
        action = "created" if existing is None else "updated"
        return PushResult(uid, title, action, self.base_url + str(answer.get("url", "")))

    def push_all(self, dashboards: Sequence[dict[str, Any]], folder: str) -> list[PushResult]:
        folder_uid = self.ensure_folder(folder)
        return [self.push(d, folder_uid) for d in dashboards]


class GrafanaUnreachable(ConnectionError):
    """Nothing answers at the Grafana URL; the message is one line, for a person."""


def check_reachable(url: str, timeout: float) -> None:
    """Open (and close) a TCP connection to the URL's host and port, before anything else.

    A Grafana that is not there is the common first mistake: say so in one line and at
    once, instead of after importing the HTTP client and with its retry report.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except socket.gaierror as exc:
        raise GrafanaUnreachable(f"cannot resolve host {parts.hostname!r} ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise GrafanaUnreachable("connection refused") from None
    except socket.timeout:
        raise GrafanaUnreachable(f"no answer in {timeout:g} s") from None
    except OSError as exc:
        raise GrafanaUnreachable((exc.strerror or str(exc)).lower()) from None


def connection_reason(exc: BaseException) -> str:
    """The reason inside an HTTP client's connection error (its retry report), in a few words."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip().lower() if found else str(exc).splitlines()[0]


def connect(url: str, credential: Credential, timeout: float = 10.0) -> Any:
    """A ``GrafanaApi`` for ``url`` (grafana-client is imported only here)."""
    if not re.match(r"^https?://", url):
        raise ValueError(f"--grafana-url must start with http:// or https://, got {url!r}")
    check_reachable(url, timeout)
    try:
        from grafana_client import GrafanaApi
    except ImportError:
        raise ImportError(
            "`prepwatch dashboards push` needs grafana-client: pip install 'prepwatch[grafana]'"
        ) from None
    if not re.match(r"^https?://", url):
        raise ValueError(f"--grafana-url must start with http:// or https://, got {url!r}")
    # grafana-client appends "api" to the URL's path as is: a sub-path needs its slash.
    parts = urlsplit(url)
    if parts.path and not parts.path.endswith("/"):
        url = urlunsplit(parts._replace(path=parts.path + "/"))
    return GrafanaApi.from_url(url, credential=credential, timeout=timeout)


def push_dashboards(
    url: str, credential: Credential, folder: str = DEFAULT_FOLDER,
    directory: Optional[Path] = None, timeout: float = 10.0,
) -> list[PushResult]:
    """Load the dashboards and push them to the Grafana at ``url``."""
    dashboards = load_dashboards(directory or default_dashboards_dir())
    api = connect(url, credential, timeout)
    return DashboardPusher(api, base_url=url.rstrip("/")).push_all(dashboards, folder)
