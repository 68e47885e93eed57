"""The baseline's camera noise (gamma round trip + read/shot noise): training, validation,
test levels 1–4.

It reproduces the baseline (Cheng, Xie, Chen, ECCV 2022) exactly, quirks included, so that numbers
are comparable with the published ones (``docs/method.md``, "Noise synthesis"):

1. ``lin = degamma(x)`` — ``(v + 0.055)^2.4 / 1.055`` above 0.0031308, else ``v / 12.92``;
2. ``noisy_lin ~ Normal(lin, sqrt(sigma_r^2 + sigma_s * lin))`` — ``sigma_s`` is a *variance*
   factor (shot noise), one ``(sigma_r, sigma_s)`` pair per image;
3. ``noisy = clamp(gamma(noisy_lin), 0, 1)`` — ``1.055 (v + 0.001)^(1/2.4) - 0.055`` above
   0.0031308, else ``12.92 v``. The result stays float (no 8-bit rounding).

``degamma`` and ``gamma`` are deliberately *not* exact inverses (white maps to 1.055**1.4 = 1.078
in the linear domain): that is the benchmark's definition, not a bug to fix.

Reproducibility: every fixed-seed draw (test levels, validation) happens on a seeded CPU generator,
one generator per image, and only then moves to the image's device, so the same image gets the same
noise on any device, in any batch composition and after any resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from jicd.errors import UserError

SRGB_THRESHOLD = 0.0031308
"""Switch point between the linear and the power branch of both transfer functions."""

TEST_LEVELS: dict[int, tuple[float, float]] = {
    1: (0.0068354, 0.05200081**2),
    2: (0.01572141, 0.07886314**2),
    3: (0.03615925, 0.11960187**2),
    4: (0.08316627, 0.18138522**2),
}
"""Fixed test noise levels: level -> (sigma_r, sigma_s). Levels 3 and 4 lie outside training."""


def degamma(x: torch.Tensor) -> torch.Tensor:
    """Baseline sRGB -> "linear" mapping (not the exact sRGB curve; see module docstring)."""
    power = (x.clamp_min(SRGB_THRESHOLD) + 0.055).pow(2.4) / 1.055
    return torch.where(x > SRGB_THRESHOLD, power, x / 12.92)


def gamma(x: torch.Tensor) -> torch.Tensor:
    """Baseline "linear" -> sRGB mapping (not the exact inverse of :func:`degamma`)."""
    # The clamp keeps the unused branch finite for negative noisy values (no NaN in where()).
    power = 1.055 * (x.clamp_min(SRGB_THRESHOLD) + 0.001).pow(1.0 / 2.4) - 0.055
    return torch.where(x > SRGB_THRESHOLD, power, 12.92 * x)


def add_noise(
    clean: torch.Tensor,
    sigma_r: torch.Tensor,
    sigma_s: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add baseline camera noise with one ``(sigma_r, sigma_s)`` pair per image.

    Args:
        clean: ``(B, 3, H, W)`` float images in [0, 1], on any device.
        sigma_r: ``(B,)`` read-noise standard deviations.
        sigma_s: ``(B,)`` shot-noise variance factors.
        generator: draws the Gaussian on the generator's device (then moves it to ``clean``'s);
            ``None`` uses the global RNG of ``clean``'s device.

    Returns:
        ``(B, 3, H, W)`` noisy images, float, clamped to [0, 1].
    """
    device = generator.device if generator is not None else clean.device
    normal = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    return _apply_noise(clean, sigma_r, sigma_s, normal.to(clean.device))


def _apply_noise(
    clean: torch.Tensor, sigma_r: torch.Tensor, sigma_s: torch.Tensor, normal: torch.Tensor
) -> torch.Tensor:
    """Noise formula given a standard normal draw ``normal`` of ``clean``'s shape."""
    shape = (-1, 1, 1, 1)
    sigma_r = sigma_r.to(clean.device, clean.dtype).view(shape)
    sigma_s = sigma_s.to(clean.device, clean.dtype).view(shape)
    lin = degamma(clean)
    std = torch.sqrt(sigma_r**2 + sigma_s * lin)
    return gamma(lin + std * normal).clamp(0.0, 1.0)


def sample_train_sigmas(
    ranges: tuple[Sequence[float], Sequence[float]],
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw per-image training noise levels, log-uniform in the given ranges.

    Args:
        ranges: ``(log10_sigma_r, log10_sigma_s)``, each ``(low, high)``
            (``noise.log10_sigma_r`` / ``noise.log10_sigma_s``).

    Returns:
        ``(sigma_r, sigma_s)``, each ``(B,)`` float32 on ``device``.
    """
    gen_device = generator.device if generator is not None else "cpu"
    uniform = torch.rand(2, batch_size, generator=generator, device=gen_device)
    (r_low, r_high), (s_low, s_high) = ranges
    low = torch.tensor([r_low, s_low], device=gen_device)
    high = torch.tensor([r_high, s_high], device=gen_device)
    sigmas = 10.0 ** (low[:, None] + (high - low)[:, None] * uniform)
    return sigmas[0].to(device), sigmas[1].to(device)


def _seeded_noise(clean: torch.Tensor, seeds: Sequence[int], levels: Sequence[int]) -> torch.Tensor:
    """Noise image ``i`` at level ``levels[i]`` with its own CPU generator seeded ``seeds[i]``."""
    unknown = sorted(set(levels) - set(TEST_LEVELS))
    if unknown:
        raise UserError(f"unknown noise level {unknown[0]}; choose one of {list(TEST_LEVELS)}")
    sigma_r = torch.tensor([TEST_LEVELS[level][0] for level in levels])
    sigma_s = torch.tensor([TEST_LEVELS[level][1] for level in levels])
    return _apply_noise(clean, sigma_r, sigma_s, seeded_normal(clean, seeds))


def seeded_normal(clean: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """A standard normal of ``clean``'s shape ``(B, C, H, W)``: image ``i`` drawn on the CPU
    from its own generator seeded ``seeds[i]`` (the same numbers on every device), then moved
    to ``clean``'s device and dtype."""
    draws = [
        torch.randn(clean.shape[1:], generator=torch.Generator().manual_seed(int(seed)))
        for seed in seeds
    ]
    return torch.stack(draws).to(clean.device, clean.dtype)


def noisy_at_level(clean: torch.Tensor, level: int, seed: int = 0) -> torch.Tensor:
    """Test noise: every image of ``clean (B, 3, H, W)`` gets level ``level`` drawn with ``seed``.

    Each image uses its own generator seeded ``seed`` (the baseline seeds every test image with
    0), so batching images together gives the same result as coding them one by one.
    """
    return _seeded_noise(clean, [seed] * clean.shape[0], [level] * clean.shape[0])


def validation_noise(clean: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Validation noise: sample ``index`` gets level ``index % 4 + 1`` drawn with seed ``index``.

    Args:
        clean: ``(B, 3, H, W)`` images in [0, 1].
        indices: ``(B,)`` positions of the images in the validation split.

    Returns:
        ``(B, 3, H, W)`` noisy images, identical across runs, resumes, ranks and devices.
    """
    indices = [int(i) for i in indices]
    levels = [i % len(TEST_LEVELS) + 1 for i in indices]
    return _seeded_noise(clean, indices, levels)
