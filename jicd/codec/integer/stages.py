"""Read a float ``nn.Sequential`` (``h_s``, ``entropy_parameters``) as integer-convertible stages.

A *stage* is one convolution, optionally followed by a pixel shuffle and an element-wise
activation (identity, ReLU or LeakyReLU) — the building blocks of CompressAI's
Cheng2020Anchor / Minnen2018 hyper-decoders and entropy-parameter heads. Anything else is
refused with a one-line error naming the layer, so an unsupported model fails at
``jicd integerize`` instead of coding with a wrong network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jicd.errors import UserError


@dataclass
class Stage:
    """``conv → pixel shuffle → activation``; ``slope`` None = identity, 0 = ReLU."""

    conv: nn.Conv2d
    shuffle: int = 1
    slope: float | None = None

    def forward(self, x: Tensor) -> Tensor:
        """The float computation the stage stands for: ``(B, I, H, W)`` → ``(B, O/r², rH, rW)``."""
        x = self.conv(x)
        if self.shuffle > 1:
            x = F.pixel_shuffle(x, self.shuffle)
        if self.slope is not None:
            x = F.leaky_relu(x, self.slope) if self.slope else F.relu(x)
        return x


def parse_stages(module: nn.Module, what: str, kernel_one: bool = False) -> list[Stage]:
    """Split ``module`` (a Sequential, possibly nested, or one conv) into :class:`Stage` s.

    Args:
        module: e.g. ``model.h_s`` or ``model.entropy_parameters``.
        what: its name, for error messages.
        kernel_one: require 1×1 convolutions (the entropy-parameter head runs per position).

    Raises:
        UserError: a layer the integer path does not implement, or a convolution that is not
            stride 1 / dilation 1 / ungrouped / zero "same" padding.
    """
    stages: list[Stage] = []
    for layer in _flatten(module):
        if isinstance(layer, nn.Conv2d):
            _check_conv(layer, what, kernel_one)
            stages.append(Stage(layer))
        elif not stages:
            raise UserError(f"cannot integerize {what}: it must start with a convolution")
        elif isinstance(layer, nn.PixelShuffle) and stages[-1].slope is None:
            stages[-1].shuffle *= layer.upscale_factor
        elif isinstance(layer, nn.LeakyReLU | nn.ReLU) and stages[-1].slope is None:
            slope = float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.0
            if not 0 <= slope < 1:
                raise UserError(f"cannot integerize {what}: LeakyReLU slope {slope} not in [0, 1)")
            stages[-1].slope = slope
        elif not isinstance(layer, nn.Identity):
            raise UserError(
                f"cannot integerize {what}: layer {type(layer).__name__} (the integer path "
                "supports Conv2d, PixelShuffle, ReLU and LeakyReLU)"
            )
    if not stages:
        raise UserError(f"cannot integerize {what}: no convolution")
    return stages


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _flatten(child)]
    return [module]


def _check_conv(conv: nn.Conv2d, what: str, kernel_one: bool) -> None:
    k = conv.kernel_size[0]
    same = conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros"
    plain = conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
    if conv.kernel_size != (k, k) or k % 2 == 0 or not same or not plain:
        raise UserError(
            f"cannot integerize {what}: convolution {tuple(conv.weight.shape)} is not an odd "
            "square stride-1 'same' convolution"
        )
    if kernel_one and k != 1:
        raise UserError(f"cannot integerize {what}: the head must use 1x1 convolutions")


def conv_parameters(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """``(weight (O, I, k, k), bias (O,))`` as float64 on the CPU; masked weights masked."""
    weight = conv.weight.detach()
    mask = getattr(conv, "mask", None)
    if mask is not None:
        weight = weight * mask
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
    return weight.to("cpu", torch.float64), bias.to("cpu", torch.float64)
