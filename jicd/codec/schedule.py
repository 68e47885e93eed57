"""The wavefront schedule and the context + entropy-parameter networks rewritten as matmuls.

See :mod:`jicd.codec.wavefront` for the coding order; this module only computes, for a
wavefront, the Gaussian parameters (CDF indices and means) from the already coded latent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.layers import MaskedConv2d
    from compressai.models import CompressionModel

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
        UserError: if the layer is not a stride-1, same-padded, causally masked square conv.
    """
    k = context.kernel_size[0]
    pad = k // 2
    if context.kernel_size != (k, k) or context.stride != (1, 1) or context.padding != (pad, pad):
        raise UserError("context_prediction must be a stride-1 'same' square convolution")
    mask = getattr(context, "mask", None)
    if mask is None or not bool((mask == mask[:1, :1]).all()):
        raise UserError("context_prediction needs a channel-independent 'mask' (MaskedConv2d)")
    taps = [(ki - pad, kj - pad) for ki, kj in (mask[0, 0] != 0).nonzero().tolist()]
    if any(di > 0 or (di == 0 and dj >= 0) for di, dj in taps):
        raise UserError("context_prediction mask is not causal (reads not yet decoded positions)")
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


class WavefrontNet:
    """The model's context + entropy-parameter networks, rewritten as matmuls over patches.

    Args:
        model: a CompressAI ``JointAutoregressiveHierarchicalPriors``-like model.
        params: ``(1, 2M, H, W)`` hyper-decoder output ``h_s(z_hat)`` of one image.
    """

    def __init__(self, model: CompressionModel, params: Tensor) -> None:
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

    def _context_matrix(self, context: MaskedConv2d) -> tuple[Tensor, Tensor | None]:
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
        supported = all(_is_pointwise(layer) for layer in layers)
        if not supported or not isinstance(first, nn.Conv2d):
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
