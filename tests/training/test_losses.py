"""Loss terms of eq. 10 and the NT-Xent loss against hand-written formulas (single process)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import JointLoss, LossConfig, nt_xent


def nt_xent_by_hand(z_noisy: torch.Tensor, z_aug: torch.Tensor, tau: float) -> float:
    """SimCLR's loss written out with Python loops: mean over 2N anchors of −log softmax(pos)."""
    views = [v / v.norm() for v in torch.cat([z_noisy, z_aug]).double()]
    n = len(z_noisy)
    total = 0.0
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        sims = {k: float(anchor @ other) / tau for k, other in enumerate(views) if k != i}
        total += -sims[positive] + math.log(sum(math.exp(s) for s in sims.values()))
    return total / (2 * n)


def test_nt_xent_matches_hand_formula():
    z_noisy = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0]])
    z_aug = torch.tensor([[0.9, 0.1, 0.4], [0.0, 1.2, 0.0], [0.5, -0.5, 0.5]])
    for tau in (0.07, 0.5):
        expected = nt_xent_by_hand(z_noisy, z_aug, tau)
        assert nt_xent(z_noisy, z_aug, tau).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_is_cosine_based_and_fp32():
    torch.manual_seed(0)
    z_noisy, z_aug = torch.randn(4, 8), torch.randn(4, 8)
    loss = nt_xent(z_noisy, z_aug, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(nt_xent(3 * z_noisy, 0.5 * z_aug, 0.1), loss)
    torch.testing.assert_close(
        nt_xent(z_noisy.bfloat16(), z_aug.bfloat16(), 0.1), loss, atol=0.05, rtol=0
    )
    aligned = nt_xent(z_noisy, z_noisy, 0.1)  # identical views: the positive dominates
    assert aligned < loss


def fake_output(batch=2, guidance=True, proj=True) -> tuple[dict, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, 64, 64, generator=gen)
    out = {
        "x_hat": clean + 0.1,
        "likelihoods": {
            "y": torch.full((batch, 8, 4, 4), 0.5),
            "z": torch.full((batch, 8, 1, 1), 0.25),
        },
    }
    if guidance:
        zeros, ones = torch.zeros(batch, 8, 16, 16), torch.ones(batch, 8, 4, 4)
        out["guidance"] = {"y0": zeros, "y0_gt": zeros + 0.5, "y1": ones, "y1_gt": ones * 3}
    if proj:
        z = torch.randn(batch, 16, generator=gen)
        out["proj"] = {"noisy": z, "augmented": z + 0.1}
    return out, clean


def test_joint_loss_terms_follow_equation_10():
    cfg = LossConfig(lambda_g=3.0, lambda_c=1.5, temperature=0.07)
    out, clean = fake_output()
    terms = JointLoss(cfg, lmbda=0.01)(out, clean)
    pixels = 2 * 64 * 64
    assert terms["bpp_y"].item() == pytest.approx(2 * 8 * 16 * 1.0 / pixels)  # −log2(0.5) = 1
    assert terms["bpp_z"].item() == pytest.approx(2 * 8 * 1 * 2.0 / pixels)  # −log2(0.25) = 2
    assert terms["mse"].item() == pytest.approx(0.01)
    assert terms["distortion"].item() == pytest.approx(0.01 * 255**2 * 0.01)
    assert terms["guidance"].item() == pytest.approx(0.5 + 2.0)
    expected_cl = nt_xent(out["proj"]["noisy"], out["proj"]["augmented"], 0.07)
    expected = terms["bpp"] + terms["distortion"] + 3.0 * 2.5 + 1.5 * expected_cl
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_absent_branches_are_absent_terms():
    out, clean = fake_output(guidance=False, proj=False)
    terms = JointLoss(LossConfig(), lmbda=0.01)(out, clean)
    assert set(terms) == {"bpp_y", "bpp_z", "bpp", "mse", "distortion", "rd_loss", "loss"}
    assert terms["loss"] is terms["rd_loss"]


@pytest.mark.parametrize(
    "bad", [{"lmbda": 0.0}, {"lambda_g": -1.0}, {"lambda_c": -0.1}, {"temperature": 0.0}]
)
def test_loss_config_validation(bad):
    with pytest.raises(ValueError):
        LossConfig(**bad)


def test_ms_ssim_distortion_reaches_the_codec_and_matches_the_metric() -> None:
    from jicd.metrics import ms_ssim_float
    from jicd.models import build_model
    from trainer.losses import rd_terms

    torch.manual_seed(0)
    model = build_model("jicd", 2, channels=16)
    noisy = torch.rand(2, 3, 64, 64)
    out = model(noisy, noisy, noisy)
    # An untrained codec outputs values around 0 unrelated to any target, where pytorch_msssim
    # clips the negative similarities to 0 (zero gradient): shift the output into [0, 1] and
    # take a target near it, so the test measures gradient flow, not that corner.
    out["x_hat"] = out["x_hat"] + 0.5
    clean = (0.9 * out["x_hat"].detach() + 0.05).clamp(0, 1)
    terms = JointLoss(LossConfig(distortion="ms-ssim"), lmbda=4.58)(out, clean)
    ms = rd_terms(out["likelihoods"], out["x_hat"], clean, 4.58, "ms-ssim")["ms_ssim"]
    # 1 − MS-SSIM cancels digits (MS-SSIM ≈ 0.999): compare absolutely, at float32 precision
    assert terms["distortion"].item() == pytest.approx(4.58 * (1 - ms.mean().item()), abs=1e-5)
    terms["loss"].backward()
    for name in ("ga0.0.conv1.weight", "ga1.0.conv1.weight", "g_s.0.conv1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # at >= 161 px the loss's MS-SSIM is exactly the evaluation metric (five scales)
    big, other = torch.rand(1, 3, 192, 192), torch.rand(1, 3, 192, 192)
    from jicd.metrics import ms_ssim_per_image

    assert ms_ssim_per_image(big, other).item() == pytest.approx(ms_ssim_float(big, other), 1e-6)


def test_ms_ssim_lambdas_are_the_baselines() -> None:
    from trainer.config import load_config, resolve_config
    from trainer.losses import MS_SSIM_LAMBDAS

    # conf/train/multiscale-decomp_ms-ssim_q{2,3,5,6}.yml of the ECCV'22 baseline
    assert {q: MS_SSIM_LAMBDAS[q] for q in (2, 3, 5, 6)} == {2: 4.58, 3: 8.73, 5: 31.73, 6: 60.5}
    cfg = resolve_config(load_config(None, ["model.quality=5", "loss.distortion=ms-ssim"]), 1)
    assert cfg.loss.lmbda == 31.73
    with pytest.raises(ValueError, match="loss.distortion: unknown 'ssim'"):
        LossConfig(distortion="ssim")
