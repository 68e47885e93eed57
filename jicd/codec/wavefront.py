"""Wavefront-parallel autoregressive entropy coding for CompressAI joint-autoregressive models.

CompressAI's ``JointAutoregressiveHierarchicalPriors.compress/decompress`` visit the latent one
position at a time (``H·W`` Python steps, each running small convolutions). With a causal
``k×k`` context mask (``p = k // 2``), position ``(i, j)`` only reads rows above it (columns
``j−p … j+p``) and ``(i, j−1) … (i, j−p)``. With ``t = (p + 1)·i + j`` every tap it reads has a
strictly smaller ``t`` (for the 5×5 mask: ``(i−1, j+2)`` has ``t−1``, ``(i−2, j+2)`` has ``t−4``),
so all positions of one *wavefront* ``t`` are independent and are coded together:
``(p + 1)·(H − 1) + W`` steps instead of ``H·W`` (141 instead of 1536 for a Kodak image).

Each step gathers the causal context taps of the wavefront from a zero-padded, channels-last
copy of ``y_hat``, applies the masked context convolution as one matmul over the batch of
patches and the 1×1 entropy-parameter network as matmuls, then quantises (encoder) or rANS
decodes (decoder) the wavefront's symbols. Encoder and decoder run the *same* function
(:meth:`jicd.codec.schedule.WavefrontNet.predict`) on the same shapes in the same order, so the
decoder derives bit-identically the scale indexes and means the encoder used. The loop always
runs on one thread (:func:`jicd.distributed.single_thread`), so the caller's thread setting
cannot change its arithmetic.
The symbols and their probability model are CompressAI's, so the rate equals the serial coder's
(up to float rounding of the means; the y stream of a Kodak image had the same length).

Bitstream (one string per image; the z string is CompressAI's ``entropy_bottleneck`` stream):
CompressAI's 64-bit rANS (16-bit precision, bypass-coded tails, ``compressai.ans``) with the
model's ``gaussian_conditional`` CDF tables; symbols in wavefront order ``t = 0, 1, …``, inside a
wavefront by increasing row ``i``, and for each position its ``M`` channels in channel order.
``y`` is ``4h × 4w`` for the transmitted z shape ``(h, w)``. On the float path the transforms
run on the model's device, the entropy parameters always on the CPU
(:mod:`jicd.codec.placement`), so a file encoded with a CUDA model decodes on a CPU; encoder and
decoder must still share the CPU arithmetic (torch build, oneDNN ISA), which the CRC32 of the
CDF indices in coding order (``compress``'s ``checks``, stored in the ``.jicd`` header) verifies
on decode. The integer path (:mod:`jicd.codec.integer`, used when the model carries an integer
entropy model) computes the entropy parameters in fixed point on the model's device instead,
the same on every CPU and GPU. The stream differs from CompressAI's serial one (other symbol
order): decode with the coder that encoded.
Each image of a batch is coded on its own, so its stream never depends on the other images.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import Tensor

from jicd.codec.finite import check_codable
from jicd.codec.integer import coder as integer_coder
from jicd.codec.placement import ENTROPY_DEVICE, analysis_transforms, entropy_side, model_device
from jicd.codec.rans import INDEX_MISMATCH, CdfTables, check_streams, index_crc, int_list
from jicd.codec.schedule import (
    WavefrontNet,
    WavefrontSchedule,
    build_schedule,
    causal_taps,
    wavefront_slope,
)
from jicd.distributed import single_thread
from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel


@torch.inference_mode()
def encode_latent(model: CompressionModel, y: Tensor, params: Tensor) -> tuple[bytes, Tensor]:
    """Quantise and rANS-encode the latent of one image, wavefront by wavefront.

    Args:
        model: the compression model (its context and entropy-parameter networks are used, on
            the CPU: :func:`jicd.codec.placement.entropy_side`).
        y: ``(1, M, H, W)`` analysis output ``g_a(x)`` (any device).
        params: ``(1, 2M, H, W)`` hyper-decoder output of :func:`hyper_params`.

    Returns:
        ``(string, y_hat (1, M, H, W) on the CPU)`` — the decoder reproduces ``y_hat``
        bit-exactly.
    """
    string, y_hat, _ = encode_latent_checked(model, y, params)
    return string, y_hat


@torch.inference_mode()
def encode_latent_checked(
    model: CompressionModel, y: Tensor, params: Tensor
) -> tuple[bytes, Tensor, int]:
    """:func:`encode_latent`, plus the CRC32 of the CDF indices that the decoder must match."""
    side = entropy_side(model)
    y, params = y.to(ENTROPY_DEVICE), params.to(ENTROPY_DEVICE)
    symbols, indexes, crc = [], [], 0
    # Everything that computes entropy parameters runs on one thread (the net's precomputed
    # hyper rows included): other thread counts round differently and would change the indices.
    with single_thread():
        net = WavefrontNet(side, params)
        y_rows = y[0].flatten(1).t()[net.schedule.order]  # (H·W, M) in coding order
        grid = net.new_grid(ENTROPY_DEVICE)
        for step in range(len(net.schedule.bounds) - 1):
            index, means, span = net.predict(grid, step)
            symbol = torch.round(y_rows[span] - means)
            grid.index_copy_(0, net.schedule.padded[span], symbol + means)
            symbols.append(symbol)
            indexes.append(index)
            crc = index_crc(index, crc)
    coded = torch.cat(symbols)
    check_codable("the coded symbols (y minus its predicted means)", coded)
    tables = CdfTables.of(side.gaussian_conditional)
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(
        int_list(coded.int()),
        int_list(torch.cat(indexes)),
        tables.cdfs,
        tables.lengths,
        tables.offsets,
    )
    return encoder.flush(), net.to_latent(grid), crc


@torch.inference_mode()
def decode_latent(
    model: CompressionModel, string: bytes, params: Tensor, check: int | None = None
) -> Tensor:
    """Decode one image's latent ``(1, M, H, W)`` (on the CPU) from its string and params.

    Args:
        model: the compression model (entropy modules used on the CPU).
        string: the image's y stream.
        params: ``(1, 2M, H, W)`` output of :func:`hyper_params`.
        check: the encoder's CRC32 of the CDF indices (None: not verified).

    Raises:
        UserError: ``check`` given and this machine derived other indices than the encoder.
    """
    side = entropy_side(model)
    tables = CdfTables.of(side.gaussian_conditional)
    decoder = RansDecoder()
    decoder.set_stream(string)
    crc = 0
    with single_thread():  # as in encode_latent: the same arithmetic whatever the caller's threads
        net = WavefrontNet(side, params.to(ENTROPY_DEVICE))
        grid = net.new_grid(ENTROPY_DEVICE)
        for step in range(len(net.schedule.bounds) - 1):
            index, means, span = net.predict(grid, step)
            crc = index_crc(index, crc)
            cdfs = tables.prefix(int(index.max()))
            values = decoder.decode_stream(int_list(index), *cdfs)
            # array → frombuffer is ~5x faster than torch.tensor(list) for a few thousand ints.
            symbol = torch.frombuffer(array("f", values), dtype=torch.float32).to(means)
            grid.index_copy_(0, net.schedule.padded[span], symbol.view_as(means) + means)
    if check is not None and crc != check:
        raise UserError(INDEX_MISMATCH)
    return net.to_latent(grid)


def hyper_params(model: CompressionModel, z_hat: Tensor) -> Tensor:
    """``h_s(z_hat)`` image by image, on the CPU: ``(B, N, h, w)`` → ``(B, 2M, 4h, 4w)``.

    One image at a time so that its entropy parameters (hence its stream) never depend on the
    batch it was encoded or decoded in (convolutions may round differently per batch size), and
    on one thread, because oneDNN's convolutions round differently with other thread counts: an
    encoder on 1 thread and a decoder on 2 would otherwise derive other CDF indices (measured).
    """
    side = entropy_side(model)
    z_hat = z_hat.to(ENTROPY_DEVICE)
    with single_thread():
        return torch.cat([side.h_s(z_hat[i : i + 1]) for i in range(z_hat.shape[0])])


def analyse(model: CompressionModel, x: Tensor) -> tuple[Tensor, list[bytes], torch.Size, Tensor]:
    """Analysis and hyper-prior part of encoding.

    ``g_a`` and ``h_a`` run on the model's device; z is quantised and ``h_s`` runs on the CPU.

    Args:
        x: ``(B, 3, H, W)`` images (any device), ``H`` and ``W`` multiples of the model's 64.

    Returns:
        ``(y (B, M, h, w), z_strings, z_shape, params (B, 2M, h, w))``, tensors on the CPU.

    Raises:
        UserError: if the image size is not a multiple of 64, or the model has no weights.
    """
    side = entropy_side(model)
    y, z = analysis_transforms(model, x)
    y, z = y.to(ENTROPY_DEVICE), z.to(ENTROPY_DEVICE)
    check_codable("the latent y", y)
    check_codable("the hyper-latent z", z)
    z_strings = side.entropy_bottleneck.compress(z)
    z_hat = side.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
    params = hyper_params(side, z_hat)
    check_codable("the hyper-prior parameters", params)
    return y, z_strings, z.shape[-2:], params


class WavefrontCoder:
    """Wavefront-parallel replacement of CompressAI's ``model.compress/decompress``.

    Two entropy paths share the schedule: ``"float"`` (this module: float32 entropy parameters
    on a CPU copy, one thread) and ``"integer"`` (:mod:`jicd.codec.integer.coder`: fixed point on
    the model's device, the same bits everywhere). ``entropy=None`` takes the integer path when
    the model carries an integer entropy model (an integerized export), else the float one.
    """

    name = "wavefront"

    @torch.inference_mode()
    def compress(self, model: CompressionModel, x: Tensor, entropy: str | None = None) -> dict:
        """Encode ``x (B, 3, H, W)`` → ``{"strings": [y_strings, z_strings], "shape": (h, w),
        "checks": [CRC32 of each image's CDF indices], "entropy": "float" | "integer"}``
        (``checks`` and ``entropy`` go into the file header)."""
        if integer_coder.entropy_path(model, entropy) == "integer":
            return integer_coder.compress(model, x)
        y, z_strings, z_shape, params = analyse(model, x)
        coded = [
            encode_latent_checked(model, y[i : i + 1], params[i : i + 1]) for i in range(len(y))
        ]
        y_strings = [string for string, _, _ in coded]
        return {
            "strings": [y_strings, z_strings],
            "shape": z_shape,
            "checks": [check for _, _, check in coded],
            "entropy": "float",
        }

    @torch.inference_mode()
    def decompress(
        self,
        model: CompressionModel,
        strings: list,
        shape,
        checks: list[int] | None = None,
        entropy: str | None = None,
    ) -> dict:
        """Decode ``compress``'s output → ``{"x_hat": (B, 3, H, W) in [0, 1], on the CPU}``.

        ``checks`` (from ``compress``) make a decoder that derives other CDF indices raise a
        :class:`UserError` instead of returning a wrong image; ``entropy`` must be the path
        that encoded (``compress``'s ``"entropy"``; None: the model's default, as there).
        """
        check_streams(strings, checks)
        if integer_coder.entropy_path(model, entropy) == "integer":
            return integer_coder.decompress(model, strings, shape, checks)
        side = entropy_side(model)
        z_hat = side.entropy_bottleneck.decompress(strings[1], shape)
        params = hyper_params(side, z_hat)
        y_hat = torch.cat(
            [
                decode_latent(side, s, params[i : i + 1], None if checks is None else checks[i])
                for i, s in enumerate(strings[0])
            ]
        )
        x_hat = model.g_s(y_hat.to(model_device(model)))
        return {"x_hat": x_hat.clamp_(0, 1).to(ENTROPY_DEVICE)}


__all__ = [
    "WavefrontCoder",
    "WavefrontNet",
    "WavefrontSchedule",
    "analyse",
    "build_schedule",
    "causal_taps",
    "decode_latent",
    "encode_latent",
    "encode_latent_checked",
    "hyper_params",
    "wavefront_slope",
]
