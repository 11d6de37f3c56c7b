"""The engine's thresholds, read from the alert rules (alerts/*.rules.yml).

One source of truth: every number the engine compares against is parsed out of the
rule expressions that Prometheus evaluates, so an edit to a rule changes the verdict too.
A threshold whose pattern no longer matches its rule raises :class:`RulesChanged` naming
it (tests/test_diagnosis_rules.py fails before a user sees a wrong verdict).

Read without a YAML library (the agent must not need one): the rule files are plain
block YAML; we need each alert's ``expr``, ``for`` and ``severity``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

ENV_ALERTS_DIR = "PREPWATCH_ALERTS_DIR"
NUM = r"([0-9]+(?:\.[0-9]+)?)"

# threshold name -> (alert, regex on its expr whose group 1 is the number)
SPEC: dict[str, tuple[str, str]] = {
    "wait_warning": ("PrepwatchInputBoundWarning", r"data_wait_seconds:ratio_rate5m\s*>\s*" + NUM),
    "wait_critical": ("PrepwatchInputBoundCritical", r"data_wait_seconds:ratio_rate5m\s*>\s*" + NUM),
    "gpu_fed": ("PrepwatchInputBoundWarning", r"gpu_busy_seconds:ratio_rate5m\s*>=\s*" + NUM),
    "starved_wait": ("PrepwatchGpuStarvedByInput", r"data_wait_seconds:ratio_rate5m\s*>\s*" + NUM),
    "starved_gpu_busy": ("PrepwatchGpuStarvedByInput", r"gpu_busy_seconds:ratio_rate5m\s*<\s*" + NUM),
    "spread_ratio": ("PrepwatchStepTimeUnstable", r"p50_rate10m\s*\)\s*>\s*" + NUM),
    "spread_min_steps": ("PrepwatchStepTimeUnstable", r">=\s*" + NUM),
    "straggler_ratio": ("PrepwatchStragglerRank", r"p50_rate10m\)\s*\)\s*>\s*" + NUM),
    "straggler_min_ranks": ("PrepwatchStragglerRank", r"count by \(run\).*?>=\s*" + NUM),
    "stalled_s": ("PrepwatchTrainingStalled", r"last_step_timestamp_seconds > 0\)\)\s*>\s*" + NUM),
    "open_p99_s": ("PrepwatchFileOpenLatencyHigh", r"p99_rate5m\s*>\s*" + NUM),
    "open_min_rate": ("PrepwatchFileOpenLatencyHigh", r"file_opens:rate5m\s*>=\s*" + NUM),
    "storm_opens": ("PrepwatchSmallFileMetadataStorm", r"file_opens:rate5m\s*>=\s*" + NUM),
    "storm_bytes": ("PrepwatchSmallFileMetadataStorm", r"file_opens:rate5m\)\s*<\s*" + NUM),
    "storm_p99_s": ("PrepwatchSmallFileMetadataStorm", r"p99_rate5m\s*>\s*" + NUM),
    "reads_min_rate": ("PrepwatchSmallFileSlowReads", r"file_read_seconds_count:rate5m\s*>=\s*" + NUM),
    "reads_bytes": ("PrepwatchSmallFileSlowReads", r"file_read_bytes:mean_rate5m\s*<\s*" + NUM),
    "reads_mean_s": ("PrepwatchSmallFileSlowReads", r"file_read_seconds:mean_rate5m\s*>\s*" + NUM),
    "input_straggler": ("PrepwatchInputStragglerRank", r"excess_ratio_rate5m\s*>\s*" + NUM),
    "compute_straggler": ("PrepwatchComputeStragglerRank", r"deficit_ratio_rate5m\s*>\s*" + NUM),
    "compute_unless_input": ("PrepwatchComputeStragglerRank", r"excess_ratio_rate5m\s*>\s*" + NUM),
    "regression_ratio": ("PrepwatchThroughputRegression", r"\]\s*offset\s*\w+\)\s*\)\s*>\s*" + NUM),
    "regression_iqr": ("PrepwatchThroughputRegression", r"\)\s*>\s*" + NUM + r"\s*\*\s*\("),
    "regression_baseline_h": ("PrepwatchThroughputRegression", r"p50_rate10m\[" + NUM + r"h\]"),
    "regression_offset_m": ("PrepwatchThroughputRegression", r"h\]\s*offset\s*" + NUM + r"m\)"),
    "regression_history_m": ("PrepwatchThroughputRegression", r"p50_rate10m\s+offset\s+" + NUM + r"m\)"),
    "recall_drop": ("PrepwatchRareClassRecallDrop", r"drop6h\s*>\s*" + NUM),
    "accuracy_hold": ("PrepwatchRareClassRecallDrop", r"max6h\s*-\s*" + NUM),
    "accuracy_rise": ("PrepwatchRareClassRecallDrop", r"min6h\s*\+\s*" + NUM),
    "gap_excess": ("PrepwatchRareClassAugmentationGap", r"augmentation_gap_excess\s*>\s*" + NUM),
    "gap_stderrs": (
        "PrepwatchRareClassAugmentationGap", r"augmentation_gap_excess\s*>\s*" + NUM + r"\s*\*\s*sqrt"
    ),
    "contract_full": ("PrepwatchInputOffContract", r"ratio_rate10m\s*>\s*" + NUM),
    "contract_min": ("PrepwatchInputOffContract", r"increase10m\s*>=\s*" + NUM),
    "contract_partial": ("PrepwatchInputOffContractPartial", r"ratio_rate10m\s*>\s*" + NUM),
    "misaligned_ratio": ("PrepwatchBoxesMisaligned", r"misaligned_ratio_rate10m\s*>\s*" + NUM),
    "misaligned_min": ("PrepwatchBoxesMisaligned", r"judged_increase10m\s*>=\s*" + NUM),
    "boxes_invalid_ratio": ("PrepwatchBoxesInvalid", r"invalid_ratio_rate10m\s*>\s*" + NUM),
    "boxes_invalid_min": ("PrepwatchBoxesInvalid", r"increase10m\s*>=\s*" + NUM),
    "clips_ratio": ("PrepwatchClipAugmentationInconsistent", r"inconsistent_ratio_rate10m\s*>\s*" + NUM),
    "clips_min": ("PrepwatchClipAugmentationInconsistent", r"judged_increase10m\s*>=\s*" + NUM),
}


class RulesChanged(RuntimeError):
    """A threshold could not be read from its alert rule."""


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_s: float
    severity: str
    file: str


@dataclass(frozen=True)
class Thresholds:
    values: dict[str, float]
    rules: dict[str, Rule]

    def __getattr__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def alerts_dir() -> Path:
    """$PREPWATCH_ALERTS_DIR, the copy shipped in the wheel, or the checkout's alerts/."""
    env = os.environ.get(ENV_ALERTS_DIR)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "alerts", here.parent / "alerts"):
        if any(candidate.glob("*.rules.yml")):
            return candidate
    raise FileNotFoundError(f"no prepwatch alert rules next to the package; set ${ENV_ALERTS_DIR} to alerts/")


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|s|m|h|d)", text):
        total += float(num) * units[unit]
    return total


def parse_rules(text: str, file: str = "") -> dict[str, Rule]:
    """Each alert's expr/for/severity from a rule file (block YAML, as shipped)."""
    rules: dict[str, Rule] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)- alert:\s*(\S+)", lines[i])
        if not m:
            i += 1
            continue
        indent, name = len(m.group(1)), m.group(2)
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s{{0,{indent}}}- ", lines[i]):
            body.append(lines[i])
            i += 1
        expr, for_s, severity = "", 0.0, ""
        for j, line in enumerate(body):
            e = re.match(r"^(\s*)expr:\s*(.*)$", line)
            if e:
                rest = e.group(2).strip()
                if rest in ("|", ">", "|-", ">-"):
                    block = []
                    for nxt in body[j + 1 :]:
                        if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(e.group(1)):
                            break
                        block.append(nxt.strip())
                    expr = "\n".join(block).strip()
                else:
                    expr = rest
            f = re.match(r"^\s*for:\s*(\S+)", line)
            if f:
                for_s = _duration(f.group(1))
            s = re.match(r"^\s*severity:\s*(\S+)", line)
            if s:
                severity = s.group(1).strip("'\"")
        rules[name] = Rule(name, expr, for_s, severity, file)
    return rules


def load_rules(directory: Optional[Path] = None) -> dict[str, Rule]:
    directory = directory or alerts_dir()
    rules: dict[str, Rule] = {}
    for path in sorted(Path(directory).glob("*.rules.yml")):
        rules.update(parse_rules(path.read_text(encoding="utf-8"), path.name))
    return rules


def thresholds_from(rules: dict[str, Rule]) -> Thresholds:
    values: dict[str, float] = {}
    for key, (alert, pattern) in SPEC.items():
        rule = rules.get(alert)
        if rule is None:
            raise RulesChanged(f"threshold {key!r}: alert {alert} is not in the rule files")
        m = re.search(pattern, rule.expr, flags=re.S)
        if m is None:
            raise RulesChanged(f"threshold {key!r}: pattern {pattern!r} not in {alert}'s expr")
        values[key] = float(m.group(1))
    return Thresholds(values, rules)


@lru_cache(maxsize=4)
def load(directory: Optional[str] = None) -> Thresholds:
    """Thresholds from the shipped rules (cached)."""
    return thresholds_from(load_rules(Path(directory) if directory else None))
