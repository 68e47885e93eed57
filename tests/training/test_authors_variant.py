"""The authors'-code contrastive variant (option) and the recipes' init_from requirement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jicd.errors import UserError
from jicd.models import build_model
from jicd.models.joint_codec import AuthorsProjectionHead
from trainer.config import load_config, resolve_config
from trainer.losses import JointLoss, LossConfig, nt_xent

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_authors_head_shapes_and_its_256_pixel_limit() -> None:
    head = AuthorsProjectionHead()
    assert head.mlp[0].weight.shape == (128, 64) and head.mlp[2].weight.shape == (128, 128)
    feature = torch.randn(2, 16, 64, 64)  # ga0 of a 256-px patch at N=16
    out = head(feature)
    assert out.shape == (2, 16)  # one value per channel: no L2 normalisation
    assert torch.allclose(out, head.mlp(feature).mean(dim=(2, 3)))
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))
    with pytest.raises(UserError, match="256-pixel patches only.*got 128-pixel"):
        head(torch.randn(2, 16, 32, 32))


def test_model_with_the_authors_head_projects_ga0_of_256_px_patches() -> None:
    torch.manual_seed(0)
    model = build_model("jicd", 1, channels=16, head="authors")
    x = torch.rand(2, 3, 256, 256)
    out = model(x, x, x.flip(-1))
    assert out["proj"]["noisy"].shape == (2, 16) and out["proj"]["augmented"].shape == (2, 16)
    assert torch.allclose(out["proj"]["noisy"], model.proj(model.ga0(x)), atol=1e-5)


def authors_info_nce(fea_ae: torch.Tensor, fea_noisy: torch.Tensor) -> torch.Tensor:
    """``info_nce_loss`` + ``CrossEntropyLoss`` of JICDCS ``criterion.py``, restated (B = n)."""
    features = torch.cat([fea_ae, fea_noisy], dim=0)
    n = fea_ae.size(0)
    labels = torch.cat([torch.arange(n) for _ in range(2)], dim=0)
    labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    similarity = features @ features.T  # no F.normalize: the line is commented out there
    mask = torch.eye(labels.shape[0], dtype=torch.bool)
    labels = labels[~mask].view(labels.shape[0], -1)
    similarity = similarity[~mask].view(similarity.shape[0], -1)
    positives = similarity[labels.bool()].view(labels.shape[0], -1)
    negatives = similarity[~labels.bool()].view(similarity.shape[0], -1)
    logits = torch.cat([positives, negatives], dim=1) / 0.07
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


def test_nt_xent_without_normalisation_is_the_authors_formula() -> None:
    generator = torch.Generator().manual_seed(2)
    noisy, aug = torch.randn(6, 16, generator=generator), torch.randn(6, 16, generator=generator)
    noisy, aug = noisy * 0.3, aug * 0.3  # logits of raw dot products stay finite
    ours = nt_xent(noisy, aug, 0.07, normalize=False)
    assert ours.item() == pytest.approx(authors_info_nce(aug, noisy).item(), rel=1e-5)
    assert abs(nt_xent(noisy, aug, 0.07).item() - ours.item()) > 0.1  # normalising differs


def test_joint_loss_follows_loss_normalize() -> None:
    generator = torch.Generator().manual_seed(3)
    proj = {"noisy": torch.randn(4, 8, generator=generator), "augmented": torch.randn(4, 8)}
    out = {"x_hat": torch.rand(4, 3, 8, 8), "likelihoods": {"y": torch.rand(4, 2, 1, 1)}}
    clean = torch.rand(4, 3, 8, 8)
    raw = JointLoss(LossConfig(normalize=False), 0.01)({**out, "proj": proj}, clean)
    assert raw["contrastive"].item() == pytest.approx(
        nt_xent(proj["noisy"], proj["augmented"], 0.07, normalize=False).item()
    )


def test_resolve_sets_normalize_from_the_head_and_checks_the_patch() -> None:
    paper = resolve_config(load_config(CONFIGS / "smoke.yaml"), 1)
    assert paper.loss.normalize is True
    authors = load_config(CONFIGS / "smoke.yaml", ["model.head=authors", "data.patch_size=256"])
    assert resolve_config(authors, 1).loss.normalize is False
    small = load_config(CONFIGS / "smoke.yaml", ["model.head=authors"])  # 64-px patches
    with pytest.raises(UserError, match="256-pixel patches only.*data.patch_size=64"):
        resolve_config(small, 1)


@pytest.mark.parametrize("name", [f"q{q}.yaml" for q in range(1, 7)] + ["baseline_q3.yaml"])
def test_paper_recipes_refuse_to_start_without_init_from(name: str) -> None:
    with pytest.raises(UserError) as info:
        resolve_config(load_config(CONFIGS / name), 1)
    message = str(info.value)
    assert "train.init_from=FILE" in message and "train.init_from=none" in message
    assert "\n" not in message
    scratch = resolve_config(load_config(CONFIGS / name, ["train.init_from=none"]), 1)
    assert scratch.train.init_path() is None
    given = resolve_config(load_config(CONFIGS / name, ["train.init_from=anchor.pth"]), 1)
    assert given.train.init_path() == "anchor.pth"


def test_smoke_and_demo_train_from_scratch_without_init_from() -> None:
    for name in ("smoke.yaml", "demo.yaml"):
        cfg = resolve_config(load_config(CONFIGS / name), 2)
        assert cfg.train.require_init_from is False and cfg.train.init_path() is None


ABLATION_ROWS = {  # Tables 4-5: (preset, contrastive, self_onn, multi_scale)
    "row1_baseline": ("baseline", False, False, False),
    "row2_cl": ("jicd", True, False, False),
    "row3_self_onn": ("jicd", False, True, False),
    "row4_cl_self_onn": ("jicd", True, True, False),
    "row5_all": ("jicd", True, True, True),
}


@pytest.mark.parametrize("row", sorted(ABLATION_ROWS))
def test_ablation_presets_are_the_q6_recipe_with_the_rows_switches(row: str) -> None:
    cfg = load_config(CONFIGS / "ablation" / f"{row}.yaml")
    preset, *flags = ABLATION_ROWS[row]
    assert cfg.model.preset == preset and cfg.model.quality == 6
    assert tuple(cfg.model.flags().values()) == tuple(flags)
    q6 = load_config(CONFIGS / "q6.yaml")
    assert (cfg.optim, cfg.loss, cfg.data) == (q6.optim, q6.loss, q6.data)
    assert cfg.train.require_init_from and cfg.train.run_dir == f"runs/ablation/{row}"
