"""Generated photos, shards and tiny models: the one set of helpers of the tests, the benchmarks
and the GPU check (``python -m trainer.gpu_check``).

Everything is seeded and small. Photos are smooth (a coarse random colour field upsampled
bicubically, optionally with fine texture) so that codecs and loaders have natural-looking
content to work on; ``structured_image`` adds gradients for the codec tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from compressai.models import Cheng2020Anchor
from PIL import Image

from data_pipeline.contract import TrainBatch
from data_pipeline.shards import ShardConfig, prepare_shards
from jicd.models import ModelConfig, build_model_from_config
from jicd.models.weights import save_export

TINY_CHANNELS = 16
PHOTO_KINDS = {"png": ".png", "rgba": ".png", "jpg": ".jpg", "grey": ".jpg", "jp2": ".tif"}
"""How :func:`write_photos` stores each kind (TIFF sources become lossless JPEG 2000 shards)."""


def smooth_image(
    height: int, width: int, seed: int | np.random.Generator, grid: int = 6, texture: float = 6.0
) -> np.ndarray:
    """``(H, W, 3)`` uint8: a ``grid × grid`` random colour field upsampled bicubically, plus
    Gaussian texture of std ``texture`` (0: none).

    Args:
        seed: a seed, or a generator to draw from (consecutive images of one stream).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    coarse = (rng.random((grid, grid, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse, mode="RGB").resize((width, height), Image.Resampling.BICUBIC)
    if not texture:
        return np.asarray(image)
    fine = rng.normal(0.0, texture, (height, width, 3))
    return np.clip(np.asarray(image, dtype=np.float64) + fine, 0, 255).astype(np.uint8)


def as_mode(array: np.ndarray, kind: str) -> Image.Image:
    """The photo as the PIL image a kind stores: grey (``L``), RGBA (alpha 200) or RGB."""
    image = Image.fromarray(array)
    if kind == "grey":
        return image.convert("L")
    if kind == "rgba":
        image = image.convert("RGBA")
        image.putalpha(200)
    return image


def write_photos(
    folder: Path,
    count: int,
    side: int,
    kinds: tuple[str, ...] = ("png",),
    texture: float = 0.0,
    grid: int = 5,
    stem: str = "img_{index:03d}",
    seed: int = 0,
) -> Path:
    """``count`` square photos in ``folder``, the kinds of :data:`PHOTO_KINDS` in turn.

    Args:
        stem: file name without suffix, formatted with ``index`` and ``kind``.
        seed: one generator for all photos, drawn in order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        kind = kinds[index % len(kinds)]
        image = as_mode(smooth_image(side, side, rng, grid, texture), kind)
        path = folder / (stem.format(index=index, kind=kind) + PHOTO_KINDS[kind])
        if kind in ("jpg", "grey"):
            image.save(path, quality=92)
        else:
            image.save(path)
    return folder


def make_shards(
    root: Path,
    count: int = 24,
    side: int = 96,
    min_side: int = 64,
    val_fraction: float = 0.1,
    maxcount: int = 5,
    **photos: object,
) -> Path:
    """Photos (:func:`write_photos`, ``photos`` passed on) in ``root/images`` sharded into
    ``root/shards``; returns the shard folder (made once: an existing one is reused)."""
    out = root / "shards"
    if (out / "manifest.json").is_file():
        return out
    src = write_photos(root / "images", count, side, **photos)  # type: ignore[arg-type]
    cfg = ShardConfig(
        min_side=min_side, val_fraction=val_fraction, maxcount=maxcount, workers=1,
        lossless_format="jp2",
    )  # fmt: skip
    prepare_shards(src, out, cfg)
    return out


def synthetic_batch(batch: int, patch: int, device: torch.device | str = "cpu") -> TrainBatch:
    """A seeded :class:`~data_pipeline.contract.TrainBatch` of uniform noise images (timing
    the step without a loader): ``clean``, its flip as ``augmented``, keys ``0 … B-1``."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, patch, patch, generator=generator).to(device)
    keys = [str(i) for i in range(batch)]
    return {"clean": clean, "augmented": clean.flip(-1), "keys": keys, "bad_samples": []}


def make_export(path: Path, quality: int = 1, seed: int = 0) -> Path:
    """A randomly initialised jicd model (N=16) saved with ``save_export``."""
    torch.manual_seed(seed)
    cfg = ModelConfig(preset="jicd", quality=quality, channels=TINY_CHANNELS)
    save_export(path, build_model_from_config(cfg), cfg)
    return path


@torch.no_grad()
def make_lively_export(
    path: Path, preset: str = "jicd", quality: int = 1, channels: int = TINY_CHANNELS, seed: int = 0
) -> Path:
    """:func:`make_export` with ``ga1``'s last layer scaled ×50: most latent symbols non-zero,
    so the entropy parameters (and the CDF indices) vary from position to position."""
    torch.manual_seed(seed)
    cfg = ModelConfig(preset=preset, quality=quality, channels=channels)
    model = build_model_from_config(cfg)
    for parameter in model.ga1[-1].parameters():  # the weight and bias of g_a's last conv
        parameter.mul_(50.0)
    save_export(path, model, cfg)
    return path


def make_anchor_state_dict(path: Path, seed: int = 0) -> Path:
    """A plain CompressAI Cheng2020Anchor(N=16) state dict (the sequential comparator)."""
    torch.manual_seed(seed)
    torch.save(Cheng2020Anchor(N=TINY_CHANNELS).state_dict(), path)
    return path


def make_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A smooth 8-bit RGB image (gradients + a few blobs) so the codec has structure to code."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        np.sin(6 * rows * rng.uniform(0.5, 2) + 4 * cols * rng.uniform(0.5, 2) + c)
        for c in range(3)
    ]
    array = ((np.stack(channels, axis=-1) * 0.5 + 0.5) * 255).round().astype(np.uint8)
    Image.fromarray(array, mode="RGB").save(path)
    return path


def make_images(folder: Path, height: int, width: int, count: int = 2) -> Path:
    """``folder`` with ``img0.png`` … ``img{count-1}.png`` from :func:`make_image` (seeds 0…)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        make_image(folder / f"img{seed}.png", height, width, seed=seed)
    return folder
