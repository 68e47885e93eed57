"""A tiny SIDD-shaped dataset: scene folders of NOISY/GT pairs and validation-block .mat files.

SIDD itself is not available here; these fixtures have its layout and names, with generated
pixels: ``clean`` is a smooth image and ``noisy = clean + stored noise`` (uint8 arithmetic), so
tests can check that loaders keep the two pixel-aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SCENES = ("0001_001_S6_00100_00060_3200_L", "0002_001_GP_00800_00350_5500_N",
          "0003_002_IP_01600_01000_4400_H")  # fmt: skip


def smooth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = (rng.random((6, 6, 3)) * 200 + 20).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def noise_of(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signed noise that keeps clean + noise inside 0..255."""
    noise = rng.integers(-20, 21, clean.shape)
    return np.clip(clean.astype(int) + noise, 0, 255) - clean.astype(int)


def make_sidd(root: Path, side: int = 160, broken: bool = True) -> Path:
    """``root/Data/<scene>/{NOISY,GT}_SRGB_01{0,1}.PNG``; with ``broken`` one GT is missing and
    one pair has mismatched sizes. Returns the dataset root (``root``)."""
    rng = np.random.default_rng(0)
    for s, scene in enumerate(SCENES):
        folder = root / "Data" / scene
        folder.mkdir(parents=True)
        for entry in ("010", "011"):
            clean = smooth(rng, side, side + 16 * s)
            noisy = (clean.astype(int) + noise_of(clean, rng)).astype(np.uint8)
            if broken and s == 1 and entry == "011":
                noisy = noisy[:-8]  # mismatched sizes
            Image.fromarray(noisy).save(folder / f"NOISY_SRGB_{entry}.PNG")
            if not (broken and s == 2 and entry == "010"):  # a missing GT
                Image.fromarray(clean).save(folder / f"GT_SRGB_{entry}.PNG")
    return root


def make_validation_mats(folder: Path, scenes: int = 2, blocks: int = 3, side: int = 64) -> Path:
    """``Validation{Noisy,Gt}BlocksSrgb.mat`` with uint8 ``(scenes, blocks, side, side, 3)``."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    clean = np.stack(
        [np.stack([smooth(rng, side, side) for _ in range(blocks)]) for _ in range(scenes)]
    )
    noisy = (clean.astype(int) + noise_of(clean, rng)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    savemat(folder / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})
    return folder
