"""``--levels none`` evaluates a plain codec on clean images as CompressAI's ``eval_model`` does.

The same Cheng2020Anchor weights and images through ``jicd evaluate --levels none`` and through
``python -m compressai.utils.eval_model checkpoint``: the same real bitstream sizes (bpp) and
the same ``psnr-rgb`` (both round to 8 bit; eval_model computes in float32, jicd in float64).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020Anchor
from PIL import Image

pytestmark = pytest.mark.slow


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_none_level_matches_compressai_eval_model(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # eval_model's MS-SSIM needs sides > 160
        coarse = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
        Image.fromarray(coarse).resize((256, 192), Image.BICUBIC).save(images / f"img{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "anchor.pth.tar"
    torch.save(Cheng2020Anchor(N=128).state_dict(), weights)

    theirs = json.loads(run("compressai.utils.eval_model", "checkpoint", str(images),
                            "-a", "cheng2020-anchor", "-p", str(weights)))["results"]  # fmt: skip
    export = tmp_path / "anchor.pt"
    run("jicd", "import-checkpoint", str(weights), "-o", str(export), "--quality", "1")
    run("jicd", "evaluate", "--checkpoint", str(export), "--dataset", f"gen={images}",
        "--levels", "none", "--output", str(tmp_path / "out"))  # fmt: skip
    ours = json.loads(next((tmp_path / "out").glob("*-levelnone.json")).read_text())["results"]

    assert ours["bpp"] == pytest.approx(theirs["bpp"], rel=1e-12)
    assert ours["psnr-rgb"] == pytest.approx(theirs["psnr-rgb"], abs=1e-4)
