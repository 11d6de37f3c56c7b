"""A minimal Prometheus HTTP API client (urllib only): instant and range queries."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from typing import Any, Optional


class PromError(RuntimeError):
    pass


class Prometheus:
    def __init__(self, url: str, basic_auth: Optional[str] = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.auth = basic_auth
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        req = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        if self.auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PromError(f"{self.url}{path}: HTTP {exc.code}") from None
        if body.get("status") != "success":
            raise PromError(f"query failed: {params.get('query')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, t: float) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": expr, "time": f"{t:.3f}"})["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._get(
            "/api/v1/query_range",
            {
                "query": expr,
                "start": f"{start:.3f}",
                "end": f"{end:.3f}",
                "step": f"{max(step, 1.0):.3f}",
            },
        )["result"]
