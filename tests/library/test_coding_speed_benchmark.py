"""``benchmarks/coding_speed.py`` runs at a tiny size with both integer kernels side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_integer_rows_agree_bit_for_bit() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "coding_speed.py"), "--channels", "32",
         "--size", "128x128", "--repeats", "1", "--coders", "wavefront", "integer",
         "integer-f64"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()}
    assert {"wavefront", "integer", "integer-f64"} <= rows.keys(), done.stdout
    kernels = next(line for line in done.stdout.splitlines() if "integer-f64/integer" in line)
    assert "size ratio integer/integer-f64 1.00000" in kernels, kernels
    assert "max |x_hat diff| 0.00e+00" in kernels, kernels  # the same integers, the same image
