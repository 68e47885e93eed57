"""Planning paper-scale runs from a measured step-time table (``trainer.reproduce.gpu_plan``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jicd.errors import UserError
from trainer.reproduce.gpu_plan import choose, makespan, plan_options, read_step_times

# The first H200 measurements (seconds per step, one process): N=128/192 at batch 16 and 4.
H200 = {(128, 16): 0.069, (128, 4): 0.054, (192, 16): 0.116, (192, 4): 0.057}
SIX = [1, 2, 3, 4, 5, 6]
STEPS = 769_800


def test_lpt_makespan() -> None:
    assert makespan([3, 3, 2, 2, 2], slots=2) == 7
    assert makespan([5], slots=4) == 5


def test_the_gpus_per_run_follow_the_measured_scaling() -> None:
    options = {o.gpus_per_run: o for o in plan_options(SIX, STEPS, 24, H200)}
    assert set(options) == {1, 4}  # batch 16 and 4 measured: 1 or 4 GPUs per run
    one, four = options[1], options[4]
    # 24 GPUs: six 4-GPU runs side by side take the batch-4 time; six 1-GPU runs the batch-16
    # time. 0.054 s < 0.116 s at N=192, so 4 GPUs per run finish sooner, for 4x the GPU-hours.
    assert four.wall_hours < one.wall_hours and four.gpu_hours > one.gpu_hours
    # 4 GPUs: the six runs one after another on 4 GPUs, or 4 at a time on one GPU each.
    options = {o.gpus_per_run: o for o in plan_options(SIX, STEPS, 4, H200)}
    assert choose(list(options.values())).gpus_per_run == 1
    hours = {n: STEPS * H200[(n, 16)] / 3600 for n in (128, 192)}  # 14.8 h and 24.8 h
    # Longest first on 4 GPUs: three N=192 and one N=128 run, then two N=128 runs follow.
    assert options[1].wall_hours == pytest.approx(hours[192] + hours[128])
    assert options[4].wall_hours == pytest.approx(STEPS * 3 * (0.054 + 0.057) / 3600)


def test_a_table_is_read_from_gpu_step_json_and_bad_files_are_one_line(tmp_path: Path) -> None:
    rows = [{"channels": 128, "batch": 16, "path": "ddp", "step_s": 0.07, "skipped": 0},
            {"channels": 128, "batch": 16, "path": "graphs", "step_s": 0.03, "skipped": 0},
            {"channels": 128, "batch": 16, "path": "full", "step_s": 0.01, "skipped": 3},
            {"path": "regional", "error": "exit -11"}]  # fmt: skip
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"rows": rows}))
    assert read_step_times(good) == {(128, 16): 0.03}  # fastest real row; skipped steps don't count
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a benchmarks/gpu_step.py table"):
        read_step_times(tmp_path / "bad.json")


def test_reproduce_paper_dry_run_prints_the_chosen_plan(tmp_path: Path) -> None:
    table = tmp_path / "times.json"
    rows = [{"channels": n, "batch": b, "path": "ddp", "step_s": t} for (n, b), t in H200.items()]
    table.write_text(json.dumps({"rows": rows}))
    done = subprocess.run(
        [sys.executable, "-m", "jicd", "reproduce", "table1", "--scale", "paper", "--dry-run",
         "--study", str(tmp_path / "study"), "--shards", "S", "--pretrained", "P",
         "--dataset", "kodak=K", "--step-times", str(table), "--gpus", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 GPU(s) per run, 4 run(s) at a time" in done.stdout and "<- chosen" in done.stdout
    assert "--gpus-per-node=1 " in done.stdout
