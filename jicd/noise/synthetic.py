"""Other synthetic noises, for generalisation studies: Gaussian, Poisson–Gaussian, correlated,
the baseline's noise followed by JPEG.

Each is a function of the clean batch and a standard normal draw of its shape, so that training
(a draw from the trainer's generator) and evaluation (one seeded CPU generator per image, the
same numbers on every device) share one formula (:mod:`jicd.noise.registry`).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from jicd.noise.baseline import TEST_LEVELS, _apply_noise

Noise = Callable[[Tensor, Tensor], Tensor]
"""``(clean (B, 3, H, W) in [0, 1], normal of the same shape) → noisy (B, 3, H, W)``."""

POISSON_GAUSSIAN = (0.01, 0.02)
"""``(a, b)``: variance ``a·x + b²`` of the sRGB Poisson–Gaussian noise."""
JPEG_QUALITY = 75


def gaussian(sigma_255: float) -> Noise:
    """Additive white Gaussian noise of std ``sigma_255 / 255``."""

    def apply(clean: Tensor, normal: Tensor) -> Tensor:
        return (clean + sigma_255 / 255.0 * normal).clamp(0, 1)

    return apply


def poisson_gaussian(clean: Tensor, normal: Tensor) -> Tensor:
    """Signal-dependent sRGB noise ``N(x, a·x + b²)`` with :data:`POISSON_GAUSSIAN`."""
    a, b = POISSON_GAUSSIAN
    return (clean + torch.sqrt(a * clean + b * b) * normal).clamp(0, 1)


def correlated(sigma_255: float, blur: float = 1.0) -> Noise:
    """Spatially correlated Gaussian noise: white noise blurred per channel, rescaled to σ."""
    radius = int(3 * blur + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel_1d = torch.exp(-(taps**2) / (2 * blur**2))
    kernel = torch.outer(kernel_1d, kernel_1d)
    kernel = kernel / kernel.norm()  # unit L2 norm: blurred white noise keeps unit variance

    def apply(clean: Tensor, normal: Tensor) -> Tensor:
        weight = kernel.to(normal)[None, None].repeat(clean.shape[1], 1, 1, 1)
        padded = F.pad(normal, (radius,) * 4, mode="reflect")
        noise = F.conv2d(padded, weight, groups=clean.shape[1])
        return (clean + sigma_255 / 255.0 * noise).clamp(0, 1)

    return apply


def baseline_level(level: int) -> Noise:
    """The baseline's noise at fixed test level ``level`` (1–4)."""
    sigma_r, sigma_s = TEST_LEVELS[level]

    def apply(clean: Tensor, normal: Tensor) -> Tensor:
        batch = clean.shape[0]
        return _apply_noise(
            clean, torch.full((batch,), sigma_r), torch.full((batch,), sigma_s), normal
        )

    return apply


def jpeg_after(level: int, quality: int = JPEG_QUALITY) -> Noise:
    """Baseline noise at ``level``, then an 8-bit JPEG round trip (Pillow, 4:2:0)."""
    noise = baseline_level(level)

    def apply(clean: Tensor, normal: Tensor) -> Tensor:
        out = []
        for image in noise(clean, normal):
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
        return torch.stack(out).to(clean.device, clean.dtype) / 255.0

    return apply
