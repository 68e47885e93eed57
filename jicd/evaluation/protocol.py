"""The evaluation protocol shared by learned and classical rows: test pairs, scores, record.

What the papers' ``codes/test.py`` + ``codes/utils/util.py`` do, and where CompressAI's
``eval_model`` differs (docs/evaluation.md):

* noise: the seeded noise of the **full** image (``SyntheticTestDataset``), then a center crop to
  a multiple of 64 (``util.cropping``) — cropping first would draw another noise on any image
  whose sides are not multiples of 64 (CLIC);
* ``psnr``: both images truncated to 8 bit through ``ToPILImage`` (the key of their
  ``reports/*.json``); ``psnr-rgb``: CompressAI's rounding. Published baseline / JICDCLS curves
  compare against ``psnr``, CompressAI's against ``psnr-rgb`` (``jicd report``);
* timing: their Tables 2-3 are CPU, one thread, CompressAI's serial coder, 3 runs averaged:
  ``jicd evaluate --coder serial --threads 1 --repeats 3``.

Every results JSON carries :func:`protocol_record`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from jicd.codec.images import BLOCK, center_crop, from_uint8, load_rgb
from jicd.errors import UserError
from jicd.metrics import file_bpp, ms_ssim_float, psnr_8bit, psnr_truncated
from jicd.noise import noisy_at

REAL_LEVEL = "real"
"""The level of a pair whose noise is real (SIDD): no synthetic noise is added."""


@dataclass(frozen=True)
class PairedImage:
    """A test image with a real noisy version: two files, or one block of the SIDD ``.mat``s.

    Attributes:
        name: row name (file name of the noisy image, or ``s<scene>_b<block>``).
        noisy, clean: image files (pairs in a folder).
        blocks: folder of ``Validation{Noisy,Gt}BlocksSrgb.mat`` and ``index`` (scene, block).
    """

    name: str
    noisy: Path | None = None
    clean: Path | None = None
    blocks: Path | None = None
    index: tuple[int, int] = (0, 0)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def load(self) -> tuple[Tensor, Tensor]:
        """``(clean, noisy)``, each ``(1, 3, H, W)`` in [0, 1]."""
        if self.blocks is None:
            return load_rgb(str(self.clean)), load_rgb(str(self.noisy))
        noisy, clean = _blocks(self.blocks)
        scene, block = self.index
        return from_uint8(clean[scene, block]), from_uint8(noisy[scene, block])


@lru_cache(maxsize=1)
def _blocks(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from jicd.sidd import load_validation_blocks

    return load_validation_blocks(folder)  # read once per process: ~500 MB for all 1280 blocks


def dataset_items(folder: str | Path, limit: int | None) -> list[Path | PairedImage]:
    """The images of one ``--dataset SET=DIR``: what ``DIR`` holds decides how it is scored.

    * ``Validation{Noisy,Gt}BlocksSrgb.mat`` (SIDD benchmark): every block, real noise;
    * files named ``…NOISY…`` with a ``…GT…`` twin (SIDD-Medium, block PNGs): real pairs;
    * otherwise the images directly inside: clean photos, noised per ``--levels``.

    Problems with single pairs (a missing twin) are printed and skipped, never fatal.
    """
    import sys

    from jicd.files import IMAGE_SUFFIXES, find_images
    from jicd.sidd import find_named_pairs, is_validation_blocks

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {folder}")
    if is_validation_blocks(root):
        noisy, _ = _blocks(root)
        items: list[Path | PairedImage] = [
            PairedImage(f"s{s:02d}_b{b:02d}", blocks=root, index=(s, b))
            for s in range(noisy.shape[0])
            for b in range(noisy.shape[1])
        ]
        return items[:limit]
    pairs, problems = find_named_pairs(root)
    for line in problems:
        print(f"jicd evaluate: warning: {line}", file=sys.stderr)
    if pairs:
        items = [PairedImage(name, noisy=n, clean=c) for name, n, c in pairs]
        return items[:limit]
    images = find_images(root)
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in dataset folder {folder}")
    items = list(images)
    return items[:limit]


def levels_for(item: Path | PairedImage, levels: list) -> list:
    """The levels an image is scored at: the requested ones, or ``real`` for a real pair."""
    return [REAL_LEVEL] if isinstance(item, PairedImage) else list(levels)


PSNR_CONVENTIONS = {
    "psnr": "authors' truncation: (x*255).byte() as torchvision ToPILImage",
    "psnr-rgb": "CompressAI rounding: (x*255).round()",
}


def noisy_pairs(
    path: str | Path | PairedImage, levels: list, seed: int
) -> list[tuple[int | str, Tensor, Tensor]]:
    """The scored pairs of one test image: the full image noised per level, then cropped.

    Args:
        path: image file (any size >= 64 px a side), or a real pair (then ``levels`` is
            ignored and the one pair is returned at level ``real``).
        levels: test noise levels: 1-4 or a named one (:mod:`jicd.noise.registry`).
        seed: noise seed (the published numbers use 0 for every image).

    Returns:
        ``[(level, clean, noisy)]``, images ``(1, 3, H', W')`` in [0, 1], H' and W' the largest
        multiples of 64, taken from the centre.
    """
    if isinstance(path, PairedImage):
        clean, noisy = path.load()
        if clean.shape != noisy.shape:
            raise UserError(f"{path.name}: noisy {tuple(noisy.shape[-2:])} and clean "
                            f"{tuple(clean.shape[-2:])} differ in size")  # fmt: skip
        return [(REAL_LEVEL, center_crop(clean), center_crop(noisy))]
    image = load_rgb(str(path))
    clean = center_crop(image)
    return [(level, clean, center_crop(noisy_at(image, level, seed))) for level in levels]


def quality_scores(clean: Tensor, x_hat: Tensor, noisy: Tensor, num_bytes: int) -> dict[str, Any]:
    """Rate and quality of one decoded image against the clean one (all ``(1, 3, H, W)``).

    Returns:
        ``bytes``, ``bpp`` (real file size), ``psnr`` (authors' truncation), ``psnr-rgb``
        (CompressAI's rounding), ``ms-ssim-rgb`` (float, data range 1) and ``psnr-noisy``
        (the uncoded noisy input, rounded).
    """
    x_hat = x_hat.clamp(0, 1)
    return {
        "bytes": num_bytes,
        "bpp": file_bpp(num_bytes, clean.shape[-2] * clean.shape[-1]),
        "psnr": psnr_truncated(clean, x_hat),
        "psnr-rgb": psnr_8bit(clean, x_hat),
        "ms-ssim-rgb": ms_ssim_float(clean, x_hat),
        "psnr-noisy": psnr_8bit(clean, noisy),
    }


def protocol_record(coder: str, seed: int, repeats: int, threads: int) -> dict[str, Any]:
    """What a results JSON says about how its numbers were made."""
    return {
        "noise": f"seeded (seed {seed}) noise of the full image, then center crop to a "
        f"multiple of {BLOCK} (the authors' order)",
        "psnr": PSNR_CONVENTIONS["psnr"],
        "psnr-rgb": PSNR_CONVENTIONS["psnr-rgb"],
        "ms-ssim-rgb": "pytorch_msssim, data_range 1, clamped float images (as the authors)",
        "bpp": "8 * bytes of all streams / pixels of the cropped image (real bitstreams)",
        "coder": coder,
        "threads": threads,
        "repeats": repeats,
        "timing": "mean wall time of the repeats; the papers' Tables 2-3: --coder serial "
        "--threads 1 --repeats 3",
    }
