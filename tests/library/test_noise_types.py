"""The noise types of ``jicd.noise``: one vocabulary for training and evaluation; statistics,
seeding, batch independence, choices."""

from __future__ import annotations

import pytest
import torch

from jicd.errors import UserError
from jicd.noise import (
    EVALUATION_CHOICES,
    NOISE_TYPES,
    NoiseConfig,
    noisy_at,
    noisy_at_level,
    parse_noise,
    training_noise,
)

RANDOM = [name for name in EVALUATION_CHOICES if name != "none"]

GREY = torch.full((1, 3, 128, 128), 0.5)


def _smooth(batch: int = 2, side: int = 64) -> torch.Tensor:
    coarse = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=side, mode="bilinear")


@pytest.mark.parametrize("level", RANDOM)
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
        parse_noise("3") == 3 and parse_noise(4) == 4 and parse_noise("gaussian25") == "gaussian25"
    )
    with pytest.raises(UserError, match="unknown noise level 'gaussian30'; choose from gamma, 1"):
        noisy_at(GREY, "gaussian30")
    with pytest.raises(UserError, match="unknown noise level '5'"):
        parse_noise(5)
    with pytest.raises(UserError, match="real pairs are scored at level real"):
        parse_noise("paired")


def test_numbered_levels_are_the_baseline_test_levels() -> None:
    clean = _smooth()
    for level in (1, 2, 3, 4):
        assert torch.equal(noisy_at(clean, level, seed=2), noisy_at_level(clean, level, seed=2))


def test_none_is_the_clean_image_in_both_roles() -> None:
    clean = _smooth()
    assert noisy_at(clean, "none", seed=1) is clean
    assert training_noise(NoiseConfig(kind="none"), {"clean": clean}) is clean


@pytest.mark.parametrize("kind", [n for n, t in NOISE_TYPES.items() if t.train and n != "paired"])
def test_every_noise_type_trains(kind: str) -> None:
    # One vocabulary: whatever evaluation knows, training can use (noise.kind=NAME).
    clean = _smooth()
    cfg = NoiseConfig(kind=kind)
    first = training_noise(cfg, {"clean": clean}, torch.Generator().manual_seed(1))
    again = training_noise(cfg, {"clean": clean}, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and first.shape == clean.shape
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    assert kind == "none" or not torch.equal(first, clean)


def test_every_evaluation_type_trains_and_vice_versa() -> None:
    trains = {n for n, t in NOISE_TYPES.items() if t.train}
    evaluates = {n for n, t in NOISE_TYPES.items() if t.evaluate}
    assert trains - evaluates == {"paired"} and evaluates <= trains
