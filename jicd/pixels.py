"""Turning any decodable image into 8-bit RGB, and saying what that changed.

One rule for shard writing (:mod:`data_pipeline.shards`) and the codec CLI
(:mod:`jicd.codec.images`), so a photo means the same in training and in use. Light on purpose
(PIL and NumPy only): the CLI calls it before importing torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_NOTICES = {
    "L": "grey image: converted to RGB (R = G = B)",
    "LA": "grey image with an alpha channel: alpha dropped, converted to RGB",
    "RGBA": "alpha channel dropped (transparent pixels keep their stored colour)",
    "RGBa": "alpha channel dropped",
    "P": "palette image: converted to RGB",
    "PA": "palette image with an alpha channel: alpha dropped, converted to RGB",
    "CMYK": "CMYK image: converted to RGB (PIL's conversion, no colour management)",
    "YCbCr": "YCbCr image: converted to RGB",
    "1": "1-bit image: converted to RGB",
}


def png_bit_depth(path: str) -> int:
    """Bits per channel of a PNG file (IHDR byte 24), 8 for anything else.

    PIL opens a 16-bit RGB PNG as mode "RGB" (it keeps the high byte), so only the header says
    the file had more precision.
    """
    with open(path, "rb") as handle:
        header = handle.read(26)
    is_png = header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 26
    return header[24] if is_png else 8


def conversion_notice(img: Image.Image, path: str) -> str | None:
    """What :func:`to_rgb8` changes about ``img`` (opened from ``path``), or None for 8-bit RGB."""
    if img.mode in SIXTEEN_BIT_MODES:
        return "16-bit grey image: rescaled to 8 bits (x / 257) and converted to RGB"
    if img.mode == "F":
        return "floating-point image: clipped to [0, 255] and converted to 8-bit RGB"
    if img.mode == "RGB":
        if img.format == "PNG" and png_bit_depth(path) == 16:
            return "16-bit RGB image: reduced to 8 bits per channel"
        return None
    return _NOTICES.get(img.mode, f"{img.mode} image: converted to 8-bit RGB")


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB version of ``img``; 16-bit grey is rescaled (PIL's ``convert`` would clip it)."""
    if img.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(img, dtype=np.float64) / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    return img.convert("RGB")
