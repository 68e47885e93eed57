"""Image-quality and rate metrics: one implementation for training, validation, evaluation, CLI.

Conventions (the evaluation protocol: ``docs/evaluation.md``):

* :func:`psnr` — float PSNR of images in [0, 1], per image; training logs and validation.
* :func:`psnr_8bit` — PSNR after **rounding** both images to 8 bit (CompressAI's
  ``psnr-rgb``).
* :func:`psnr_truncated` — PSNR after **truncating** both images to 8 bit, as the authors'
  ``util.psnr`` does through torchvision's ``ToPILImage`` (their results' ``psnr``).
* :func:`ms_ssim_float` — MS-SSIM (data range 1) of the clamped float images.
* :func:`image_bpp` — the per-image rate estimate ``Σ −log2 p / (H·W)`` from the likelihoods;
  real-bitstream bpp is ``8 · bytes / pixels`` (:func:`file_bpp`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from jicd.errors import UserError

# pytorch_msssim asserts the smaller side is > (win_size - 1) * 2**4 for its five scales.
MS_SSIM_MIN_SIDE = 161


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of float images in [0, 1] (``x`` is clamped first).

    Args:
        x, y: ``(B, C, H, W)``.

    Returns:
        ``(B,)``.
    """
    mse = (x.clamp(0, 1) - y).pow(2).flatten(1).mean(dim=1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def psnr_8bit(reference: Tensor, test: Tensor) -> float:
    """PSNR in dB after rounding both (B, 3, H, W) float images to 8 bit (inf if identical)."""
    return _psnr_255((reference.clamp(0, 1) * 255.0).round(), (test.clamp(0, 1) * 255.0).round())


def to_8bit_truncated(x: Tensor) -> Tensor:
    """``(x·255).byte()`` of the clamped float32 image, exactly what ``ToPILImage`` stores."""
    return x.clamp(0, 1).float().mul(255).to(torch.uint8)


def psnr_truncated(reference: Tensor, test: Tensor) -> float:
    """PSNR in dB after truncating both (B, 3, H, W) float images to 8 bit (inf if identical).

    The authors' evaluation (``codes/utils/util.py: psnr``) converts both images with
    torchvision's ``ToPILImage`` (``mul(255).byte()``: truncation) and back; rounding instead
    (:func:`psnr_8bit`) reads 0.02 dB higher at 30 dB and 0.16 dB at 40 dB.
    """
    return _psnr_255(to_8bit_truncated(reference), to_8bit_truncated(test))


def _psnr_255(ref: Tensor, tst: Tensor) -> float:
    """PSNR of two images on the 0-255 scale, in float64 (inf if identical)."""
    mse = torch.mean((ref.double() - tst.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_float(reference: Tensor, test: Tensor) -> float:
    """MS-SSIM (data_range 1) of the clamped float images; NaN when smaller than 161 px."""
    from pytorch_msssim import ms_ssim

    if min(reference.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return math.nan
    return ms_ssim(reference, test.clamp(0, 1), data_range=1.0).item()


MS_SSIM_WINDOW = 11


def ms_ssim_per_image(x: Tensor, y: Tensor) -> Tensor:
    """Differentiable per-image MS-SSIM (data range 1) of ``(B, 3, H, W)`` → ``(B,)``.

    The standard five scales with an 11-px Gaussian window when the smaller side exceeds 160 px
    (the baseline's MS-SSIM loss on 256-px patches; equal to :func:`ms_ssim_float`). Smaller
    images (pytorch_msssim needs ``side > 16·(window − 1)``) get the largest odd window that fits,
    so small test and smoke patches still have a well-defined objective.
    """
    from pytorch_msssim import ms_ssim

    side = min(x.shape[-2:])
    window = MS_SSIM_WINDOW
    while window > 3 and side <= 16 * (window - 1):
        window -= 2
    if side <= 16 * (window - 1):
        raise UserError(f"MS-SSIM needs images larger than {16 * (window - 1)} px, got {side}")
    return ms_ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=window)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, ``−10·log10(1 − MS-SSIM)`` (the scale RD plots and BD-rates use)."""
    return math.inf if value >= 1 else -10.0 * math.log10(1.0 - value)


def image_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Per-image rate estimate of all latents: ``Σ −log2 p / (H·W)``.

    Args:
        likelihoods: CompressAI's ``{"y": (B, M, h, w), "z": (B, N, h', w')}``.
        num_pixels: H·W of the input image.

    Returns:
        ``(B,)`` bits per pixel (training rate term, validation, evaluation's ``bpp-estimate``).
    """
    bits = sum(-torch.log2(lik.float()).flatten(1).sum(dim=1) for lik in likelihoods.values())
    # ``likelihoods`` is never empty (``y``, ``z``): ``bits`` is a Tensor, never sum()'s start 0
    return cast(Tensor, bits) / num_pixels


def file_bpp(num_bytes: int, num_pixels: int) -> float:
    """Real-bitstream rate: ``8 · bytes / pixels``."""
    return 8.0 * num_bytes / num_pixels
