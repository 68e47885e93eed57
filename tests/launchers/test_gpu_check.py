"""``make gpu-check`` runs on a CPU machine: every GPU line SKIPs, the table prints, exit 0.

And it can fail: a node whose nvidia-smi lists a GPU that torch cannot use is a FAIL (exit 1).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GPU_LINES = (
    "DALI mixed loader",
    "DALI resume on GPU",
    "NT-Xent on NCCL",
    "bf16 really on",
    "engines ZeRO 0/1/2 + DDP",
    "DDP resume: Adam step",
    "resume 3+3 vs 6",
    "train_multinode.sh + SIGUSR1",
    "codec GPU-encode -> CPU-decode",
    "integer entropy path GPU <-> CPU exact",
    "paper-scale step time",
)
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU behaviour of the check")


def gpu_check(
    out: Path, *args: str, path: str | None = None, pythonpath: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PY=sys.executable)
    if path is not None:
        env["PATH"] = path
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), "--out", str(out), *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def table_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        for status in ("PASS", "FAIL", "SKIP"):
            if f"  {status}  " in line:
                rows[line.split(f"  {status}  ")[0].strip()] = status
    return rows


@pytest.mark.slow
def test_cpu_run_skips_every_gpu_line_and_exits_0(tmp_path: Path) -> None:
    done = gpu_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    rows = table_rows(done.stdout)
    for name in GPU_LINES:
        statuses = [status for row, status in rows.items() if row.startswith(name)]
        assert statuses == ["SKIP"], (name, statuses)
    assert rows["environment"] == "PASS"
    assert rows["evaluation, more processes than GPUs"] == "PASS"
    assert "passed, 0 failed," in done.stdout
    assert (tmp_path / "table.txt").read_text().strip() == done.stdout.strip()


def test_gpu_that_torch_cannot_use_is_a_fail(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    done = gpu_check(tmp_path / "out", "--only", "GPU visible", path=f"{fake.parent}:/usr/bin:/bin")
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert table_rows(done.stdout) == {"GPU visible to torch": "FAIL"}
    assert "nvidia-smi lists 1 GPU(s) but torch" in done.stdout


def test_without_dali_the_dali_lines_skip_with_the_reason(tmp_path: Path) -> None:
    # A regular package named "nvidia" first on the path hides the installed nvidia.dali (and
    # nothing else: torch finds its CUDA libraries by file path, not by import).
    shadow = tmp_path / "no-dali"
    (shadow / "nvidia").mkdir(parents=True)
    (shadow / "nvidia" / "__init__.py").write_text("")
    done = gpu_check(tmp_path / "out", "--only", "environment", "DALI", pythonpath=shadow)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    rows = table_rows(done.stdout)
    assert rows == {
        "environment": "PASS",
        "DALI mixed loader (5 formats)": "SKIP",
        "DALI resume on GPU across an epoch": "SKIP",
    }, done.stdout
    assert done.stdout.count("DALI not installed (torch loader in use)") == 3


def paper_rows(skipped: int = 0, wait: float = 0.02) -> list[dict]:
    return [
        {"split": "train", "step": step, "loss": 130.0 - step, "skipped_total": skipped,
         "images_per_s": 200.0, "data_wait_fraction": wait}
        for step in (10, 20, 30)
    ]  # fmt: skip


def test_the_paper_scale_line_judges_what_it_timed() -> None:
    from trainer.gpu_check.train_lines import paper_scale_figures

    figures = paper_scale_figures(paper_rows(), batch=16)
    assert figures == {"step_s": 0.08, "images_s": 200.0, "wait": 0.02, "loss": 100.0}
    with pytest.raises(AssertionError, match=r"30 of 30 steps skipped \(losses seen: 120, 110"):
        paper_scale_figures(paper_rows(skipped=30), batch=16)
    with pytest.raises(AssertionError, match="waited on data 62% .*data.num_workers"):
        paper_scale_figures(paper_rows(wait=0.62), batch=16)
