"""What a ``.jicd`` file may ask of a decoder: bounded geometry, plausible streams, no over-read.

A ``.jicd`` file usually comes from someone else, so everything it claims is checked before any
memory is allocated for it:

* **Geometry** (:func:`check_geometry`): the original size is at least 1×1; the padded size is
  the original rounded up to multiples of 64 and the latent shape is 1/64 of it (what the
  encoder writes, nothing else); the image has at most :func:`max_pixels` pixels. The default
  limit depends on the coder: ``wavefront`` 2^25 pixels (33.5 MP, e.g. 8K UHD 7680×4320),
  ``serial`` 2^22 (4.2 MP, 2048×2048: CompressAI's loop visits one latent position at a time in
  Python). ``--max-pixels N`` or the environment variable ``JICD_MAX_PIXELS`` raise (or
  lower) it for both; the encoder refuses larger images with the same limit, so jicd never
  writes a file it would refuse to read.
* **Streams** (:func:`check_streams`): a rANS stream ends with the coder's 8-byte state, and
  ``S`` symbols coded with the model's tables cost at least ``S · min_bits`` bits, where
  ``min_bits`` is the cost of the most probable symbol of the most peaked table. A file whose
  streams are shorter than that for its claimed latent cannot have come from the encoder.
* **Over-read** (:func:`padded_streams`): CompressAI's rANS decoder reads its stream without
  bounds checks, and a crafted stream can make it read past its end (a segfault, the 171-byte
  file of issue 21). Every stream is handed over followed by zero bytes covering what the
  decoder can consume beyond it: one 32-bit word per symbol and two for its state, 16× the
  stream for bypass-coded runs (each 4-bit run-length nibble of 15 announces 15 more), and 64 KiB
  of slack. That costs ~4 bytes per symbol (1.2 MB for a Kodak image at N = 192).

The time a file can cost is thereby bounded by its pixel count: a garbage stream of an allowed
size is decoded in the time of a real image of that size, and the wavefront coder's index
checksum then refuses it before the synthesis transform runs.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch

from jicd.codec.format import CodedImage
from jicd.codec.images import BLOCK
from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

MAX_PIXELS = {"wavefront": 2**25, "serial": 2**22}
"""Default largest image (pixels) each coder encodes and decodes."""
MAX_PIXELS_ENV = "JICD_MAX_PIXELS"
"""Environment variable overriding :data:`MAX_PIXELS` for every coder."""
LATENT_STRIDE = 64
"""z is 1/64 of the padded image: 4 stride-2 layers in g_a, 2 more in h_a (y is 1/16)."""
HYPER_SCALE = 4
_STATE_BYTES = 8  # a rANS stream ends with the flushed 64-bit state
_PRECISION = 16  # CompressAI's rANS: CDFs of 16-bit precision
_SLACK = 64 * 2**10


def max_pixels(coder: str, override: int | None = None) -> int:
    """The pixel limit for ``coder``: ``override``, else ``$JICD_MAX_PIXELS``, else the default.

    Raises:
        UserError: an override that is not a positive integer.
    """
    if override is None and os.environ.get(MAX_PIXELS_ENV):
        raw = os.environ[MAX_PIXELS_ENV]
        try:
            override = int(raw)
        except ValueError:
            raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not an integer") from None
    if override is not None:
        if override < 1:
            raise UserError(f"the pixel limit must be >= 1, got {override}")
        return override
    return MAX_PIXELS.get(coder, min(MAX_PIXELS.values()))


def max_file_bytes(override: int | None = None) -> int:
    """The largest ``.jicd`` file read: 8 bytes per allowed pixel (streams take < 1) + 1 MiB."""
    return 8 * max(max_pixels(coder, override) for coder in MAX_PIXELS) + 2**20


def check_pixels(height: int, width: int, limit: int, what: str = "image") -> None:
    """Refuse an image of more than ``limit`` pixels (one line saying how to raise the limit)."""
    if height * width > limit:
        raise UserError(
            f"{what} is {width}x{height} = {height * width} pixels, more than the limit of "
            f"{limit} (raise it with --max-pixels N or {MAX_PIXELS_ENV}=N)"
        )


def padded_size(height: int, width: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of 64: what the encoder codes."""
    return -(-height // BLOCK) * BLOCK, -(-width // BLOCK) * BLOCK


def check_geometry(coded: CodedImage, limit: int) -> None:
    """Refuse a header whose sizes the encoder cannot have written, or too large an image.

    Raises:
        UserError: one line naming the field.
    """
    height, width = coded.original_size
    if height < 1 or width < 1:
        raise UserError(f"corrupted .jicd header: image size {width}x{height}")
    if coded.padded_size != padded_size(height, width):
        raise UserError(f"corrupted .jicd header: padded size {coded.padded_size}")
    pad_h, pad_w = coded.padded_size
    if coded.latent_shape != (pad_h // LATENT_STRIDE, pad_w // LATENT_STRIDE):
        raise UserError(f"corrupted .jicd header: latent shape {coded.latent_shape}")
    if len(coded.streams) != 2:
        raise UserError(f"corrupted .jicd header: {len(coded.streams)} streams, expected 2")
    check_pixels(height, width, limit, "the .jicd file's image")


def symbol_counts(coded: CodedImage, model: CompressionModel) -> tuple[int, int]:
    """Symbols in the y and z streams: ``M·4h·4w`` and ``N·h·w`` for latent shape ``(h, w)``."""
    h, w = coded.latent_shape
    y_channels = model.context_prediction.in_channels
    z_channels = model.entropy_bottleneck.channels
    return y_channels * HYPER_SCALE**2 * h * w, z_channels * h * w


def _max_frequency(cdf: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per row of a quantised CDF table, the largest symbol frequency (of 2^16)."""
    steps = cdf[:, 1:] - cdf[:, :-1]
    columns = torch.arange(steps.shape[1], device=steps.device)
    valid = columns[None, :] < (lengths[:, None] - 1)
    return torch.where(valid, steps, torch.zeros_like(steps)).amax(dim=1).clamp(min=1)


def _min_bits(frequency: torch.Tensor) -> torch.Tensor:
    return _PRECISION - torch.log2(frequency.double())


def minimum_stream_bytes(coded: CodedImage, model: CompressionModel) -> tuple[int, int]:
    """The fewest bytes the y and z streams of ``coded`` can have with ``model``'s tables."""
    y_symbols, _ = symbol_counts(coded, model)
    h, w = coded.latent_shape
    gaussian, bottleneck = model.gaussian_conditional, model.entropy_bottleneck
    y_bits = float(_min_bits(_max_frequency(gaussian.quantized_cdf, gaussian.cdf_length)).min())
    z_rows = _max_frequency(bottleneck.quantized_cdf, bottleneck._cdf_length)
    z_bits = float(_min_bits(z_rows).sum()) * h * w  # one table per channel
    return (
        max(_STATE_BYTES, math.floor(0.99 * y_symbols * y_bits / 8)),
        max(_STATE_BYTES, math.floor(0.99 * z_bits / 8)),
    )


def check_streams(coded: CodedImage, model: CompressionModel) -> None:
    """Refuse streams too short for the claimed latent (see the module docstring).

    Raises:
        UserError: one line naming the stream and both lengths.
    """
    for name, stream, least in zip(
        ("y", "z"), coded.streams, minimum_stream_bytes(coded, model), strict=True
    ):
        if len(stream) < least:
            raise UserError(
                f"corrupted .jicd file: its {name} stream has {len(stream)} bytes, a "
                f"{coded.latent_shape} latent needs at least {least}"
            )


def padded_streams(coded: CodedImage, model: CompressionModel) -> list[bytes]:
    """``coded.streams`` each followed by the zero bytes the rANS decoder may read past it."""
    counts = symbol_counts(coded, model)
    return [
        stream + bytes(4 * (symbols + 2) + 16 * len(stream) + _SLACK)
        for stream, symbols in zip(coded.streams, counts, strict=True)
    ]
