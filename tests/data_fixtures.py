"""Generated image folders and shards shared by the data-pipeline tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.shards import ShardConfig, prepare_shards
from trainer.testing import smooth_image

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
BACKENDS = [
    pytest.param("dali", marks=pytest.mark.skipif(not HAS_DALI, reason="DALI not installed")),
    "torch",
]
"""Both training backends, for ``pytest.mark.parametrize`` (DALI skipped where missing)."""
MIN_SIDE = 96
"""Tests keep images small: min_side 96 with 64-pixel patches."""
PATCH = 64
MAXCOUNT = 7
"""Small shards so that the splits have several, uneven shards."""


def _save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def make_image_folder(root: Path, n_good: int = 30) -> dict[str, list[str]]:
    """Write a mixed folder; return the relative paths of good, small and corrupt images.

    Good images (sides 96-300) come as baseline JPEG, grey JPEG, RGB/RGBA/16-bit PNG, WebP, BMP,
    some with dots in their names and in sub-folders; 4 images are smaller than ``MIN_SIDE``;
    one JPEG is truncated and one ``.png`` holds random bytes; a text file must be ignored.
    """
    rng = np.random.default_rng(1234)
    good: list[str] = []
    for i in range(n_good):
        height, width = (int(v) for v in rng.integers(MIN_SIDE, 301, size=2))
        array = smooth_image(height, width, seed=i)
        kind = i % 6
        name = [
            f"photo_{i:02d}.jpg",
            f"sub/dir.with.dots/img.{i:02d}.v2.jpg",
            f"png/rgb_{i:02d}.png",
            f"png/rgba.{i:02d}.png",
            f"other/pic_{i:02d}.webp",
            f"other/pic_{i:02d}.bmp",
        ][kind]
        if kind == 3:
            alpha = np.full((height, width, 1), 200, np.uint8)
            array = np.concatenate([array, alpha], axis=-1)
        extra = {"quality": 90} if name.endswith(".jpg") else {}
        extra = {"lossless": True} if name.endswith(".webp") else extra
        _save(root / name, array, **extra)
        good.append(name)
    grey = smooth_image(120, 150, seed=99)[..., 0]
    _save(root / "grey.jpg", grey, quality=90)
    good.append("grey.jpg")
    deep = smooth_image(110, 130, seed=98)[..., 0].astype(np.uint16) * 257
    Image.fromarray(deep).save(root / "png/deep16.png")  # 16-bit grey PNG
    good.append("png/deep16.png")
    small = []
    for j, (h, w) in enumerate([(64, 200), (300, 80), (95, 95), (64, 64)]):
        small.append(f"small/s.{j}.jpg")
        _save(root / small[-1], smooth_image(h, w, seed=50 + j), quality=90)
    whole = (root / "photo_00.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "garbage.png").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "readme.txt").write_text("not an image\n")
    return {"good": sorted(good), "small": sorted(small), "corrupt": ["broken.jpg", "garbage.png"]}


def make_mixed_shards(tmp: Path, **overrides) -> tuple[Path, dict]:
    """Image folder + shards under ``tmp``; returns the shard folder and the manifest."""
    src = tmp / "images"
    make_image_folder(src)
    cfg = ShardConfig(min_side=MIN_SIDE, maxcount=MAXCOUNT, val_fraction=0.2, workers=1)
    for name, value in overrides.items():
        setattr(cfg, name, value)
    out = tmp / "shards"
    return out, prepare_shards(src, out, cfg)


def corrupt_in_place(location, start: int = 64) -> None:
    """Zero a member's bytes from ``start`` to 64 bytes before its end (a
    :class:`~data_pipeline.manifest.SampleLocation`): same size, index still valid, the image no
    longer decodes — what bit rot on shared storage does."""
    with open(location.tar_path, "r+b") as handle:
        handle.seek(location.offset + start)
        handle.write(b"\0" * (location.size - start - 64))
