"""Side-by-side pictures of ``jicd evaluate --save-images`` (and the demo).

One PNG per (set, image, level): clean | noisy | one column per evaluated curve, each with its
bpp and PSNR (against the clean image) underneath and a zoomed crop of the most detailed region.
The curves are compared at similar rates: the first curve shows its lowest-rate point, every
other curve the point whose mean bpp over the set is closest to that one.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from jicd.codec.images import to_uint8
from jicd.evaluation.protocol import PairedImage, noisy_pairs
from jicd.files import write_bytes_atomic
from jicd.names import safe_name

TILE_WIDTH = 384
"""Width of one column in pixels (images are downscaled to it, never upscaled)."""
GAP = 8
LABEL_HEIGHT = 22
CAPTION_HEIGHT = 40


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _point_key(row: dict) -> tuple:
    return (row["checkpoint"], row["quality"])


def choose_points(rows: list[dict], names: list[str]) -> dict[tuple[str, int], dict[str, tuple]]:
    """For every (set, level): curve name → the (checkpoint, quality) point shown.

    Args:
        rows: per-image rows of ``jicd evaluate``.
        names: curve names in column order; the first one sets the target rate.
    """
    mean_bpp: dict[tuple, dict[str, dict[tuple, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        mean_bpp[(row["set"], row["level"])][row["name"]][_point_key(row)].append(row["bpp"])
    chosen: dict[tuple[str, int], dict[str, tuple]] = {}
    for key, curves in mean_bpp.items():
        present = [name for name in names if name in curves]
        if not present:
            continue
        means = {
            name: {point: sum(v) / len(v) for point, v in curves[name].items()} for name in present
        }
        target = min(means[present[0]].values())
        chosen[key] = {name: _nearest(points, target) for name, points in means.items()}
    return chosen


def _nearest(points: dict[tuple, float], target: float) -> tuple:
    """The point whose mean bpp is closest to ``target`` (the first one on a tie)."""
    return min(points, key=lambda p: abs(points[p] - target))


def _detail_box(clean: Tensor, side: int) -> tuple[int, int, int, int]:
    """The ``side``-square block (on a grid) of ``clean (1, 3, H, W)`` with the most texture."""
    gray = clean[0].mean(0)
    height, width = gray.shape
    best, box = -1.0, (0, 0, side, side)
    for top in range(0, height - side + 1, side // 2):
        for left in range(0, width - side + 1, side // 2):
            block = gray[top : top + side, left : left + side]
            score = float(block.std())
            if score > best:
                best, box = score, (left, top, left + side, top + side)
    return box


def _pil(image: Tensor) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(to_uint8(image).numpy()), mode="RGB")


def render_panel(title: str, tiles: list[tuple[str, str, Tensor]], clean: Tensor) -> bytes:
    """PNG bytes: one column per tile ``(label, caption, image (1, 3, H, W))``.

    Each column shows the image (downscaled to :data:`TILE_WIDTH`), the label above, the caption
    below, and the same zoomed crop of every image (its place is boxed on the first column).
    """
    height, width = clean.shape[-2:]
    scale = min(1.0, TILE_WIDTH / width)
    tile_w, tile_h = round(width * scale), round(height * scale)
    box = _detail_box(clean, max(16, min(height, width) // 4))
    font, small = _font(14), _font(13)
    canvas = Image.new(
        "RGB",
        (
            len(tiles) * (tile_w + GAP) + GAP,
            LABEL_HEIGHT * 2 + tile_h + GAP + tile_w + CAPTION_HEIGHT,
        ),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 3), title, fill="black", font=font)
    for index, (label, caption, image) in enumerate(tiles):
        x, y = GAP + index * (tile_w + GAP), 2 * LABEL_HEIGHT
        picture = _pil(image)
        canvas.paste(picture.resize((tile_w, tile_h), Image.Resampling.LANCZOS), (x, y))
        # Nearest-neighbour zoom: show the codec's own pixels, not an interpolation of them.
        zoom = picture.crop(box).resize((tile_w, tile_w), Image.Resampling.NEAREST)
        canvas.paste(zoom, (x, y + tile_h + GAP))
        draw.text((x, LABEL_HEIGHT + 2), label, fill="black", font=font)
        draw.text((x, y + tile_h + GAP + tile_w + 4), caption, fill="black", font=small)
        if index == 0:
            left, top, right, bottom = (round(v * scale) for v in box)
            draw.rectangle((x + left, y + top, x + right, y + bottom), outline="red", width=2)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _caption(row: dict) -> str:
    return f"{row['bpp']:.3f} bpp   {row['psnr-rgb']:.2f} dB"


def _label(row: dict) -> str:
    quality = row.get("quality")
    return row["name"] + (f" (q {quality:g})" if isinstance(quality, int | float) else "")


def write_panels(
    rows: list[dict],
    datasets: dict[str, list[Path | PairedImage]],
    names: list[str],
    seed: int,
    output: Path,
    reconstruct: Callable[[dict, Tensor], Tensor],
) -> list[Path]:
    """Write ``output/{set}-{image stem}-level{L}.png`` for every evaluated image and level.

    Args:
        rows: per-image rows (all ranks').
        datasets: set name → image paths (as evaluated).
        names: curve names in column order.
        seed: the noise seed of the evaluation.
        output: folder of the panels (created).
        reconstruct: ``(row, noisy (1, 3, H, W)) → decoded (1, 3, H, W)``: codes that row again.

    Returns:
        The written paths.
    """
    index = {(r["name"], r["set"], r["image"], r["level"], *_point_key(r)): r for r in rows}
    written = []
    for (set_name, level), points in sorted(
        choose_points(rows, names).items(), key=lambda kv: tuple(map(str, kv[0]))
    ):
        for path in datasets.get(set_name, []):
            found = [index.get((n, set_name, path.name, level, *points[n])) for n in points]
            members = [row for row in found if row]
            if len(members) < len(found):
                continue
            ((_, clean, noisy),) = noisy_pairs(path, [level], seed)
            noisy_row = members[0]
            tiles = [
                ("clean", "reference", clean),
                (f"noisy, level {level}", f"{noisy_row['psnr-noisy']:.2f} dB (not coded)", noisy),
            ]
            tiles += [(_label(r), _caption(r), reconstruct(r, noisy)) for r in members]
            title = f"{set_name} / {path.name}, noise level {level}: PSNR against the clean image"
            written.append(output / (safe_name(f"{set_name}-{path.stem}-level{level}") + ".png"))
            write_bytes_atomic(written[-1], render_panel(title, tiles, clean))
    return written
