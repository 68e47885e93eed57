"""JointDenoisingCodec: exact parameter counts, shapes, gradient reach, real coding, presets."""

from __future__ import annotations

import pytest
import torch
from compressai.models import Cheng2020Anchor
from torch import nn

from jicd.models import (
    PRESETS,
    QUALITIES,
    ModelConfig,
    Preset,
    build_model,
    lambda_for_quality,
    register_preset,
)
from jicd.models.layers import SelfONNConv2d
from jicd.models.weights import load_compressai_anchor
from trainer.losses import JointLoss, LossConfig

TINY = 16  # channels of the fast test models


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("quality", "d0", "d1", "baseline_pair", "backbone"),
    [(1, 489_412, 808_900, 675_072, 11_833_149), (4, 1_099_588, 1_818_436, 1_516_416, 26_598_956)],
)
def test_parameter_counts_match_method(quality, d0, d1, baseline_pair, backbone):
    jicd = build_model("jicd", quality)
    assert (count(jicd.d0), count(jicd.d1)) == (d0, d1)
    assert count(jicd) - count(jicd.d0) - count(jicd.d1) - count(jicd.proj) == backbone
    del jicd  # one N=192 model alive at a time
    baseline = build_model("baseline", quality)
    assert baseline.proj is None
    assert count(baseline.d0) + count(baseline.d1) == baseline_pair
    assert count(baseline) - baseline_pair == backbone


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("height", "width"), [(64, 128), (128, 64)])
def test_forward_shapes_and_finite(height, width):
    torch.manual_seed(0)
    model = build_model("jicd", 1, channels=TINY)
    clean = images(2, height, width)
    out = model(clean + 0.05 * torch.randn_like(clean), clean, clean.flip(-1))
    assert out["x_hat"].shape == clean.shape
    assert out["likelihoods"]["y"].shape == (2, TINY, height // 16, width // 16)
    assert out["likelihoods"]["z"].shape == (2, TINY, height // 64, width // 64)
    guidance = out["guidance"]
    assert guidance["y0"].shape == guidance["y0_gt"].shape == (2, TINY, height // 4, width // 4)
    assert guidance["y1"].shape == guidance["y1_gt"].shape == (2, TINY, height // 16, width // 16)
    assert out["proj"]["noisy"].shape == out["proj"]["augmented"].shape == (2, 128)
    assert torch.allclose(out["proj"]["noisy"].norm(dim=1), torch.ones(2))
    tensors = [out["x_hat"], *out["likelihoods"].values(), *guidance.values()]
    assert all(torch.isfinite(t).all() for t in tensors)


def test_branches_follow_inputs_and_flags():
    model = build_model("jicd", 1, channels=TINY, contrastive=False)
    x = images(1, 64, 64)
    assert model.proj is None
    assert set(model(x)) == {"x_hat", "likelihoods"}
    assert set(model(x, x, x)) == {"x_hat", "likelihoods", "guidance"}  # no head: no proj


@pytest.mark.parametrize(
    "kwargs",
    [{"preset": "jicd"}, {"preset": "baseline"}, {"preset": "jicd", "multi_scale": False}],
    ids=["jicd", "baseline", "jicd-no-multiscale"],
)
def test_backward_reaches_every_parameter(kwargs):
    torch.manual_seed(0)
    # 32 channels: CBAM's MLP has C/16 hidden units, and a single one can be a dead ReLU.
    model = build_model(quality=1, channels=32, **kwargs).train()
    clean = images(2, 64, 64)
    out = model(clean + 0.05 * torch.randn_like(clean), clean, clean.flip(-1))
    JointLoss(LossConfig(), lambda_for_quality(1))(out, clean)["loss"].backward()
    for name, param in model.named_parameters():
        if name.endswith("quantiles"):
            assert param.grad is None, f"{name}: the rate loss must not touch the quantiles"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"
    model.aux_loss().backward()
    assert model.entropy_bottleneck.quantiles.grad.abs().sum() > 0


def test_entropy_path_is_cheng2020anchor():
    """With identity denoisers, the model *is* Cheng2020Anchor (checks _entropy_forward too)."""
    torch.manual_seed(0)
    anchor = Cheng2020Anchor(TINY).eval()
    model = build_model("jicd", 1, channels=TINY).eval()
    load_compressai_anchor(model, anchor.state_dict())
    model.d0, model.d1 = nn.Identity(), nn.Identity()
    x = images(1, 64, 128)
    with torch.no_grad():
        ours, theirs = model(x), anchor(x)
    assert torch.equal(ours["x_hat"], theirs["x_hat"])
    for key in ("y", "z"):
        assert torch.equal(ours["likelihoods"][key], theirs["likelihoods"][key])


@pytest.mark.parametrize("training", [True, False])
def test_sync_free_entropy_bottleneck_equals_compressai_bit_for_bit(training: bool) -> None:
    from compressai.entropy_models import EntropyBottleneck

    model = build_model("jicd", 1, channels=TINY)
    ours = model.entropy_bottleneck
    theirs = EntropyBottleneck(TINY)
    theirs.load_state_dict(ours.state_dict())
    assert type(ours).__mro__[1] is EntropyBottleneck and ours.state_dict().keys() == (
        theirs.state_dict().keys()
    )
    z = torch.randn(2, TINY, 4, 6, requires_grad=True)
    results = []
    for module in (ours, theirs):
        torch.manual_seed(7)  # the same quantisation noise in training mode
        outputs, likelihood = module(z, training=training)
        (grad,) = torch.autograd.grad(likelihood.log().sum() + outputs.sum(), z)
        results.append((outputs, likelihood, grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def sequential_reconstruction(model, x: torch.Tensor) -> torch.Tensor:
    """x_hat of compress → decompress computed in parallel form, as CompressAI's coder does.

    The coder dequantises each latent around its context-dependent mean,
    ``gaussian_conditional.quantize(y, "dequantize", means)``; the masked context makes this a
    causal fixed point, reached after at most one pass per latent position.
    """
    y = model.g_a(x)
    z = model.h_a(y)
    medians = model.entropy_bottleneck._get_medians()
    params = model.h_s(model.entropy_bottleneck.quantize(z, "dequantize", medians))
    y_hat = torch.zeros_like(y)
    for _ in range(y.size(2) * y.size(3) + 1):
        ctx = model.context_prediction(y_hat)
        means = model.entropy_parameters(torch.cat([params, ctx], dim=1)).chunk(2, 1)[1]
        new = model.gaussian_conditional.quantize(y, "dequantize", means)
        if torch.equal(new, y_hat):
            break
        y_hat = new
    return model.g_s(y_hat).clamp(0, 1)  # decompress clamps too


def test_compress_decompress_matches_forward_path():
    torch.manual_seed(0)
    model = build_model("jicd", 1, channels=TINY).eval()
    model.update(force=True)
    x = images(1, 64, 128)
    with torch.no_grad():
        coded = model.compress(x)
        decoded = model.decompress(coded["strings"], coded["shape"])
        expected = sequential_reconstruction(model, x)
    y_strings, z_strings = coded["strings"]
    assert isinstance(y_strings[0], bytes) and len(y_strings[0]) > 0
    assert isinstance(z_strings[0], bytes) and len(z_strings[0]) > 0
    assert decoded["x_hat"].shape == x.shape
    torch.testing.assert_close(decoded["x_hat"], expected, atol=1e-4, rtol=0)


def test_self_onn_conv_is_power_series():
    torch.manual_seed(0)
    conv = SelfONNConv2d(4, 6, 3, q=3, padding=1)
    assert conv.weight.shape == (6, 12, 3, 3)
    x = torch.randn(2, 4, 8, 8)
    per_power = conv.weight.split(4, dim=1)  # power-major: [W_1 | W_2 | W_3]
    expected = sum(
        nn.functional.conv2d(x**n, w, padding=1) for n, w in enumerate(per_power, start=1)
    )
    torch.testing.assert_close(conv(x), expected + conv.bias.view(1, -1, 1, 1))
    bound = 1 / (12 * 9) ** 0.5
    assert conv.bias.abs().max() <= bound
    linear = SelfONNConv2d(4, 6, 3, q=1, padding=1)
    torch.testing.assert_close(
        linear(x), nn.functional.conv2d(x, linear.weight, linear.bias, padding=1)
    )


def test_model_config_validation():
    assert ModelConfig().flags() == {"contrastive": True, "self_onn": True, "multi_scale": True}
    assert ModelConfig(preset="baseline").flags() == dict.fromkeys(
        ("contrastive", "self_onn", "multi_scale"), False
    )
    assert ModelConfig(contrastive=False).arch_name() == "jicd[-contrastive]"
    assert ModelConfig(quality=5).num_channels() == QUALITIES[5][0] == 192
    for bad in (
        {"quality": 7},
        {"preset": "nope"},
        {"channels": 10},
        {"head": "other"},
        {"preset": "baseline", "self_onn": True},
    ):
        with pytest.raises(ValueError):
            ModelConfig(**bad)


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_preset("jicd", Preset("cbam", True, True, True, "again"))
    assert set(PRESETS) >= {"jicd", "baseline"}
    assert lambda_for_quality(1) == 0.0018 and lambda_for_quality(6) == 0.0483
    with pytest.raises(ValueError):
        lambda_for_quality(0)
