"""The wavefront coder's integer entropy path: parameters on the model's device, exact everywhere.

Same schedule and symbol order as the float path (:mod:`jicd.codec.wavefront`): wavefront
``t = 3i + j`` after wavefront, inside one by row, per position its ``M`` channels. Everything
that decides a symbol's CDF index or mean runs in fixed point
(:class:`~jicd.codec.integer.network.IntegerEntropyModel`) on the model's device — CPU or GPU
— and gives the same integers on every machine, so a file encoded on a GPU decodes bit-exactly
on any CPU and vice versa. Only symbols and CDF indices cross to CompressAI's CPU rANS coder:
the encoder sends all of them once at the end; the decoder sends each wavefront's indices and
gets its symbols back.

Streams (one per image each): z — the bottleneck symbols ``round(z − median)`` in CompressAI's
channel-major order with the export's integer CDF tables; y — the latent symbols
``round(y − mean)`` in wavefront order. The decoded latent is ``y_int / 2**y_bits`` with
``y_int = symbol · 2**y_bits + mean`` exactly (:meth:`IntegerWavefront.latent`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder, RansEncoder
from torch import Tensor

from jicd.codec.finite import check_codable
from jicd.codec.integer.fixed_point import INT16_MAX
from jicd.codec.integer.network import IntegerEntropyModel
from jicd.codec.placement import ENTROPY_DEVICE, analysis_transforms, model_device
from jicd.codec.rans import INDEX_MISMATCH, CdfTables, index_crc, int_list
from jicd.codec.schedule import build_schedule
from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

ENTROPY_PATHS = ("float", "integer")
SYMBOL_LIMIT = 2**24  # symbols are clamped to ±2**24 (|y| beyond is not a real latent)


def integer_model(model: CompressionModel) -> IntegerEntropyModel | None:
    """The integer entropy model an integerized export attached to ``model``, if any."""
    net = getattr(model, "integer_entropy", None)
    return net if isinstance(net, IntegerEntropyModel) else None


def entropy_path(model: CompressionModel, requested: str | None = None) -> str:
    """``requested``, or by default ``"integer"`` when ``model`` has an integer entropy model.

    Raises:
        UserError: an unknown path, or ``"integer"`` for a model without an integer model.
    """
    if requested is None:
        return "integer" if integer_model(model) is not None else "float"
    if requested not in ENTROPY_PATHS:
        raise UserError(f"unknown entropy path {requested!r}; choose {' or '.join(ENTROPY_PATHS)}")
    if requested == "integer" and integer_model(model) is None:
        raise UserError(
            "this needs the integer entropy path, which the checkpoint lacks: convert it "
            "with 'jicd integerize' (and decode with the export that encoded)"
        )
    return requested


class IntegerWavefront:
    """One image's wavefront state on the integer model's device.

    Args:
        net: the integer entropy model.
        params: ``(H, W, 2M)`` int64 hyper-decoder output (channels-last).

    Attributes:
        grid: ``(H_pad·W_pad, M)`` int16 clamped ``y_int`` (zero padding and not yet coded).
        rows: ``(H·W, M)`` int64 ``y_int`` in coding order.
    """

    def __init__(self, net: IntegerEntropyModel, params: Tensor) -> None:
        height, width, _ = params.shape
        device = params.device
        pad = net.context.kernel // 2
        taps = [(ki - pad, kj - pad) for ki, kj in net.context.taps]
        schedule = build_schedule(height, width, taps, pad)
        self.net, self.shape, self.bounds = net, (height, width), schedule.bounds
        self.order = schedule.order.to(device)
        self.padded = schedule.padded.to(device)
        self.gather = schedule.gather.to(device)
        self.taps = len(taps)
        channels = net.latent_channels
        self.hyper = net.hyper_part(params.view(height * width, -1)[self.order])
        grid_size = (height + pad) * (width + 2 * pad)
        self.grid = torch.zeros(grid_size, channels, dtype=torch.int16, device=device)
        self.rows = torch.zeros(height * width, channels, dtype=torch.int64, device=device)

    @property
    def steps(self) -> int:
        return len(self.bounds) - 1

    def predict(self, step: int) -> tuple[Tensor, Tensor, slice]:
        """``(index (P, M) int32, mean (P, M) int64, span)`` of wavefront ``step``."""
        start, end = self.bounds[step], self.bounds[step + 1]
        taps = self.gather[start * self.taps : end * self.taps]
        patches = self.grid.index_select(0, taps).view(end - start, -1)
        index, mean = self.net.predict(patches, self.hyper[start:end])
        return index, mean, slice(start, end)

    def store(self, span: slice, y_int: Tensor) -> None:
        """Record the coded ``(P, M)`` int64 values of a wavefront (clamped for the context)."""
        self.rows[span] = y_int
        clamped = y_int.clamp(-INT16_MAX, INT16_MAX).to(torch.int16)
        self.grid.index_copy_(0, self.padded[span], clamped)

    def quantise(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Quantise a latent ``y (1, M, H, W)`` (float, any device) wavefront by wavefront.

        Returns:
            ``(symbols (H·W, M) int64, indexes (H·W, M) int32)`` in coding order; :attr:`rows`
            then holds ``y_int = symbol · 2**y_bits + mean``.
        """
        one = 1 << self.net.y_bits
        y_rows = y[0].flatten(1).t()[self.order].to(torch.float64)  # (H·W, M), coding order
        symbols, indexes = [], []
        for step in range(self.steps):
            index, mean, span = self.predict(step)
            symbol = torch.round(y_rows[span] - mean.to(torch.float64) / one)
            symbol = symbol.clamp_(-SYMBOL_LIMIT, SYMBOL_LIMIT).to(torch.int64)
            self.store(span, torch.add(mean, symbol, alpha=one))
            symbols.append(symbol)
            indexes.append(index)
        return torch.cat(symbols), torch.cat(indexes)

    def raster(self, rows: Tensor) -> Tensor:
        """``(H·W, C)`` rows in coding order → ``(1, C, H, W)`` in raster order."""
        raster = torch.empty_like(rows)
        raster[self.order] = rows
        return raster.view(*self.shape, -1).permute(2, 0, 1).unsqueeze(0)

    def latent(self) -> Tensor:
        """``(1, M, H, W)`` int64 ``y_int`` in raster order."""
        return self.raster(self.rows)


def quantise_z(net: IntegerEntropyModel, z: Tensor) -> tuple[Tensor, Tensor]:
    """``z (1, N, h, w)`` float → ``(symbols (N, h, w) int64, z_int (h, w, N) int64)``."""
    scale = 2.0**net.z_bits
    median = net.z_median.view(-1, 1, 1)
    symbol = torch.round(z[0].to(torch.float64) - median.to(torch.float64) / scale)
    symbol = symbol.clamp_(-SYMBOL_LIMIT, SYMBOL_LIMIT).to(torch.int64)
    return symbol, _z_int(net, symbol)


def encode_z(net: IntegerEntropyModel, z: Tensor) -> tuple[bytes, Tensor]:
    """``z (1, N, h, w)`` float → ``(string, z_int (h, w, N) int64 clamped to int16)``."""
    symbol, z_int = quantise_z(net, z)
    indexes = torch.arange(symbol.shape[0]).repeat_interleave(symbol[0].numel())
    tables = CdfTables(net.z_cdf.cpu(), net.z_cdf_length.cpu(), net.z_offset.cpu())
    string = RansEncoder().encode_with_indexes(int_list(symbol), indexes.tolist(), *tables.all())
    return string, z_int


def decode_z(net: IntegerEntropyModel, string: bytes, shape: tuple[int, int]) -> Tensor:
    """Inverse of :func:`encode_z`: ``z_int (h, w, N)`` int64 on the model's device."""
    channels, (height, width) = net.hyper_channels, shape
    indexes = torch.arange(channels).repeat_interleave(height * width).tolist()
    tables = CdfTables(net.z_cdf.cpu(), net.z_cdf_length.cpu(), net.z_offset.cpu())
    values = RansDecoder().decode_with_indexes(string, indexes, *tables.all())
    symbol = torch.tensor(values, dtype=torch.int64).view(channels, height, width)
    return _z_int(net, symbol.to(net.z_median.device))


def _z_int(net: IntegerEntropyModel, symbol: Tensor) -> Tensor:
    z_int = symbol * (1 << net.z_bits) + net.z_median.view(-1, 1, 1)
    return z_int.clamp_(-INT16_MAX, INT16_MAX).permute(1, 2, 0)


def encode_latent(net: IntegerEntropyModel, y: Tensor, params: Tensor) -> tuple[bytes, Tensor, int]:
    """Quantise and rANS-encode one latent ``y (1, M, H, W)`` (float, any device).

    Returns:
        ``(string, y_int (1, M, H, W) int64, CRC32 of the CDF indices in coding order)``; the
        decoder reproduces ``y_int`` and the CRC exactly.
    """
    front = IntegerWavefront(net, params)
    symbols, index = front.quantise(y)
    index = index.cpu()  # the one transfer of the encoder
    tables = CdfTables(net.y_cdf.cpu(), net.y_cdf_length.cpu(), net.y_offset.cpu())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(int_list(symbols), int_list(index), *tables.all())
    return encoder.flush(), front.latent(), index_crc(index, 0)


def decode_latent(
    net: IntegerEntropyModel, string: bytes, params: Tensor, check: int | None = None
) -> Tensor:
    """Decode one latent: ``y_int (1, M, H, W)`` int64 on the model's device.

    Raises:
        UserError: ``check`` given and the indices' CRC differs (a corrupt stream or a bug:
            the fixed-point arithmetic itself is the same on every machine).
    """
    front = IntegerWavefront(net, params)
    one = 1 << net.y_bits
    tables = CdfTables(net.y_cdf.cpu(), net.y_cdf_length.cpu(), net.y_offset.cpu())
    decoder = RansDecoder()
    decoder.set_stream(string)
    crc = 0
    for step in range(front.steps):
        index, mean, span = front.predict(step)
        index = index.cpu()
        crc = index_crc(index, crc)
        values = decoder.decode_stream(int_list(index), *tables.prefix(int(index.max())))
        symbol = torch.tensor(values, dtype=torch.int64).view_as(index).to(mean.device)
        front.store(span, symbol * one + mean)
    if check is not None and crc != check:
        raise UserError(INDEX_MISMATCH)
    return front.latent()


def to_latent(net: IntegerEntropyModel, y_int: Tensor) -> Tensor:
    """``y_int`` → the float32 latent ``y_int / 2**y_bits`` that ``g_s`` decodes."""
    return (y_int.to(torch.float64) / (1 << net.y_bits)).to(torch.float32)


@torch.inference_mode()
def compress(model: CompressionModel, x: Tensor) -> dict:
    """Encode ``x (B, 3, H, W)`` with the integer path (the wavefront coder's ``compress``)."""
    net = integer_model(model)
    assert net is not None, "the caller checked entropy_path(model) == 'integer'"
    y, z = analysis_transforms(model, x)
    check_codable("the latent y", y)  # a NaN would become an arbitrary integer symbol
    check_codable("the hyper-latent z", z)
    y_strings, z_strings, checks = [], [], []
    for i in range(y.shape[0]):
        z_string, z_int = encode_z(net, z[i : i + 1])
        string, _, check = encode_latent(net, y[i : i + 1], net.hyper_params(z_int))
        y_strings.append(string)
        z_strings.append(z_string)
        checks.append(check)
    shape = tuple(z.shape[-2:])
    return {
        "strings": [y_strings, z_strings],
        "shape": shape,
        "checks": checks,
        "entropy": "integer",
    }


@torch.inference_mode()
def decompress(
    model: CompressionModel, strings: list, shape, checks: list[int] | None = None
) -> dict:
    """Decode :func:`compress`'s output → ``{"x_hat": (B, 3, H, W) in [0, 1], on the CPU}``."""
    net = integer_model(model)
    assert net is not None, "the caller checked entropy_path(model) == 'integer'"
    latents = []
    for i, (y_string, z_string) in enumerate(zip(*strings, strict=True)):
        z_int = decode_z(net, z_string, tuple(shape))
        check = None if checks is None else checks[i]
        latents.append(decode_latent(net, y_string, net.hyper_params(z_int), check))
    y_hat = to_latent(net, torch.cat(latents)).to(model_device(model))
    return {"x_hat": model.g_s(y_hat).clamp_(0, 1).to(ENTROPY_DEVICE)}
