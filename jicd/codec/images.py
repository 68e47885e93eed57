"""Image helpers shared by evaluation and the codec CLI: 8-bit RGB in/out, crop, pad.

The latent grid of Cheng2020 is 1/64 of the image (four stride-2 analysis layers, two more in
the hyper-prior), so coded images must be multiples of 64 on both sides. Evaluation
center-crops to that (the published protocol); the CLI pads instead, so any image survives.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from PIL import Image, UnidentifiedImageError

from jicd.errors import UserError
from jicd.files import write_bytes_atomic
from jicd.pixels import conversion_notice, to_rgb8

log = logging.getLogger(__name__)
BLOCK = 64


def load_rgb(
    path: str, notice: Callable[[str], None] | None = None, max_pixels: int | None = None
) -> torch.Tensor:
    """Read an image file as 8-bit RGB (the conversion rule of :mod:`jicd.pixels`).

    Args:
        path: the image file.
        notice: called with one line (``"<path>: <what changed>"``) when the file is not 8-bit
            RGB (grey, alpha, palette, CMYK, 16-bit…); default: a logged warning.
        max_pixels: refuse larger images, from their header, before decoding a pixel (default:
            PIL's decompression-bomb limit only).

    Returns:
        (1, 3, H, W) float32 in [0, 1].

    Raises:
        UserError: the file exists but is not a readable image, or is too large.
    """
    try:
        with Image.open(path) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise UserError(
                    f"{path} is {img.width}x{img.height} = {img.width * img.height} pixels, more "
                    f"than the limit of {max_pixels} (raise it with --max-pixels N)"
                )
            change = conversion_notice(img, path)
            array = np.asarray(to_rgb8(img), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path} is refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, UserError | FileNotFoundError | PermissionError):
            raise
        # PIL raises SyntaxError/ValueError/OSError/EOFError for damaged or truncated data
        raise UserError(f"{path} is not a readable image file ({type(exc).__name__})") from None
    if change is not None:
        (notice or log.warning)(f"{path}: {change}")
    return from_uint8(array)


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32 in [0, 1] (a copy: the array may be read-only)."""
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] → (H, W, 3) uint8, rounding to nearest."""
    return (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0)


def save_png(path: str, x: torch.Tensor) -> None:
    """Write a (1, 3, H, W) float image in [0, 1] as an 8-bit RGB PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x).numpy(), mode="RGB").save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def center_crop(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Center-crop (B, C, H, W) to the largest multiple of ``block`` on each side (no padding)."""
    height, width = x.shape[-2] // block * block, x.shape[-1] // block * block
    if height == 0 or width == 0:
        raise UserError(f"image {tuple(x.shape[-2:])} is smaller than {block} px on a side")
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def pad_to_block(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) symmetrically up to multiples of ``block``.

    Replicated borders are cheap to code (no artificial edge), and :func:`crop_to` removes them.
    """
    pad, _ = compute_padding(x.shape[-2], x.shape[-1], min_div=block)
    return F.pad(x, pad, mode="replicate") if any(pad) else x


def crop_to(x: torch.Tensor, height: int, width: int, block: int = BLOCK) -> torch.Tensor:
    """Undo :func:`pad_to_block` for an original size of (height, width)."""
    _, unpad = compute_padding(height, width, min_div=block)
    return F.pad(x, unpad) if any(unpad) else x
