"""Print the demo's result: rate and quality of the trained codec next to the noisy input.

    python launch/demo_summary.py RESULTS_DIR RUN_DIR

RESULTS_DIR is the ``jicd evaluate --name demo`` output: its per-image rows already hold the
decoded and the noisy-input PSNR, both measured against the clean image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python launch/demo_summary.py RESULTS_DIR RUN_DIR", file=sys.stderr)
        return 2
    results, run_dir = Path(argv[0]), Path(argv[1])
    rows = json.loads((results / "demo-per_image.json").read_text())
    level = rows[0]["level"]
    print(f"\n=== jicd demo: noise level {level}, held-out photos, real bitstreams ===")
    print(f"noisy input (no coding)     PSNR {mean(rows, 'psnr-noisy'):6.2f} dB")
    print(
        f"jicd decoded (denoised)     PSNR {mean(rows, 'psnr-rgb'):6.2f} dB   "
        f"MS-SSIM {mean(rows, 'ms-ssim-rgb'):.4f}   {mean(rows, 'bpp'):.4f} bpp"
    )
    print(
        f"coding time per image       encode {mean(rows, 'encoding_time'):.2f} s   "
        f"decode {mean(rows, 'decoding_time'):.2f} s"
    )
    print(f"checkpoint + export         {run_dir / 'checkpoints'}  {run_dir / 'export/model.pt'}")
    print(f"TensorBoard                 tensorboard --logdir {run_dir / 'tb'}")
    print(f"all results                 {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
