"""What the engine returns: findings with evidence, ranked causes and a first fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass
class Evidence:
    """One figure the verdict rests on: ``what`` = ``value`` ``unit``."""

    what: str
    value: float
    unit: str

    def text(self) -> str:
        return f"{self.what} {format_value(self.value, self.unit)}"


@dataclass
class Finding:
    key: str  # stable id, e.g. "input_bound.storage"; tests and compare match on it
    severity: str  # critical | warning | info
    verdict: str  # one line in plain words
    evidence: list[Evidence]
    causes: list[str]  # most likely first
    fix: str  # the one thing to try first
    scope: dict[str, str] = field(default_factory=dict)  # run, rank, class, kind...
    alerts: list[str] = field(default_factory=list)  # rules whose condition holds
    score: float = 0.0  # within a severity, larger first

    @property
    def family(self) -> str:
        return self.key.split(".")[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = [dict(e, text=Evidence(**e).text()) for e in d["evidence"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        ev = [Evidence(e["what"], float(e["value"]), e["unit"]) for e in d.get("evidence", [])]
        return cls(
            d["key"],
            d["severity"],
            d["verdict"],
            ev,
            list(d.get("causes", [])),
            d.get("fix", ""),
            dict(d.get("scope", {})),
            list(d.get("alerts", [])),
            float(d.get("score", 0.0)),
        )


def rank_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), -f.score, f.key))


def format_value(value: Optional[float], unit: str) -> str:
    """Human figures: 0.34 '%' -> '34%', 3072 'B' -> '3.0 KiB', 0.0042 's' -> '4.2 ms'."""
    if value is None or value != value:
        return "n/a"
    if unit == "%":
        return f"{value * 100:.0f}%" if abs(value) >= 0.01 or value == 0 else f"{value * 100:.2f}%"
    if unit == "s":
        a = abs(value)
        if a >= 120:
            return f"{value / 60:.1f} min"
        if a == 0:
            return "0 s"
        if a >= 10:
            return f"{value:.0f} s"
        if a >= 1:
            return f"{value:.2f} s"
        if a >= 1e-3:
            return f"{value * 1e3:.1f} ms"
        return f"{value * 1e6:.0f} us"
    if unit == "B":
        for u, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= f:
                return f"{value / f:.1f} {u}"
        return f"{value:.0f} B"
    if unit == "x":
        return f"{value:.1f}x"
    if unit in ("", "count"):
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
