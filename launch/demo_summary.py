"""Print the demo's result: rate and quality of the trained codec next to the noisy input.

    python launch/demo_summary.py RESULTS_JSON HELDOUT_DIR RUN_DIR

RESULTS_JSON is one ``jicd evaluate`` output (CompressAI layout, one entry); the noisy-input
PSNR is recomputed here with the same seeded noise (``data_pipeline.noise.noisy_at_level``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.__main__ import quiet_library_warnings

quiet_library_warnings()  # before the imports that trigger them

from data_pipeline.noise import noisy_at_level  # noqa: E402
from trainer.codec.imageio import center_crop, load_rgb, psnr_8bit  # noqa: E402

LEVEL = 4


def noisy_input_psnr(heldout: Path) -> float:
    """Mean PSNR of the level-4 noisy images against the clean ones (no coding at all)."""
    values = []
    for path in sorted(heldout.glob("*.png")):
        clean = center_crop(load_rgb(str(path)))
        values.append(psnr_8bit(clean, noisy_at_level(clean, LEVEL, seed=0)))
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    results, heldout, run_dir = Path(argv[0]), Path(argv[1]), Path(argv[2])
    scores = json.loads(results.read_text())["results"]
    print("\n=== jicd demo: noise level 4, held-out photos, real bitstreams ===")
    print(f"noisy input (no coding)     PSNR {noisy_input_psnr(heldout):6.2f} dB")
    print(
        f"jicd decoded (denoised)     PSNR {scores['psnr-rgb'][0]:6.2f} dB   "
        f"MS-SSIM {scores['ms-ssim-rgb'][0]:.4f}   {scores['bpp'][0]:.4f} bpp"
    )
    print(
        f"coding time per image       encode {scores['encoding_time'][0]:.2f} s   "
        f"decode {scores['decoding_time'][0]:.2f} s"
    )
    print(f"checkpoint + export         {run_dir / 'checkpoints'}  {run_dir / 'export/model.pt'}")
    print(f"TensorBoard                 tensorboard --logdir {run_dir / 'tb'}")
    print(f"all results                 {results.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
