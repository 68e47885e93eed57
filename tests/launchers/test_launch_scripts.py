"""The shell launchers (launch/*.sh, launch/slurm/*.sbatch) pass shellcheck and are executable.

Their behaviour is tested for real in test_multinode.py and test_slurm.py; this catches quoting
and portability mistakes on paths those runs do not take (e.g. multi-node Slurm on real hosts).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dev_tools import dev_tool

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("launch/*.sh"), *ROOT.glob("launch/slurm/*.sbatch")])


def test_there_are_launchers() -> None:
    names = {path.name for path in SCRIPTS}
    assert {"train_multinode.sh", "train.sbatch", "evaluate.sbatch"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_passes_shellcheck(script: Path) -> None:
    done = subprocess.run(
        [dev_tool("shellcheck"), "--shell=bash", "--severity=style", str(script)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_is_executable_with_a_shebang(script: Path) -> None:
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(ROOT)}"
    assert script.read_text().startswith("#!"), "sbatch refuses scripts without a shebang"
