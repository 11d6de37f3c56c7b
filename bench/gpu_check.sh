#!/usr/bin/env bash
# Thin wrapper: run bench/gpu_check.py from the repository root with this checkout first on
# the path. PYTHON picks the interpreter (default: python3). Arguments pass through
# (--quick, --window SECONDS, --no-tests). The 300 s timeout is the issue's budget.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 300 "${PYTHON:-python3}" bench/gpu_check.py "$@"
