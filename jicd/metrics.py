"""Image-quality and rate metrics: one implementation for training, validation, evaluation, CLI.

Conventions (see the evaluation section of the README):

* :func:`psnr` — float PSNR of images in [0, 1], per image; training logs and validation.
* :func:`psnr_8bit` — PSNR after **rounding** both images to 8 bit (CompressAI's
  ``psnr-rgb``).
* :func:`ms_ssim_float` — MS-SSIM (data range 1) of the clamped float images.
* :func:`image_bpp` — the per-image rate estimate ``Σ −log2 p / (H·W)`` from the likelihoods;
  real-bitstream bpp is ``8 · bytes / pixels`` (:func:`file_bpp`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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
    ref = (reference.clamp(0, 1) * 255.0).round().double()
    tst = (test.clamp(0, 1) * 255.0).round().double()
    mse = torch.mean((ref - tst) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_float(reference: Tensor, test: Tensor) -> float:
    """MS-SSIM (data_range 1) of the clamped float images; NaN when smaller than 161 px."""
    from pytorch_msssim import ms_ssim

    if min(reference.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return math.nan
    return ms_ssim(reference, test.clamp(0, 1), data_range=1.0).item()


def image_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Per-image rate estimate of all latents: ``Σ −log2 p / (H·W)``.

    Args:
        likelihoods: CompressAI's ``{"y": (B, M, h, w), "z": (B, N, h', w')}``.
        num_pixels: H·W of the input image.

    Returns:
        ``(B,)`` bits per pixel (training rate term, validation, evaluation's ``bpp-estimate``).
    """
    bits = sum(-torch.log2(lik.float()).flatten(1).sum(dim=1) for lik in likelihoods.values())
    return bits / num_pixels


def file_bpp(num_bytes: int, num_pixels: int) -> float:
    """Real-bitstream rate: ``8 · bytes / pixels``."""
    return 8.0 * num_bytes / num_pixels
