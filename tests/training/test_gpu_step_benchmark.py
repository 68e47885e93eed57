"""``benchmarks/gpu_step.py --tiny``: the step-time table runs (CPU, N=8) and reads back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_gpu_step_tiny_measures_every_path_and_writes_the_planner_table(tmp_path: Path) -> None:
    out = tmp_path / "times.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--tiny", "--paths",
         "deepspeed", "ddp", "full", "--out", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == ["deepspeed", "ddp", "full"], rows
    for row in rows:
        assert row["step_s"] > 0 and row["skipped"] == 0 and row["flops"] > 0, row
    assert "vs ref" in done.stdout and "util" in done.stdout

    from trainer.reproduce.gpu_plan import read_step_times

    assert set(read_step_times(out)) == {(8, 2)}
