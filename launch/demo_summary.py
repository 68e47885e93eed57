"""Print where the demo's codec stands: next to the noisy input, AVIF and NLM → AVIF.

    python launch/demo_summary.py RESULTS_DIR RUN_DIR

RESULTS_DIR is the output of ``jicd evaluate --name demo --pipeline avif nlm+avif
--save-images``: per-image rows of every curve on the same held-out photos and noise, all
measured against the clean image, and the side-by-side panels.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path

# The bundled published points (what jicd report reads), without importing torch for them.
REFERENCE_DIR = files("jicd.evaluation") / "reference"


def mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def closest_quality(rows: list[dict], target_bpp: float) -> list[dict]:
    """The rows of the quality whose mean bpp (over the photos) is closest to ``target_bpp``."""
    by_quality: dict = {}
    for row in rows:
        by_quality.setdefault(row["quality"], []).append(row)
    return min(by_quality.values(), key=lambda group: abs(mean(group, "bpp") - target_bpp))


def published_context(level: int) -> str:
    """The paper-scale figures at this level (Kodak, the bundled published points)."""
    parts = []
    for stem, label in (("baseline_eccv22", "ECCV'22 baseline"), ("jicdcls_released", "JICD")):
        points = json.loads(REFERENCE_DIR.joinpath(f"{stem}.json").read_text())["kodak"][str(level)]
        parts.append(f"{label} q1 {points['psnr'][0]:.2f} dB at {points['bpp'][0]:.3f} bpp")
    return (
        f"published, paper-scale q1 models (N=128, Flickr2W, GPUs; Kodak level {level}): "
        + "; ".join(parts)
        + " (authors' truncating PSNR). This demo trains N=32 for 300 CPU steps: far below that."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python launch/demo_summary.py RESULTS_DIR RUN_DIR", file=sys.stderr)
        return 2
    results, run_dir = Path(argv[0]), Path(argv[1])
    ours = json.loads((results / "demo-per_image.json").read_text())
    level, target = ours[0]["level"], mean(ours, "bpp")
    table = [("noisy input (no coding)", ours, "psnr-noisy", False)]
    table.append(("jicd decoded (denoised)", ours, "psnr-rgb", True))
    for name, label in (("avif", "AVIF on the noisy image"), ("nlm+avif", "NLM -> AVIF")):
        path = results / f"{name}-per_image.json"
        if path.is_file():
            rows = closest_quality(json.loads(path.read_text()), target)
            table.append((f"{label} (q {rows[0]['quality']})", rows, "psnr-rgb", True))
    print(f"\n=== jicd demo: noise level {level}, {len(ours)} held-out photos, PSNR vs clean ===")
    for label, rows, psnr_key, coded in table:
        line = f"{label:<32} PSNR {mean(rows, psnr_key):6.2f} dB"
        if coded:
            line += f"   MS-SSIM {mean(rows, 'ms-ssim-rgb'):.4f}   {mean(rows, 'bpp'):.4f} bpp"
        print(line)
    print(published_context(level))
    details = {
        "coding time per image": f"encode {mean(ours, 'encoding_time'):.2f} s   "
        f"decode {mean(ours, 'decoding_time'):.2f} s",
        "checkpoint + export": f"{run_dir / 'checkpoints'}  {run_dir / 'export/model.pt'}",
        "TensorBoard": f"tensorboard --logdir {run_dir / 'tb'}",
        "all results": str(results),
    }
    for key, value in details.items():
        print(f"{key:<27} {value}")
    for panel in sorted(results.glob("panels/*.png")):
        print(f"{'side by side':<27} {panel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
