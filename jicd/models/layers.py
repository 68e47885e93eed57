"""Blocks of the jicd denoisers: Self-ONN convolution, CBAM, multi-scale front end, residual units.

Everything here is specified in ``docs/method.md`` ("Denoisers"); the parameter counts of the
denoisers built from these blocks are pinned by ``tests/library/test_models.py``
(``test_parameter_counts_match_method``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from compressai.layers import conv1x1, conv3x3
from torch import Tensor, nn

from jicd.errors import UserError

TANH_GAIN = 5.0 / 3.0  # torch.nn.init.calculate_gain("tanh"): Self-ONN units sit between tanh's


class SelfONNConv2d(nn.Conv2d):
    """Self-organised operational convolution (generative neuron, Maclaurin series of order ``q``).

    Kiranyaz et al., "Self-organized Operational Neural Networks with Generative Neurons",
    Neural Networks 2021. Computes ``y = b + sum_{n=1..q} W_n * x^n`` as one convolution over the
    power-major stack ``cat([x, x^2, ..., x^q], dim=1)``; the weight is ``(out, q*in, k, k)``.
    With ``q = 1`` this is an ordinary convolution.

    There is no clamping inside the layer: the residual units that use it keep its inputs bounded
    with ``tanh``.

    Args:
        in_channels: channels of ``x`` (before the powers are stacked).
        out_channels: output channels.
        kernel_size: square kernel size.
        q: order of the series (number of powers of ``x``).
        **conv_kwargs: ``stride``, ``padding``, ``dilation`` as for ``nn.Conv2d``.

    Shapes:
        input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H', W')``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, q: int = 3, **conv_kwargs
    ):
        if q < 1:
            raise UserError(f"Self-ONN order q must be >= 1, got {q}")
        self.q = q  # set before nn.Conv2d.__init__, which calls reset_parameters()
        super().__init__(q * in_channels, out_channels, kernel_size, **conv_kwargs)

    def reset_parameters(self) -> None:
        """Xavier-uniform (tanh gain) over the whole weight; bias U(±1/sqrt(q·in·k·k))."""
        nn.init.xavier_uniform_(self.weight, gain=TANH_GAIN)
        if self.bias is not None:
            fan_in = self.weight[0].numel()  # q * in * k * k
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"q={self.q}, " + super().extra_repr()  # in_channels shown is q * in

    def forward(self, x: Tensor) -> Tensor:
        powers = [x]
        for _ in range(self.q - 1):
            powers.append(powers[-1] * x)
        return super().forward(torch.cat(powers, dim=1) if self.q > 1 else x)


class ResidualUnit(nn.Module):
    """RU(N): conv1x1 N→N/2, ReLU, conv3x3, ReLU, conv1x1 N/2→N, add input, ReLU.

    The same unit CompressAI's ``AttentionBlock`` uses internally (defined there as a local class,
    so it cannot be imported). Shapes: ``(B, N, H, W)`` → ``(B, N, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(
            conv1x1(channels, half),
            nn.ReLU(inplace=True),
            conv3x3(half, half),
            nn.ReLU(inplace=True),
            conv1x1(half, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x) + x)


class SelfONNResidualUnit(nn.Module):
    """RUS(N): ``tanh(x + S1x1(N→N/2) → tanh → S3x3 → tanh → S1x1(N/2→N))`` with Self-ONN convs.

    Shapes: ``(B, N, H, W)`` → ``(B, N, H, W)``, values in (-1, 1).
    """

    def __init__(self, channels: int, q: int = 3):
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(
            SelfONNConv2d(channels, half, 1, q=q),
            nn.Tanh(),
            SelfONNConv2d(half, half, 3, q=q, padding=1),
            nn.Tanh(),
            SelfONNConv2d(half, channels, 1, q=q),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.conv(x) + x)


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared bias-free MLP (1×1 convs C→C/r→C) on avg- and max-pool."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)  # tiny test models have C < 16
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # mean/amax over the spatial dims, not adaptive_{avg,max}_pool2d(x, 1): the same values
        # (adaptive average pooling to 1x1 *is* a mean; a maximum does not depend on the order),
        # but AdaptiveMaxPool2d's CUDA backward has no deterministic kernel and would make
        # train.deterministic=true raise (tests/library/test_deterministic_ops.py).
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: 7×7 conv (2→1, no bias) on [channel-max, channel-mean], sigmoid."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Sequential):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel then spatial attention.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention())


class MultiScaleConv(nn.Module):
    """Multi-scale front end: four parallel dilated 3×3 convs N→N/4 (dilation 1..4), concatenated.

    Receptive fields 3, 5, 7 and 9 latent pixels. Shapes: ``(B, N, H, W)`` → ``(B, N, H, W)``.
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        if channels % len(dilations):
            raise UserError(f"channels ({channels}) must be divisible by {len(dilations)}")
        branch = channels // len(dilations)
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, branch, 3, padding=d, dilation=d) for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([conv(x) for conv in self.branches], dim=1)
