"""Fine-tuning the entropy side with the integer path in the loop (``--finetune-steps``)."""

from __future__ import annotations

import pytest
import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import GaussianConditional
from compressai.models.google import get_scale_table
from test_integer_network import lively_anchor

from jicd.codec import get_coder
from jicd.codec.integer.calibration import generated_images, noisy_versions
from jicd.codec.integer.convert import calibrate, quantize
from jicd.codec.integer.finetune import TRAINED, finetune, integer_rate
from jicd.codec.rans import CdfTables, coded_bits

FROZEN = ("g_a", "h_a", "g_s", "entropy_bottleneck", "gaussian_conditional")


@pytest.fixture()
def setup():
    """A model whose predicted scales are off (a rate to win back), calibration images."""
    model = lively_anchor(32, seed=3)
    with torch.no_grad():
        model.entropy_parameters[-1].bias[:32].add_(0.7)
    model.update(force=True)
    images = noisy_versions(generated_images(4, 256))
    return model, images, calibrate(model, images)


def y_bytes(model, net, images) -> int:
    model.integer_entropy = net
    try:
        coded = [get_coder().compress(model, x) for x in images]
    finally:
        del model.integer_entropy
    return sum(len(s) for out in coded for s in out["strings"][0])


def test_loss_is_the_integer_paths_rate(setup) -> None:
    """The loss's value is the integer path's own y rate: within 0.5 % of its real streams."""
    model, images, calibration = setup
    net = quantize(model, calibration)
    with torch.no_grad():
        estimate = sum(float(integer_rate(model, net, x)) * x[0, 0].numel() for x in images)
    real = 8 * y_bytes(model, net, images)
    assert abs(estimate / real - 1) < 0.005, (estimate, real)


@pytest.mark.parametrize(
    ("index", "symbol"), [(20, 0), (20, 1), (40, 3), (20, 30), (20, -30), (5, 200), (5, -4000)]
)
def test_coded_bits_are_what_the_rans_coder_spends(index: int, symbol: int) -> None:
    """In-table symbols and both kinds of escape: within the coder's 64-bit flush."""
    gaussian = GaussianConditional(None)
    gaussian.update_scale_table(get_scale_table(), force=True)
    tables = CdfTables(gaussian.quantized_cdf, gaussian.cdf_length, gaussian.offset)
    symbols, indexes = [symbol] * 3000, [index] * 3000
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, *tables.all())
    real = 8 * len(encoder.flush())
    arguments = (torch.tensor(symbols), torch.tensor(indexes))
    estimate = float(coded_bits(gaussian.quantized_cdf, gaussian.cdf_length, gaussian.offset,
                                *arguments).sum())  # fmt: skip
    assert 0 <= real - estimate <= 64 + 32, (estimate, real)


def test_gradients_reach_only_the_entropy_side(setup) -> None:
    model, images, calibration = setup
    integer_rate(model, quantize(model, calibration), images[0]).backward()
    for name in TRAINED:
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    for name in FROZEN:
        assert all(p.grad is None for p in getattr(model, name).parameters()), name


def test_finetune_wins_back_rate_and_keeps_the_rest(setup) -> None:
    model, images, calibration = setup
    before_net = quantize(model, calibration)
    frozen = {n: {k: v.clone() for k, v in getattr(model, n).state_dict().items()} for n in FROZEN}
    net, report = finetune(model, images, calibration, steps=30, lr=1e-3, crop=128)
    assert report.bpp_after < 0.8 * report.bpp_before, report
    assert y_bytes(model, net, images) < 0.8 * y_bytes(model, before_net, images)
    for name, state in frozen.items():
        for key, value in getattr(model, name).state_dict().items():
            assert torch.equal(value, state[key]), f"{name}.{key} changed"
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert net.y_bits == before_net.y_bits and net.z_bits == before_net.z_bits  # same formats
    model.integer_entropy = net
    x = images[0]
    out = get_coder().compress(model, x)
    decoded = get_coder().decompress(model, out["strings"], out["shape"], out["checks"])
    assert decoded["x_hat"].shape == x.shape
