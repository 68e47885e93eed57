"""Coding one image with a loaded model: pad + entropy-code + package, and the way back.

Used by the codec CLI (:mod:`jicd.codec.cli`), which loads the model once for many files.
"""

from __future__ import annotations

import torch

from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.format import CodedImage
from jicd.codec.images import BLOCK, crop_to, load_rgb, pad_to_block, save_png
from jicd.errors import UserError

# z is 1/64 of the padded image: 4 stride-2 layers in g_a, 2 more in h_a.
LATENT_STRIDE = 64


@torch.no_grad()
def compress_image(model, identity: dict, x: torch.Tensor, coder_name: str) -> CodedImage:
    """Pad, entropy-code and package one (1, 3, H, W) image in [0, 1]."""
    padded = pad_to_block(x)
    encoded = get_coder(coder_name).compress(model, padded)
    y_strings, z_strings = encoded["strings"]
    return CodedImage(
        arch=identity["arch"],
        quality=int(identity.get("quality") or 0),
        channels=int(identity["channels"]),
        weights_sha256=identity["weights_sha256"],
        coder=coder_name,
        original_size=(x.shape[-2], x.shape[-1]),
        padded_size=(padded.shape[-2], padded.shape[-1]),
        latent_shape=tuple(int(v) for v in encoded["shape"]),
        streams=(y_strings[0], z_strings[0]),
        **jicd_format.decode_requirements(encoded),  # device, entropy path, torch, index CRC
    )


def check_compatible(coded: CodedImage, identity: dict) -> None:
    """Refuse to decode with weights other than the encoder's, or an inconsistent geometry."""
    if coded.weights_sha256 != identity["weights_sha256"]:
        raise UserError(
            f"checkpoint does not match the file: it was written by {coded.arch} q{coded.quality} "
            f"N={coded.channels} with weights sha256 {coded.weights_sha256[:12]}…, the checkpoint "
            f"has {identity['weights_sha256'][:12]}…"
        )
    (height, width), (pad_h, pad_w) = coded.original_size, coded.padded_size
    expected = (pad_h // LATENT_STRIDE, pad_w // LATENT_STRIDE)
    if pad_h % BLOCK or pad_w % BLOCK or pad_h < height or pad_w < width:
        raise UserError(f"corrupted .jicd header: padded size {coded.padded_size}")
    if coded.latent_shape != expected or len(coded.streams) != 2:
        raise UserError(f"corrupted .jicd header: latent shape {coded.latent_shape}")


@torch.no_grad()
def decompress_image(model, coded: CodedImage) -> torch.Tensor:
    """Decode a checked :class:`CodedImage` to (1, 3, H, W) in [0, 1] at its original size."""
    strings = [[stream] for stream in coded.streams]
    coder = get_coder(coded.coder)
    decoded = coder.decompress(
        model, strings, coded.latent_shape, checks=coded.checks, entropy=coded.entropy
    )
    x_hat = decoded["x_hat"]
    return crop_to(x_hat.clamp(0, 1), *coded.original_size)


def encode_file(model, identity: dict, source: str, target: str, coder: str, notice=None) -> str:
    """Compress image file ``source`` to ``target``; returns the one-line summary.

    ``notice`` receives the line saying how a non-RGB input was converted (default: logged).
    """
    x = load_rgb(source, notice)
    coded = compress_image(model, identity, x, coder)
    jicd_format.write(target, coded)
    bpp = 8.0 * coded.payload_bytes / (x.shape[-2] * x.shape[-1])
    return f"{target}: {coded.payload_bytes} bytes of streams, {bpp:.4f} bpp"


def decode_file(model, identity: dict, source: str, target: str) -> str:
    """Decode ``.jicd`` file ``source`` to PNG ``target``; returns the one-line summary."""
    coded = jicd_format.read(source)
    check_compatible(coded, identity)
    save_png(target, decompress_image(model, coded))
    height, width = coded.original_size
    return f"{target}: {width}x{height}"
