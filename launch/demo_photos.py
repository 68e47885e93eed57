"""Write the demo's photos: public-domain / CC0 images that ship inside scikit-image.

    python launch/demo_photos.py OUT_DIR

Creates ``OUT_DIR/train`` (overlapping 288-pixel tiles of five photos, so a tiny data set still
gives many distinct crops) and ``OUT_DIR/heldout`` (two whole photos never seen in training).
Terms, from the docstrings in ``skimage/data/_fetchers.py``: astronaut, rocket and
hubble_deep_field public domain; coffee, chelsea and retina CC0; immunohistochemistry CC0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN = ("rocket", "hubble_deep_field", "retina", "immunohistochemistry", "coffee")
HELDOUT = ("astronaut", "chelsea")
TILE, STRIDE = 288, 160


def load(name: str) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` photo from scikit-image's bundled data (no network)."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def tiles(image: np.ndarray) -> list[np.ndarray]:
    """Overlapping ``TILE``-pixel squares covering ``image``."""
    h, w = image.shape[:2]
    ys = range(0, max(h - TILE, 0) + 1, STRIDE)
    xs = range(0, max(w - TILE, 0) + 1, STRIDE)
    return [image[y : y + TILE, x : x + TILE] for y in ys for x in xs]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python launch/demo_photos.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    count = 0
    for name in TRAIN:
        for i, tile in enumerate(tiles(load(name))):
            Image.fromarray(tile).save(out / "train" / f"{name}_{i:02d}.png")
            count += 1
    for name in HELDOUT:
        Image.fromarray(load(name)).save(out / "heldout" / f"{name}.png")
    print(f"demo photos: {count} training tiles, {len(HELDOUT)} held-out images in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
