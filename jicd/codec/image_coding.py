"""Coding one image with a loaded model: pad + entropy-code + package, and the way back.

Used by the codec commands (:mod:`jicd.codec.commands`), which load the model once for many
files. A file to decode is checked before any work is done for it (:mod:`jicd.codec.limits`):
its geometry and size, the model identity, and the stream lengths.
"""

from __future__ import annotations

import torch

from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.format import CodedImage
from jicd.codec.images import crop_to, load_rgb, pad_to_block, save_png
from jicd.codec.limits import (
    check_geometry,
    check_pixels,
    check_streams,
    max_file_bytes,
    max_pixels,
    padded_streams,
)
from jicd.errors import UserError
from jicd.models.identity import accepts


@torch.no_grad()
def compress_image(model, identity: dict, x: torch.Tensor, coder_name: str) -> CodedImage:
    """Pad, entropy-code and package one (1, 3, H, W) image in [0, 1]."""
    padded = pad_to_block(x)
    encoded = get_coder(coder_name).compress(model, padded)
    y_strings, z_strings = encoded["strings"]
    latent_h, latent_w = (int(v) for v in encoded["shape"])
    return CodedImage(
        arch=identity["arch"],
        quality=int(identity.get("quality") or 0),
        channels=int(identity["channels"]),
        weights_sha256=identity["weights_sha256"],
        coder=coder_name,
        original_size=(x.shape[-2], x.shape[-1]),
        padded_size=(padded.shape[-2], padded.shape[-1]),
        latent_shape=(latent_h, latent_w),
        streams=(y_strings[0], z_strings[0]),
        **jicd_format.decode_requirements(encoded),  # device, entropy path, torch, index CRC
    )


def check_compatible(coded: CodedImage, identity: dict) -> None:
    """Refuse to decode with weights other than the encoder's (:mod:`jicd.models.identity`)."""
    if not accepts(identity, coded.weights_sha256, coded.digest_kind):
        mine = identity["weights_sha256"] if coded.digest_kind == "tensors" else "its file"
        raise UserError(
            f"checkpoint does not match the file: it was written by {coded.arch} q{coded.quality} "
            f"N={coded.channels} with weights {coded.digest_kind} sha256 "
            f"{coded.weights_sha256[:12]}…, the checkpoint has {mine[:12]}…"
        )


def check_decodable(coded: CodedImage, model, identity: dict, limit: int | None = None) -> None:
    """Everything checked before decoding: coder, geometry and size, identity, stream lengths.

    Raises:
        UserError: one line naming the first problem.
    """
    get_coder(coded.coder)  # an unknown coder name is refused here
    check_geometry(coded, max_pixels(coded.coder, limit))
    check_compatible(coded, identity)
    check_streams(coded, model)


@torch.no_grad()
def decompress_image(model, coded: CodedImage) -> torch.Tensor:
    """Decode a checked :class:`CodedImage` to (1, 3, H, W) in [0, 1] at its original size.

    The streams are handed to the coder with the zero padding of
    :func:`jicd.codec.limits.padded_streams`, so a crafted stream cannot make CompressAI's
    decoder read past its end.
    """
    strings = [[stream] for stream in padded_streams(coded, model)]
    coder = get_coder(coded.coder)
    decoded = coder.decompress(
        model, strings, coded.latent_shape, checks=coded.checks, entropy=coded.entropy
    )
    x_hat = decoded["x_hat"]
    return crop_to(x_hat.clamp(0, 1), *coded.original_size)


def encode_file(
    model, identity: dict, source: str, target: str, coder: str, notice=None, limit=None
) -> str:
    """Compress image file ``source`` to ``target``; returns the one-line summary.

    ``notice`` receives the line saying how a non-RGB input was converted (default: logged);
    ``limit`` overrides the pixel limit (:func:`jicd.codec.limits.max_pixels`).
    """
    pixels = max_pixels(coder, limit)
    x = load_rgb(source, notice, max_pixels=pixels)
    check_pixels(x.shape[-2], x.shape[-1], pixels, source)
    coded = compress_image(model, identity, x, coder)
    jicd_format.write(target, coded)
    bpp = 8.0 * coded.payload_bytes / (x.shape[-2] * x.shape[-1])
    return f"{target}: {coded.payload_bytes} bytes of streams, {bpp:.4f} bpp"


def decode_file(model, identity: dict, source: str, target: str, limit: int | None = None) -> str:
    """Decode ``.jicd`` file ``source`` to PNG ``target``; returns the one-line summary.

    ``limit`` overrides the pixel limit (:func:`jicd.codec.limits.max_pixels`).
    """
    coded = jicd_format.read(source, max_bytes=max_file_bytes(limit))
    check_decodable(coded, model, identity, limit)
    save_png(target, decompress_image(model, coded))
    height, width = coded.original_size
    return f"{target}: {width}x{height}"
