"""Latent feature denoisers D0 / D1 (jicd) and the baseline's plain attention blocks.

Every denoiser maps ``t`` to ``t + residual(t)`` (the identity is inside the module, as in
CompressAI's ``AttentionBlock``), so the analysis is simply ``y0 = d0(ga0(x))``: the paper's
``y0 = ga0(x) + d0(ga0(x))`` with ``d0`` read as the residual branch.
"""

from __future__ import annotations

from functools import partial

import torch
from compressai.layers import AttentionBlock, conv1x1
from torch import Tensor, nn

from jicd.errors import UserError
from jicd.models.layers import (
    CBAM,
    MultiScaleConv,
    ResidualUnit,
    SelfONNResidualUnit,
)

DENOISER_KINDS = ("cbam", "attention", "identity")


class FeatureDenoiser(nn.Module):
    """jicd denoiser: optional multi-scale front end, CBAM-gated attention trunk (Fig. 3).

    Xie, Yu, Pakdaman, Gabbouj, "Joint End-to-End Image Compression and Denoising: Leveraging
    Contrastive Learning and Multi-Scale Self-ONNs", ICIP 2024 (arXiv 2402.05582).

    .. code-block:: none

        t ─┬─► MS ─► m ─┬─► U → CBAM → U → CBAM → U ─────────► a ─┐
           │            └─► RU → RU → RU → conv1x1 ─► sigmoid ─► b ┴─► a·b ─┐
           └────────────────────────────────────────────────────────────► + ─► out

    ``MS`` = four dilated 3×3 convs (identity when ``multi_scale`` is off); ``U`` = Self-ONN
    residual unit RUS when ``self_onn`` is on (D1), ordinary residual unit RU otherwise (D0).

    Args:
        channels: N, the latent channels (divisible by 4 when ``multi_scale``).
        multi_scale: use the dilated multi-scale front end.
        self_onn: use Self-ONN residual units in the ``a`` branch.
        onn_q: order of the Self-ONN convolutions.

    Shapes:
        ``(B, N, H, W)`` → ``(B, N, H, W)``.
    """

    def __init__(self, channels: int, multi_scale: bool, self_onn: bool, onn_q: int = 3):
        super().__init__()
        self.front = MultiScaleConv(channels) if multi_scale else nn.Identity()
        unit = partial(SelfONNResidualUnit, q=onn_q) if self_onn else ResidualUnit
        self.conv_a = nn.Sequential(
            unit(channels), CBAM(channels), unit(channels), CBAM(channels), unit(channels)
        )
        self.conv_b = nn.Sequential(
            ResidualUnit(channels),
            ResidualUnit(channels),
            ResidualUnit(channels),
            conv1x1(channels, channels),
        )

    def forward(self, t: Tensor) -> Tensor:
        m = self.front(t)
        return t + self.conv_a(m) * torch.sigmoid(self.conv_b(m))


def build_denoisers(
    kind: str, channels: int, multi_scale: bool, self_onn: bool, onn_q: int = 3
) -> tuple[nn.Module, nn.Module]:
    """The pair (D0, D1) for a denoiser ``kind``.

    Args:
        kind: ``"cbam"`` (jicd; Self-ONN only ever in D1, the second stage), ``"attention"``
            (the ECCV 2022 baseline: two plain CompressAI ``AttentionBlock(N)``) or
            ``"identity"`` (none: the plain Cheng2020Anchor, e.g. a study's shared backbone).
        channels: N.
        multi_scale: multi-scale front end in both denoisers (``"cbam"`` only).
        self_onn: Self-ONN units in D1 (``"cbam"`` only).
        onn_q: Self-ONN order.

    Raises:
        ValueError: on an unknown kind, or switches the kind does not support.
    """
    if kind == "identity":  # the plain Cheng2020Anchor: no denoising in the analysis
        if multi_scale or self_onn:
            raise UserError("the 'identity' denoisers support neither multi_scale nor self_onn")
        return nn.Identity(), nn.Identity()
    if kind == "attention":
        if multi_scale or self_onn:
            raise UserError("the 'attention' denoisers support neither multi_scale nor self_onn")
        return AttentionBlock(channels), AttentionBlock(channels)
    if kind == "cbam":
        d0 = FeatureDenoiser(channels, multi_scale, self_onn=False, onn_q=onn_q)
        d1 = FeatureDenoiser(channels, multi_scale, self_onn=self_onn, onn_q=onn_q)
        return d0, d1
    raise UserError(f"unknown denoiser kind {kind!r}; choose from {', '.join(DENOISER_KINDS)}")
