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
(:meth:`_WavefrontModel.predict`) on the same shapes in the same order, so the decoder derives
bit-identically the scale indexes and means the encoder used. The loop always runs on one
thread (:func:`jicd.distributed.single_thread`), so the caller's thread setting cannot change
its arithmetic.
The symbols and their probability model are CompressAI's, so the rate equals the serial coder's
(up to float rounding of the means; the y stream of a Kodak image had the same length).

Bitstream (one string per image; the z string is CompressAI's ``entropy_bottleneck`` stream):
CompressAI's 64-bit rANS (16-bit precision, bypass-coded tails, ``compressai.ans``) with the
model's ``gaussian_conditional`` CDF tables; symbols in wavefront order ``t = 0, 1, …``, inside a
wavefront by increasing row ``i``, and for each position its ``M`` channels in channel order.
``y`` is ``4h × 4w`` for the transmitted z shape ``(h, w)``. Encoder and decoder must run the
same platform and torch build (as for any learned codec with a float entropy model). The
stream differs from CompressAI's serial one (other symbol order): decode with the coder that
encoded.
Each image of a batch is coded on its own, so its stream never depends on the other images.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import Tensor, nn

from jicd.distributed import single_thread
from jicd.errors import UserError

# Spatial factor between the hyper-latent z and the latent y in Cheng2020/Minnen2018 models.
HYPER_SCALE = 4
# Element-wise activations that may be applied to a (P, C) matrix instead of a (P, C, 1, 1) map.
_POINTWISE_ACTIVATIONS = (nn.LeakyReLU, nn.ReLU, nn.GELU, nn.Identity)


@dataclass
class WavefrontSchedule:
    """Coding order of an ``H×W`` latent, grouped in independent wavefronts.

    Attributes:
        order: ``(H·W,)`` row-major position of each coded position, in coding order.
        padded: ``(H·W,)`` the same positions in the padded ``(H + p, W + 2p)`` grid.
        gather: ``(H·W·T,)`` padded-grid index of the ``T`` causal taps of every position.
        bounds: wavefront ``s`` covers coding positions ``bounds[s]:bounds[s + 1]``.
    """

    order: Tensor
    padded: Tensor
    gather: Tensor
    bounds: list[int]


def causal_taps(context: nn.Conv2d) -> list[tuple[int, int]]:
    """Return the ``(di, dj)`` offsets the masked context convolution reads, in kernel order.

    Raises:
        ValueError: if the layer is not a stride-1, same-padded, causally masked square conv.
    """
    k = context.kernel_size[0]
    pad = k // 2
    if context.kernel_size != (k, k) or context.stride != (1, 1) or context.padding != (pad, pad):
        raise ValueError("context_prediction must be a stride-1 'same' square convolution")
    mask = getattr(context, "mask", None)
    if mask is None or not bool((mask == mask[:1, :1]).all()):
        raise ValueError("context_prediction needs a channel-independent 'mask' (MaskedConv2d)")
    taps = [(ki - pad, kj - pad) for ki, kj in (mask[0, 0] != 0).nonzero().tolist()]
    if any(di > 0 or (di == 0 and dj >= 0) for di, dj in taps):
        raise ValueError("context_prediction mask is not causal (reads not yet decoded positions)")
    return taps


def wavefront_slope(taps: list[tuple[int, int]]) -> int:
    """Smallest ``a`` with ``a·di + dj < 0`` for every tap ``(di, dj)`` (3 for the 5×5 mask)."""
    return max([1] + [dj // -di + 1 for di, dj in taps if di < 0])


def build_schedule(
    height: int, width: int, taps: list[tuple[int, int]], pad: int
) -> WavefrontSchedule:
    """Group the positions of a ``height×width`` latent in wavefronts ``t = a·i + j``.

    ``pad`` is the context kernel's half size: the grid has ``pad`` zero rows on top and ``pad``
    zero columns on each side (rows below are never read).
    """
    slope = wavefront_slope(taps)
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    front = slope * rows + cols
    order = torch.argsort(front * height + rows)  # by wavefront, then by row
    padded_width = width + 2 * pad
    padded = (rows[order] + pad) * padded_width + cols[order] + pad
    offsets = torch.tensor([di * padded_width + dj for di, dj in taps])
    gather = (padded[:, None] + offsets[None, :]).flatten()
    counts = torch.bincount(front[order])
    bounds = [0] + torch.cumsum(counts, 0).tolist()
    return WavefrontSchedule(order, padded, gather, bounds)


class _WavefrontModel:
    """The model's context + entropy-parameter networks, rewritten as matmuls over patches.

    Args:
        model: a CompressAI ``JointAutoregressiveHierarchicalPriors``-like model.
        params: ``(1, 2M, H, W)`` hyper-decoder output ``h_s(z_hat)`` of one image.
    """

    def __init__(self, model: nn.Module, params: Tensor) -> None:
        context = model.context_prediction
        self.taps = causal_taps(context)
        self.channels = context.in_channels
        height, width = params.shape[-2:]
        self.pad = context.kernel_size[0] // 2  # causal_taps checked |di|, |dj| <= pad
        self.schedule = build_schedule(height, width, self.taps, self.pad)
        self.grid_shape = (height + self.pad, width + 2 * self.pad)
        self.ctx_weight, self.ctx_bias = self._context_matrix(context)
        self.gaussian = model.gaussian_conditional
        self.scale_bounds = self.gaussian.scale_table[:-1].contiguous()
        self._init_entropy_head(model.entropy_parameters, params)

    def _context_matrix(self, context: nn.Conv2d) -> tuple[Tensor, Tensor]:
        """Masked kernel ``(2M, M, k, k)`` → dense ``(2M, T·M)`` matrix over the causal taps.

        Kept ``(out, in)`` like ``nn.Linear``: MKL's small-batch GEMM is faster that way round.
        """
        weight = context.weight * context.mask
        ki = torch.tensor([di + self.pad for di, _ in self.taps])
        kj = torch.tensor([dj + self.pad for _, dj in self.taps])
        taps_weight = weight[:, :, ki, kj]  # (2M, M, T)
        matrix = taps_weight.permute(0, 2, 1).reshape(weight.shape[0], -1).contiguous()
        return matrix, context.bias

    def _init_entropy_head(self, head: nn.Module, params: Tensor) -> None:
        """Precompute the hyper-prior half of the entropy network's first 1×1 layer.

        Its output for every position is one image-wide matmul, identical in encoder and decoder,
        so a step only adds the context half. Unknown head layouts fall back to calling the module.
        """
        rows = params[0].flatten(1).t()[self.schedule.order]  # (H·W, 2M) in coding order
        layers = list(head) if isinstance(head, nn.Sequential) else [head]
        first = layers[0]
        supported = all(_is_pointwise(layer) for layer in layers) and isinstance(first, nn.Conv2d)
        if not supported:
            self.hyper_rows, self.head, self.layers = rows, head, None
            return
        weight = first.weight.flatten(1)  # (C1, 4M): input channels = cat(params, ctx)
        split = rows.shape[1]
        self.hyper_rows = F.linear(rows, weight[:, :split], first.bias)
        self.first_ctx = weight[:, split:].contiguous()
        self.layers = [_as_matmul(layer) for layer in layers[1:]]

    def predict(self, grid: Tensor, step: int) -> tuple[Tensor, Tensor, slice]:
        """Gaussian parameters of wavefront ``step`` from the already coded ``grid``.

        Args:
            grid: ``(H_pad·W_pad, M)`` channels-last padded ``y_hat`` (zeros where not coded).
            step: wavefront number.

        Returns:
            ``(indexes (P, M) int32, means (P, M), span)``; ``span`` selects the wavefront's
            ``P`` positions in coding order.
        """
        start, end = self.schedule.bounds[step], self.schedule.bounds[step + 1]
        taps = self.schedule.gather[start * len(self.taps) : end * len(self.taps)]
        patches = grid.index_select(0, taps).view(end - start, -1)  # (P, T·M)
        ctx = F.linear(patches, self.ctx_weight, self.ctx_bias)  # (P, 2M)
        gaussian = self._entropy_head(ctx, start, end)
        scales, means = gaussian.chunk(2, 1)
        return self._scale_indexes(scales), means, slice(start, end)

    def _entropy_head(self, ctx: Tensor, start: int, end: int) -> Tensor:
        if self.layers is None:  # generic module: (P, 4M, 1, 1) through the original layers
            features = torch.cat((self.hyper_rows[start:end], ctx), dim=1)[..., None, None]
            return self.head(features).flatten(1)
        hidden = torch.addmm(self.hyper_rows[start:end], ctx, self.first_ctx.t())
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden

    def _scale_indexes(self, scales: Tensor) -> Tensor:
        """Same result as ``gaussian_conditional.build_indexes`` in one op instead of 63 loops:
        the index is the number of table scales (but the last) strictly below the bounded scale.
        """
        bounded = self.gaussian.lower_bound_scale(scales)
        return torch.searchsorted(self.scale_bounds, bounded.contiguous()).int()

    def new_grid(self, device: torch.device) -> Tensor:
        """Zero ``(H_pad·W_pad, M)`` grid; padding stays zero like the convolution's padding."""
        return torch.zeros(self.grid_shape[0] * self.grid_shape[1], self.channels, device=device)

    def to_latent(self, grid: Tensor) -> Tensor:
        """Padded channels-last grid → ``(1, M, H, W)`` latent."""
        full = grid.view(*self.grid_shape, self.channels)[self.pad :, self.pad : -self.pad or None]
        return full.permute(2, 0, 1).unsqueeze(0).contiguous()


def _is_pointwise(layer: nn.Module) -> bool:
    """Whether ``layer`` acts on each position alone, so it can run on ``(P, C)`` rows."""
    if isinstance(layer, nn.Conv2d):
        return layer.kernel_size == (1, 1) and layer.groups == 1 and layer.stride == (1, 1)
    return isinstance(layer, _POINTWISE_ACTIVATIONS)


def _as_matmul(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """A 1×1 conv as ``(P, C_in) → (P, C_out)`` matmul; activations are applied unchanged."""
    if not isinstance(layer, nn.Conv2d):
        return layer
    weight, bias = layer.weight.flatten(1).contiguous(), layer.bias
    return lambda hidden: F.linear(hidden, weight, bias)


class _CdfTables:
    """The model's Gaussian CDF tables as Python lists, rows trimmed to their length.

    rANS calls convert the tables on every call; passing only the rows up to the largest index
    of a wavefront (small scales have short rows) keeps that cost small.
    """

    def __init__(self, gaussian: nn.Module) -> None:
        lengths = gaussian.cdf_length.tolist()
        table = gaussian.quantized_cdf
        self.cdfs = [table[row, :n].tolist() for row, n in enumerate(lengths)]
        self.lengths = lengths
        self.offsets = gaussian.offset.tolist()

    def prefix(self, max_index: int) -> tuple[list, list[int], list[int]]:
        n = max_index + 1
        return self.cdfs[:n], self.lengths[:n], self.offsets[:n]


def _int_list(values: Tensor) -> list[int]:
    """Flattened Python list for the rANS bindings (via NumPy: ~3x faster than ``tolist``)."""
    return values.cpu().numpy().ravel().tolist()


@torch.inference_mode()
def encode_latent(model: nn.Module, y: Tensor, params: Tensor) -> tuple[bytes, Tensor]:
    """Quantise and rANS-encode the latent of one image, wavefront by wavefront.

    Args:
        model: the compression model (its context and entropy-parameter networks are used).
        y: ``(1, M, H, W)`` analysis output ``g_a(x)``.
        params: ``(1, 2M, H, W)`` hyper-decoder output ``h_s(z_hat)``.

    Returns:
        ``(string, y_hat (1, M, H, W))`` — the decoder reproduces ``y_hat`` bit-exactly.
    """
    symbols, indexes = [], []
    # Everything that computes entropy parameters runs on one thread (the net's precomputed
    # hyper rows included): other thread counts round differently and would change the indices.
    with single_thread():
        net = _WavefrontModel(model, params)
        y_rows = y[0].flatten(1).t()[net.schedule.order]  # (H·W, M) in coding order
        grid = net.new_grid(y.device)
        for step in range(len(net.schedule.bounds) - 1):
            index, means, span = net.predict(grid, step)
            symbol = torch.round(y_rows[span] - means)
            grid.index_copy_(0, net.schedule.padded[span], symbol + means)
            symbols.append(symbol)
            indexes.append(index)
    tables = _CdfTables(model.gaussian_conditional)
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(
        _int_list(torch.cat(symbols).int()),
        _int_list(torch.cat(indexes)),
        tables.cdfs,
        tables.lengths,
        tables.offsets,
    )
    return encoder.flush(), net.to_latent(grid)


@torch.inference_mode()
def decode_latent(model: nn.Module, string: bytes, params: Tensor) -> Tensor:
    """Decode one image's latent ``(1, M, H, W)`` from its string and ``h_s(z_hat)`` params."""
    tables = _CdfTables(model.gaussian_conditional)
    decoder = RansDecoder()
    decoder.set_stream(string)
    with single_thread():  # as in encode_latent: the same arithmetic whatever the caller's threads
        net = _WavefrontModel(model, params)
        grid = net.new_grid(params.device)
        for step in range(len(net.schedule.bounds) - 1):
            index, means, span = net.predict(grid, step)
            cdfs = tables.prefix(int(index.max()))
            values = decoder.decode_stream(_int_list(index), *cdfs)
            # array → frombuffer is ~5x faster than torch.tensor(list) for a few thousand ints.
            symbol = torch.frombuffer(array("f", values), dtype=torch.float32).to(means)
            grid.index_copy_(0, net.schedule.padded[span], symbol.view_as(means) + means)
    return net.to_latent(grid)


def hyper_params(model: nn.Module, z_hat: Tensor) -> Tensor:
    """``h_s(z_hat)`` image by image: ``(B, N, h, w)`` → ``(B, 2M, 4h, 4w)``.

    One image at a time so that its entropy parameters (hence its stream) never depend on the
    batch it was encoded or decoded in (convolutions may round differently per batch size), and
    on one thread, because oneDNN's convolutions round differently with other thread counts: an
    encoder on 1 thread and a decoder on 2 would otherwise derive other CDF indices (measured).
    """
    with single_thread():
        return torch.cat([model.h_s(z_hat[i : i + 1]) for i in range(z_hat.shape[0])])


def analyse(model: nn.Module, x: Tensor) -> tuple[Tensor, list[bytes], torch.Size, Tensor]:
    """Analysis and hyper-prior part of encoding.

    Args:
        x: ``(B, 3, H, W)`` images, ``H`` and ``W`` multiples of the model's 64.

    Returns:
        ``(y (B, M, h, w), z_strings, z_shape, params (B, 2M, h, w))``.

    Raises:
        ValueError: if the image size is not a multiple of 64.
    """
    y = model.g_a(x)
    z = model.h_a(y)
    if tuple(y.shape[-2:]) != tuple(HYPER_SCALE * s for s in z.shape[-2:]):
        raise UserError(f"image size {tuple(x.shape[-2:])} must be a multiple of 64 per side")
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
    return y, z_strings, z.shape[-2:], hyper_params(model, z_hat)


class WavefrontCoder:
    """Wavefront-parallel replacement of CompressAI's ``model.compress/decompress``."""

    name = "wavefront"

    @torch.inference_mode()
    def compress(self, model: nn.Module, x: Tensor) -> dict:
        """Encode ``x (B, 3, H, W)`` → ``{"strings": [y_strings, z_strings], "shape": (h, w)}``."""
        y, z_strings, z_shape, params = analyse(model, x)
        y_strings = [
            encode_latent(model, y[i : i + 1], params[i : i + 1])[0] for i in range(y.shape[0])
        ]
        return {"strings": [y_strings, z_strings], "shape": z_shape}

    @torch.inference_mode()
    def decompress(self, model: nn.Module, strings: list, shape) -> dict:
        """Decode ``compress``'s output → ``{"x_hat": (B, 3, H, W) clamped to [0, 1]}``."""
        if not (isinstance(strings, list | tuple) and len(strings) == 2):
            raise UserError("strings must be [y_strings, z_strings]")
        if len(strings[0]) != len(strings[1]):
            raise UserError(f"{len(strings[0])} y strings but {len(strings[1])} z strings")
        z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
        params = hyper_params(model, z_hat)
        y_hat = torch.cat(
            [decode_latent(model, s, params[i : i + 1]) for i, s in enumerate(strings[0])]
        )
        return {"x_hat": model.g_s(y_hat).clamp_(0, 1)}


__all__ = [
    "WavefrontCoder",
    "analyse",
    "build_schedule",
    "causal_taps",
    "decode_latent",
    "encode_latent",
    "hyper_params",
    "wavefront_slope",
]
