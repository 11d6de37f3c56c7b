"""Run every benchmark, print one table, write bench/results/latest.json.

    python -m bench.run            # full
    python -m bench.run --quick    # fewer rounds (smoke)
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

MODULES = (
    "bench_loader", "bench_agent", "bench_sources", "bench_class_health", "bench_normalization",
    "bench_boxes", "bench_scrape", "bench_scrape_load", "bench_ddp", "bench_series",
)


def _flatten(prefix: str, value: object, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    results: dict = {"machine": {"python": platform.python_version(), "cpu": platform.processor(),
                                 "when": time.strftime("%Y-%m-%d %H:%M:%S")}}
    for name in MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as exc:
            print(f"# {name}: not available ({exc})")
            continue
        t0 = time.perf_counter()
        try:
            results[name] = module.run(quick=quick)
        except TypeError:
            results[name] = module.run()
        print(f"# {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    flat: dict = {}
    _flatten("", {k: v for k, v in results.items() if k != "machine"}, flat)
    width = max(len(k) for k in flat) if flat else 10
    for key, value in flat.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"# wrote {out / 'latest.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
