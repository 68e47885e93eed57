#!/bin/bash
# Runs the tests that once failed at random (issue: a rank aborting after a clean run; the
# teardown that fixed it) N times in a row and counts the failures (make stress; docs/testing.md).
# Usage: tests/stress/repeat.sh [N] [LOG]   (each iteration's output is kept when it fails)
set -u
cd "$(dirname "$0")/../.."
runs=${1:-50}
log=${2:-stress.log}
python=${PYTHON:-.venv/bin/python}
tests=(
  "tests/training/test_paired_training.py::test_two_ranks_train_on_paired_shards_and_validate_on_the_real_noise"
  tests/training/test_teardown.py
)
pass=0 fail=0 start=$(date +%s)
for i in $(seq 1 "$runs"); do
  if timeout 900 "$python" -m pytest -q -p no:cacheprovider "${tests[@]}" > "$log.$i" 2>&1; then
    pass=$((pass + 1)); rm -f "$log.$i"
  else
    fail=$((fail + 1))
  fi
  echo "iteration $i: $pass passed, $fail failed, $(( $(date +%s) - start )) s" >> "$log"
done
echo "RESULT: $pass passed, $fail failed of $runs in $(( $(date +%s) - start )) s" \
  "(revision $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" | tee -a "$log"
[ "$fail" -eq 0 ]
