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


def gpu_check(out: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PY=sys.executable)
    if path is not None:
        env["PATH"] = path
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
