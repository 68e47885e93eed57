"""Named evaluation noise: the baseline's levels 1–4 and other noise types, for generalisation.

``noisy_at(clean, level, seed)`` is the one entry point of evaluation (``jicd evaluate --levels``):

=====================  ===================================================================
name                   noise
=====================  ===================================================================
``1`` … ``4``          the baseline's gamma + read/shot noise (:mod:`jicd.noise`)
``gaussian15/25/50``   additive white Gaussian, σ = 15, 25, 50 / 255, in sRGB
``poisson-gaussian``   signal-dependent in sRGB: ``N(x, a·x + b²)``, a = 0.01, b = 0.02
``correlated25``       Gaussian σ = 25/255 blurred by a 1-px Gaussian kernel, rescaled to σ
``jpeg-level2``        level 2, then JPEG at quality 75 (what phones hand over)
``unprocess-low/mid/   camera-pipeline noise at fixed camera settings (:mod:`jicd.unprocess`)
high``
=====================  ===================================================================

Every image gets its own CPU generator seeded ``seed`` (as the baseline's test levels), so a
batch gives the same result as coding images one by one, on any device.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from jicd.errors import UserError
from jicd.noise import TEST_LEVELS, noisy_at_level, seeded_normal
from jicd.unprocess import TEST_CAMERA_SHOT, evaluation_camera, unprocess_noise

POISSON_GAUSSIAN = (0.01, 0.02)
"""``(a, b)``: variance ``a·x + b²`` of the sRGB Poisson–Gaussian level."""
JPEG_QUALITY = 75


def _normal(clean: Tensor, seed: int) -> Tensor:
    """A standard normal of ``clean``'s shape, one CPU generator seeded ``seed`` per image."""
    return seeded_normal(clean, [seed] * clean.shape[0])


def gaussian(sigma_255: float) -> Callable[[Tensor, int], Tensor]:
    """Additive white Gaussian noise of std ``sigma_255 / 255``."""

    def apply(clean: Tensor, seed: int) -> Tensor:
        return (clean + sigma_255 / 255.0 * _normal(clean, seed)).clamp(0, 1)

    return apply


def poisson_gaussian(clean: Tensor, seed: int) -> Tensor:
    """Signal-dependent sRGB noise ``N(x, a·x + b²)`` with :data:`POISSON_GAUSSIAN`."""
    a, b = POISSON_GAUSSIAN
    return (clean + torch.sqrt(a * clean + b * b) * _normal(clean, seed)).clamp(0, 1)


def correlated(sigma_255: float, blur: float = 1.0) -> Callable[[Tensor, int], Tensor]:
    """Spatially correlated Gaussian noise: white noise blurred per channel, rescaled to σ."""
    radius = int(3 * blur + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel_1d = torch.exp(-(taps**2) / (2 * blur**2))
    kernel = torch.outer(kernel_1d, kernel_1d)
    kernel = kernel / kernel.norm()  # unit L2 norm: blurred white noise keeps unit variance

    def apply(clean: Tensor, seed: int) -> Tensor:
        normal = _normal(clean, seed)
        weight = kernel.to(normal)[None, None].repeat(clean.shape[1], 1, 1, 1)
        padded = F.pad(normal, (radius,) * 4, mode="reflect")
        noise = F.conv2d(padded, weight, groups=clean.shape[1])
        return (clean + sigma_255 / 255.0 * noise).clamp(0, 1)

    return apply


def jpeg_after(level: int, quality: int = JPEG_QUALITY) -> Callable[[Tensor, int], Tensor]:
    """Baseline noise at ``level``, then an 8-bit JPEG round trip (Pillow, 4:2:0)."""

    def apply(clean: Tensor, seed: int) -> Tensor:
        noisy = noisy_at_level(clean, level, seed)
        out = []
        for image in noisy:
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
        return torch.stack(out).to(clean.device, clean.dtype) / 255.0

    return apply


def unprocessed(name: str) -> Callable[[Tensor, int], Tensor]:
    """Camera-pipeline noise at the fixed camera of ``name``."""

    def apply(clean: Tensor, seed: int) -> Tensor:
        noisy = [
            unprocess_noise(
                image[None], torch.Generator().manual_seed(seed), camera=evaluation_camera(name, 1)
            )
            for image in clean
        ]
        return torch.cat(noisy)

    return apply


NAMED_LEVELS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "gaussian15": gaussian(15),
    "gaussian25": gaussian(25),
    "gaussian50": gaussian(50),
    "poisson-gaussian": poisson_gaussian,
    "correlated25": correlated(25),
    "jpeg-level2": jpeg_after(2),
    **{name: unprocessed(name) for name in TEST_CAMERA_SHOT},
}
"""Evaluation noise types besides the baseline's numbered levels."""

LEVEL_CHOICES = [str(level) for level in TEST_LEVELS] + list(NAMED_LEVELS)


def parse_level(level: str | int) -> int | str:
    """``"3"`` / ``3`` → 3, ``"gaussian25"`` → itself; anything else is a one-line error."""
    text = str(level)
    if text in NAMED_LEVELS:
        return text
    if text.isdigit() and int(text) in TEST_LEVELS:
        return int(text)
    raise UserError(f"unknown noise level {text!r}; choose from {', '.join(LEVEL_CHOICES)}")


def noisy_at(clean: Tensor, level: str | int, seed: int = 0) -> Tensor:
    """Evaluation noise ``level`` (a numbered baseline level or a name) on ``(B, 3, H, W)``."""
    parsed = parse_level(level)
    if isinstance(parsed, int):
        return noisy_at_level(clean, parsed, seed)
    return NAMED_LEVELS[parsed](clean, seed)
