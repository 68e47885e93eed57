#!/usr/bin/env bash
# The GPU acceptance check (`make gpu-check`): a PASS/FAIL/SKIP table, exit status 1 on a FAIL.
# On a machine without a GPU every GPU line reports SKIP (the test suite runs it that way).
#   bash launch/gpu_check.sh [--out DIR] [--only NAME...]   PY: the Python (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec "${PY:-.venv/bin/python}" -m trainer.gpu_check "$@"
