"""Named evaluation noise types: statistics, seeding, batch independence, choices."""

from __future__ import annotations

import pytest
import torch

from jicd.errors import UserError
from jicd.noise import noisy_at_level
from jicd.noise_types import LEVEL_CHOICES, NAMED_LEVELS, noisy_at, parse_level

GREY = torch.full((1, 3, 128, 128), 0.5)


def _smooth(batch: int = 2, side: int = 64) -> torch.Tensor:
    coarse = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=side, mode="bilinear")


@pytest.mark.parametrize("level", LEVEL_CHOICES)
def test_every_level_is_seeded_and_batch_independent(level: str) -> None:
    clean = _smooth()
    batch = noisy_at(clean, level, seed=3)
    assert torch.equal(batch, noisy_at(clean, level, seed=3))
    assert not torch.equal(batch, noisy_at(clean, level, seed=4))
    one_by_one = torch.cat([noisy_at(clean[i : i + 1], level, seed=3) for i in range(2)])
    assert torch.equal(batch, one_by_one)
    assert batch.shape == clean.shape and float(batch.min()) >= 0 and float(batch.max()) <= 1


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_gaussian_std(sigma: int) -> None:
    noise = noisy_at(GREY, f"gaussian{sigma}") - GREY
    # 50/255 on grey 0.5 clips rarely (2.5 σ): allow a little shrinkage there
    assert float(noise.std()) == pytest.approx(sigma / 255, rel=0.03 if sigma < 50 else 0.05)


def test_correlated_noise_keeps_sigma_and_correlates_neighbours() -> None:
    noise = noisy_at(GREY, "correlated25") - GREY
    assert float(noise.std()) == pytest.approx(25 / 255, rel=0.05)
    right = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))
    white = noisy_at(GREY, "gaussian25") - GREY
    white_r = torch.corrcoef(torch.stack([white[..., :-1].flatten(), white[..., 1:].flatten()]))
    assert float(right[0, 1]) > 0.5 and abs(float(white_r[0, 1])) < 0.05


def test_poisson_gaussian_grows_with_the_signal() -> None:
    dark, bright = torch.full((1, 3, 96, 96), 0.2), torch.full((1, 3, 96, 96), 0.8)
    std_dark = float((noisy_at(dark, "poisson-gaussian") - dark).std())
    std_bright = float((noisy_at(bright, "poisson-gaussian") - bright).std())
    assert std_dark == pytest.approx((0.01 * 0.2 + 0.02**2) ** 0.5, rel=0.05)
    assert std_bright == pytest.approx((0.01 * 0.8 + 0.02**2) ** 0.5, rel=0.05)


def test_jpeg_level_is_level_2_then_8_bit_jpeg() -> None:
    clean = _smooth(1, 64)
    jpeg = noisy_at(clean, "jpeg-level2")
    assert torch.equal(jpeg * 255, (jpeg * 255).round())  # decoded 8-bit pixels
    level2 = noisy_at_level(clean, 2)
    assert 0 < float((jpeg - level2).abs().mean()) < 0.1


def test_level_parsing_and_errors() -> None:
    assert (
        parse_level("3") == 3 and parse_level(4) == 4 and parse_level("gaussian25") == "gaussian25"
    )
    assert set(NAMED_LEVELS) < set(LEVEL_CHOICES)
    with pytest.raises(UserError, match="unknown noise level 'gaussian30'; choose from 1, 2"):
        noisy_at(GREY, "gaussian30")
    with pytest.raises(UserError, match="unknown noise level '5'"):
        parse_level(5)
