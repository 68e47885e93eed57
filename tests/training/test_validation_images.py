"""TensorBoard validation images: one row per sample, clean | noisy | reconstruction, its level."""

from __future__ import annotations

import torch

from jicd.models import ModelConfig, build_model_from_config
from jicd.noise import validation_noise
from trainer.validation import validate, validation_rows

P = 64


def test_each_sample_is_one_row_clean_noisy_reconstruction_in_that_order():
    colours = torch.tensor([0.1, 0.5, 0.9])
    triplet = colours.view(3, 1, 1, 1).expand(3, 3, P, P)  # clean 0.1, noisy 0.5, recon 0.9
    images = validation_rows({(6, 2): triplet, (1, 1): triplet})  # (index, level - 1)
    assert list(images) == ["val/level2/sample1", "val/level3/sample6"]  # level = i % 4 + 1
    image = images["val/level2/sample1"]
    assert image.shape == (1, 3, P + 4, 3 * P + 8)  # a single row of three, 2 px borders
    for column, colour in enumerate(colours.tolist()):
        left = 2 + column * (P + 2)
        block = image[0, :, 2 : 2 + P, left : left + P]
        assert torch.allclose(block, torch.full_like(block, colour))
    assert torch.all(image[0, :, :, 0:2] == 1.0)  # white separators, not black fill


def test_validate_returns_the_first_samples_as_labelled_rows():
    torch.manual_seed(0)
    model = build_model_from_config(ModelConfig(preset="jicd", quality=1, channels=16))
    clean = torch.rand(6, 3, P, P)
    loader = [
        {"clean": clean[:4], "index": torch.arange(0, 4)},
        {"clean": clean[4:], "index": torch.arange(4, 6)},
    ]
    results, images = validate(model, loader, lmbda=0.01, num_images=5)
    assert list(images) == [f"val/level{i % 4 + 1}/sample{i}" for i in range(5)]
    row = images["val/level4/sample3"][0]
    assert torch.allclose(row[:, 2 : 2 + P, 2 : 2 + P], clean[3])
    noisy = validation_noise(clean[3:4], [3])[0]
    assert torch.allclose(row[:, 2 : 2 + P, P + 4 : 2 * P + 4], noisy)
    assert results["num_images"] == 6


def test_paired_validation_uses_the_batch_noisy_image_and_reports_real():
    torch.manual_seed(0)
    model = build_model_from_config(ModelConfig(preset="jicd", quality=1, channels=16))
    clean = torch.rand(2, 3, P, P)
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    loader = [{"clean": clean, "noisy": noisy, "index": torch.arange(2)}]
    results, images = validate(model, loader, lmbda=0.01, num_images=2)
    assert list(images) == ["val/real/sample0", "val/real/sample1"]
    assert torch.allclose(images["val/real/sample1"][0][:, 2 : 2 + P, P + 4 : 2 * P + 4], noisy[1])
    assert "psnr_real" in results and not any("level" in k for k in results)
    assert results["psnr"] == results["psnr_real"] and results["num_images"] == 2
