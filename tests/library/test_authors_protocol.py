"""Evaluation as the authors did it: truncating PSNR, full-image noise then crop, report labels."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from compressai.utils.eval_model.__main__ import compute_metrics
from torchvision import transforms

from jicd.codec.images import load_rgb
from jicd.evaluation import report, results_files
from jicd.evaluation.evaluate import write_results
from jicd.evaluation.protocol import noisy_pairs
from jicd.metrics import psnr_8bit, psnr_truncated
from jicd.noise import TEST_LEVELS
from trainer.testing import make_image


def image_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """An 8-bit clean image (as loaded) and a float reconstruction ~40 dB away from it,
    (1, 3, 192, 192) (MS-SSIM needs > 160 px)."""
    generator = torch.Generator().manual_seed(4)
    clean = torch.randint(0, 256, (1, 3, 192, 192), generator=generator) / 255.0
    return clean, (clean + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)


def authors_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """``codes/utils/util.py: psnr`` of the papers: through ToPILImage (truncates) and back."""

    def through_pil(x):
        return transforms.ToTensor()(transforms.ToPILImage()(x.clone().clamp_(0, 1).squeeze()))

    return -10 * math.log10(F.mse_loss(through_pil(a), through_pil(b)).item())


def test_psnr_is_the_authors_toPILImage_route() -> None:
    clean, decoded = image_pair()
    assert psnr_truncated(clean, decoded) == pytest.approx(authors_psnr(clean, decoded), abs=1e-5)
    # ... and not CompressAI's rounding, which reads higher (0.16 dB at 40 dB on Kodak):
    assert psnr_8bit(clean, decoded) - psnr_truncated(clean, decoded) > 0.05


def test_psnr_rgb_is_compressai_rounding() -> None:
    clean, decoded = image_pair()
    expected = compute_metrics(clean, decoded)["psnr-rgb"]
    assert psnr_8bit(clean, decoded) == pytest.approx(expected, abs=1e-4)


def authors_noise(clean: torch.Tensor, level: int, seed: int) -> torch.Tensor:
    """``SyntheticTestDataset`` of the baseline on the full image (their formula, restated)."""
    sigma_read, sigma_shot = TEST_LEVELS[level]
    mask = clean > 0.0031308  # UndosRGBGamma / sRGBGamma of their datasets/utils.py
    lin = torch.zeros_like(clean)
    lin[~mask] = clean[~mask] / 12.92
    lin[mask] = (clean[mask] + 0.055) ** 2.4 / 1.055
    generator = torch.Generator().manual_seed(seed)
    noisy = torch.normal(lin, torch.sqrt(sigma_read**2 + lin * sigma_shot), generator=generator)
    mask = noisy > 0.0031308
    srgb = torch.zeros_like(noisy)
    srgb[mask] = 1.055 * (noisy[mask] + 0.001) ** (1 / 2.4) - 0.055
    srgb[~mask] = noisy[~mask] * 12.92
    return srgb.clamp(0, 1)


def authors_cropping(x: torch.Tensor) -> torch.Tensor:
    """``util.cropping``: center crop to multiples of 64 with negative padding."""
    h, w = x.size(-2), x.size(-1)
    left, top = (w - w // 64 * 64) // 2, (h - h // 64 * 64) // 2
    right, bottom = w - w // 64 * 64 - left, h - h // 64 * 64 - top
    return F.pad(x, (-left, -right, -top, -bottom))


def test_noise_of_a_non_multiple_of_64_image_is_full_image_noise_then_crop(tmp_path) -> None:
    path = make_image(tmp_path / "odd.png", 150, 205, seed=2)
    full = load_rgb(str(path))
    [(level, clean, noisy)] = noisy_pairs(path, [3], seed=0)
    assert level == 3 and clean.shape[-2:] == (128, 192)
    expected = authors_cropping(authors_noise(full[0], 3, 0)).unsqueeze(0)
    assert torch.allclose(noisy, expected, atol=1e-5)
    assert torch.equal(clean, authors_cropping(full))
    cropped_first = authors_noise(authors_cropping(full)[0], 3, 0).unsqueeze(0)
    assert (noisy - cropped_first).abs().max() > 0.05  # the other order is another realisation


def rows(psnr_shift: float) -> list[dict]:
    """Per-image rows whose ``psnr`` equals the baseline's published Kodak level-1 points and
    whose ``psnr-rgb`` is ``psnr_shift`` dB higher."""
    reference = results_files.resolve_reference("baseline_eccv22")
    published = results_files.load_reference(reference)[("kodak", 1)]
    return [
        {
            "name": "ours",
            "checkpoint": f"q{q}.pt",
            "quality": q,
            "set": "kodak",
            "image": "a.png",
            "level": 1,
            "bpp": bpp,
            "psnr": psnr,
            "psnr-rgb": psnr + psnr_shift,
            "ms-ssim-rgb": 0.9,
            "bpp-estimate": bpp,
            "encoding_time": 1.0,
            "decoding_time": 1.0,
        }
        for q, bpp, psnr in zip(published.quality, published.bpp, published.psnr, strict=True)
    ]


def test_report_compares_each_reference_in_its_own_psnr_convention(tmp_path) -> None:
    write_results(rows(psnr_shift=0.3), tmp_path / "results", protocol={"psnr": "truncation"})
    saved = json.loads((tmp_path / "results" / "ours-kodak-level1.json").read_text())
    assert saved["protocol"] == {"psnr": "truncation"} and "psnr" in saved["results"]
    # A CompressAI-convention reference: the same points, read as psnr-rgb.
    published = json.loads((results_files.REFERENCE_DIR / "baseline_eccv22.json").read_text())
    rgb_ref = {"psnr_metric": "psnr-rgb", "qualities": published["qualities"]}
    rgb_ref["kodak"] = {"1": {k: v for k, v in published["kodak"]["1"].items()}}
    rgb_ref["kodak"]["1"]["psnr"] = [p + 0.3 for p in rgb_ref["kodak"]["1"]["psnr"]]
    (tmp_path / "rgb_ref.json").write_text(json.dumps(rgb_ref))
    argv = [
        str(tmp_path / "results"),
        "--reference",
        "baseline_eccv22",
        str(tmp_path / "rgb_ref.json"),
    ]
    assert report.main([*argv, "--output", str(tmp_path / "report")]) == 0
    entries = json.loads((tmp_path / "report" / "bd_rate.json").read_text())
    rates = {r["anchor"]: r for r in entries[0]["bd_rate"]}
    # Identical curves in the matching convention: BD-rate 0 against both references.
    assert rates["baseline_eccv22"]["metric"] == "psnr"
    assert rates["rgb_ref"]["metric"] == "psnr-rgb"
    assert abs(rates["baseline_eccv22"]["percent"]) < 0.01
    assert abs(rates["rgb_ref"]["percent"]) < 0.01
    table = (tmp_path / "report" / "bd_rate.md").read_text()
    assert any(f"| ours | baseline_eccv22 | {z} % | psnr |" in table for z in ("0.00", "-0.00"))
    assert any(f"| ours | rgb_ref | {z} % | psnr-rgb |" in table for z in ("0.00", "-0.00"))
    assert "truncation" in table and "| psnr [dB] | psnr-rgb [dB] |" in table
