"""Tiny models and generated images shared by the evaluation, report and codec-CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from compressai.models import Cheng2020Anchor
from PIL import Image

from jicd.models import ModelConfig, build_model_from_config
from jicd.models.weights import save_export

TINY_CHANNELS = 16


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
    model.ga1[-1].weight.mul_(50.0)
    model.ga1[-1].bias.mul_(50.0)
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
