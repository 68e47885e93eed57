"""Noise model: baseline formulas (quirks included), statistics, seeding and levels."""

from __future__ import annotations

import math

import pytest
import torch

from jicd.noise import (
    TEST_LEVELS,
    NoiseConfig,
    add_noise,
    degamma,
    gamma,
    noisy_at_level,
    sample_train_sigmas,
    validation_noise,
)


def _gamma_inverse(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of the baseline ``gamma`` on its power branch (test-only)."""
    return ((y.double() + 0.055) / 1.055) ** 2.4 - 0.001


def test_degamma_and_gamma_hand_values() -> None:
    x = torch.tensor([1.0, 0.5, 0.003, 0.0], dtype=torch.float64)
    expected_lin = [1.055**1.4, (0.555**2.4) / 1.055, 0.003 / 12.92, 0.0]
    assert degamma(x).tolist() == pytest.approx(expected_lin, rel=1e-12)
    v = torch.tensor([1.0, 0.2, 0.003, -0.01], dtype=torch.float64)
    expected = [1.055 * 1.001 ** (1 / 2.4) - 0.055, 1.055 * 0.201 ** (1 / 2.4) - 0.055]
    assert gamma(v).tolist() == pytest.approx([*expected, 12.92 * 0.003, -0.1292], rel=1e-12)


def test_round_trip_is_deliberately_not_identity() -> None:
    # White maps to 1.078 in "linear" space and back to > 1: the baseline's quirk, kept on purpose.
    white = torch.ones(1, dtype=torch.float64)
    assert degamma(white).item() == pytest.approx(1.0778, abs=1e-4)
    assert gamma(degamma(white)).item() > 1.0


def test_noise_std_matches_formula() -> None:
    value, sigma_r, sigma_s = 0.5, 0.02, 0.005
    clean = torch.full((2, 3, 256, 256), value, dtype=torch.float64)
    noisy = add_noise(
        clean,
        torch.tensor([sigma_r, 0.0]),
        torch.tensor([sigma_s, 0.0]),
        generator=torch.Generator().manual_seed(0),
    )
    lin = degamma(torch.tensor(value, dtype=torch.float64)).item()
    recovered = _gamma_inverse(noisy[0])
    assert recovered.mean().item() == pytest.approx(lin, abs=1e-3)
    assert recovered.std().item() == pytest.approx(math.sqrt(sigma_r**2 + sigma_s * lin), rel=0.01)
    # Zero sigmas: only the gamma(degamma(x)) quirk remains, no randomness.
    assert torch.allclose(noisy[1], gamma(degamma(clean[1])).clamp(0, 1))


def test_output_is_clamped_float() -> None:
    clean = torch.rand(2, 3, 32, 32)
    noisy = add_noise(clean, torch.full((2,), 0.3), torch.full((2,), 0.1))
    assert noisy.dtype == torch.float32 and noisy.min() >= 0 and noisy.max() <= 1
    assert not torch.isnan(noisy).any()


def test_generator_reproducibility() -> None:
    clean = torch.rand(3, 3, 16, 16)
    sigmas = (torch.full((3,), 0.05), torch.full((3,), 0.01))
    first = add_noise(clean, *sigmas, generator=torch.Generator().manual_seed(7))
    again = add_noise(clean, *sigmas, generator=torch.Generator().manual_seed(7))
    other = add_noise(clean, *sigmas, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_train_sigmas_log_uniform_in_range() -> None:
    cfg = NoiseConfig()
    sigma_r, sigma_s = sample_train_sigmas(
        cfg.sigma_ranges(), 20000, torch.Generator().manual_seed(0), "cpu"
    )
    assert sigma_r.shape == sigma_s.shape == (20000,)
    for sigma, (low, high) in ((sigma_r, cfg.log10_sigma_r), (sigma_s, cfg.log10_sigma_s)):
        logs = sigma.log10()
        assert logs.min() >= low - 1e-6 and logs.max() <= high + 1e-6
        assert logs.mean().item() == pytest.approx((low + high) / 2, abs=0.02)
        # Uniform in log space: a quarter of the draws in each quarter of the range.
        quarter = ((logs - low) / (high - low) < 0.25).float().mean().item()
        assert quarter == pytest.approx(0.25, abs=0.02)
    assert cfg.log10_sigma_r == [-3.0, -1.5] and cfg.log10_sigma_s == [-4.0, -2.0]


def test_noise_config_rejects_reversed_range() -> None:
    with pytest.raises(ValueError, match="log10_sigma_r"):
        NoiseConfig(log10_sigma_r=[-1.0, -2.0])


def test_test_levels_values() -> None:
    assert TEST_LEVELS[1] == pytest.approx((0.0068354, 0.05200081**2))
    assert TEST_LEVELS[4] == pytest.approx((0.08316627, 0.18138522**2))
    assert sorted(TEST_LEVELS) == [1, 2, 3, 4]


def test_noisy_at_level_is_per_image_seeded() -> None:
    clean = torch.rand(3, 3, 24, 24)
    batch = noisy_at_level(clean, level=2, seed=0)
    assert torch.equal(batch, noisy_at_level(clean, level=2, seed=0))
    for i in range(3):  # batching does not change an image's noise (up to float rounding)
        single = noisy_at_level(clean[i : i + 1], level=2, seed=0)
        assert torch.allclose(batch[i : i + 1], single, rtol=0, atol=1e-6)
    assert not torch.equal(batch, noisy_at_level(clean, level=2, seed=1))
    assert (noisy_at_level(clean, 4) - clean).std() > (noisy_at_level(clean, 1) - clean).std()
    with pytest.raises(ValueError, match="unknown noise level 5"):
        noisy_at_level(clean, level=5)


def test_validation_noise_seed_and_level_from_index() -> None:
    clean = torch.rand(4, 3, 20, 20)
    indices = torch.tensor([0, 5, 10, 7])
    noisy = validation_noise(clean, indices)
    for row, index in enumerate(indices.tolist()):
        expected = noisy_at_level(clean[row : row + 1], level=index % 4 + 1, seed=index)
        # Same draws; only float rounding of the vectorised maths may differ with batch layout.
        assert torch.allclose(noisy[row : row + 1], expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fixed_seed_noise_identical_on_gpu() -> None:
    clean = torch.rand(2, 3, 32, 32)
    cpu = validation_noise(clean, [3, 4])
    gpu = validation_noise(clean.cuda(), [3, 4]).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-6)


def test_training_noise_kinds() -> None:
    from jicd.errors import UserError
    from jicd.noise import NoiseConfig, add_noise, sample_train_sigmas, training_noise

    clean = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = NoiseConfig()
    # gamma: exactly the draws the trainer made before noise kinds existed
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sigma_r, sigma_s = sample_train_sigmas(cfg.sigma_ranges(), 3, gen_b, "cpu")
    expected = add_noise(clean, sigma_r, sigma_s, gen_b)
    assert torch.equal(training_noise(cfg, {"clean": clean}, gen_a), expected)
    # unprocess: one random camera per image, seeded by the generator
    unproc = NoiseConfig(kind="unprocess")
    first = training_noise(unproc, {"clean": clean}, torch.Generator().manual_seed(1))
    again = training_noise(unproc, {"clean": clean}, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, clean)
    # paired: the loader's noisy member, unchanged
    noisy = clean.flip(-1)
    paired = NoiseConfig(kind="paired")
    assert training_noise(paired, {"clean": clean, "noisy": noisy}) is noisy
    with pytest.raises(UserError, match="needs paired shards"):
        training_noise(paired, {"clean": clean})
    with pytest.raises(UserError, match="noise.kind: unknown kind 'poisson'"):
        NoiseConfig(kind="poisson")
