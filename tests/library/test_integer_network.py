"""The integer entropy network: fixed-point primitives, a fuzz against a NumPy int64 reference,
conversion from a float model, and its export payload."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020Anchor
from integer_reference import entropy_parameters, hyper, layer_params
from torch import nn

from jicd.codec.integer.calibration import generated_images, noisy_versions
from jicd.codec.integer.coder import IntegerWavefront
from jicd.codec.integer.convert import SCALE_BITS, integerize
from jicd.codec.integer.fixed_point import (
    ACC_LIMIT,
    INT16_MAX,
    MAX_SHIFT,
    MULT_LIMIT,
    fit_multiplier,
    requantize,
    rescale_rows,
)
from jicd.codec.integer.gemm import KERNELS, forced_kernel, int8_kernel_exact
from jicd.codec.integer.layers import IntegerLayer
from jicd.codec.integer.network import IntegerEntropyModel
from jicd.errors import UserError

CHANNELS = 16


@torch.no_grad()
def lively_anchor(channels: int = CHANNELS, seed: int = 0) -> Cheng2020Anchor:
    """Random Cheng2020Anchor whose latent has many non-zero symbols and varied scales."""
    torch.manual_seed(seed)
    model = Cheng2020Anchor(channels).eval()
    probe = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    gain = 6.0 / float(model.g_a(probe).std())
    model.g_a[-1].weight.mul_(gain)
    model.g_a[-1].bias.mul_(gain)
    model.entropy_parameters[-1].bias[:channels].add_(1.0)
    model.update(force=True)
    return model


@pytest.fixture(scope="module")
def model() -> Cheng2020Anchor:
    return lively_anchor()


@pytest.fixture(scope="module")
def net(model) -> IntegerEntropyModel:
    return integerize(model, noisy_versions(generated_images(2, 128)))


def random_layer(layer: IntegerLayer, generator: torch.Generator) -> IntegerLayer:
    """Same shape, random parameters anywhere inside the exactness bounds (extremes included)."""
    out = layer.weight.shape[0]
    weight = torch.randint(-INT16_MAX, INT16_MAX + 1, layer.weight.shape, generator=generator)
    weight[..., 0, 0] = INT16_MAX * torch.sign(weight[..., 0, 0] + 0.5)  # extreme products
    fan_in = layer.weight[0].numel()
    room = ACC_LIMIT - fan_in * INT16_MAX**2
    typical = round(0.5 * math.log2(fan_in) + 28)  # bits of Σ W·x for random int16 operands
    bias = torch.randint(-(2**typical), 2**typical, (out,), generator=generator)
    bias[0] = room  # the largest bias the bounds allow
    mult = torch.randint(0, MULT_LIMIT, (2, out), generator=generator)
    # outputs of about 2**13: typical + 16 (multiplier) - 13 bits, ±2
    shift = (torch.randint(-2, 3, (2, out), generator=generator) + typical + 3).clamp(0, MAX_SHIFT)
    # a negative branch with a smaller factor (a slope in [0, 1], as the format requires)
    mult[1] = torch.minimum(mult[1], mult[0])
    shift[1] = (shift[0] + torch.randint(0, 8, (out,), generator=generator)).clamp(max=MAX_SHIFT)
    if not layer.negative:
        mult[1], shift[1] = mult[0], shift[0]
    rescale = rescale_rows(mult[0], shift[0], mult[1], shift[1])
    taps = layer.taps if len(layer.taps) != layer.kernel**2 else None
    return IntegerLayer(weight, bias, rescale, layer.limit, layer.shuffle, taps, layer.name)


def randomized(net: IntegerEntropyModel, seed: int) -> IntegerEntropyModel:
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: buffer for name, buffer in net.named_buffers() if "." not in name}
    return IntegerEntropyModel(
        [random_layer(layer, generator) for layer in net.hyper],
        random_layer(net.context, generator),
        [random_layer(layer, generator) for layer in net.head],
        tensors,
        {"y_bits": net.y_bits, "z_bits": net.z_bits, "scale_bits": net.scale_bits},
    )


def test_requantize_rounds_half_up_and_applies_the_negative_branch() -> None:
    acc = torch.tensor([[5, -5, 6, -7, 0]]).t().expand(5, 2).contiguous()
    # channel 0: identity, /2; channel 1: /2 above zero, ×3/8 below (a LeakyReLU of slope 3/4)
    rescale = rescale_rows(torch.tensor([1, 1]), torch.tensor([1, 1]),
                           torch.tensor([1, 3]), torch.tensor([1, 3]))  # fmt: skip
    out = requantize(acc, rescale, INT16_MAX, negative=True)
    assert out[:, 0].tolist() == [3, -2, 3, -3, 0]  # round(2.5)=3, round(-2.5)=-2, round(-3.5)=-3
    assert out[:, 1].tolist() == [3, -2, 3, -3, 0]  # -5·3/8 = -1.875 → -2, -7·3/8 = -2.625 → -3
    assert requantize(acc * 10**6, rescale, 100, negative=True).abs().max() == 100


def test_fit_multiplier_is_precise() -> None:
    ratios = torch.tensor([1e-9, 3.7e-6, 0.01, 0.5, 1.0, 123.4, 40000.0], dtype=torch.float64)
    mult, shift = fit_multiplier(ratios)
    approx = mult.double() / 2.0 ** shift.double()
    assert bool(((approx - ratios).abs() / ratios < 2.0**-15).all())
    assert bool((mult < MULT_LIMIT).all()) and bool((shift <= MAX_SHIFT).all())
    with pytest.raises(UserError, match="rescale factor"):
        fit_multiplier(torch.tensor([float(MULT_LIMIT) * 2]))


def wavefront_predictions(net, params: torch.Tensor, y_int: torch.Tensor):
    """Indices and means of every position, coded wavefront by wavefront as the coder does."""
    channels, height, width = y_int.shape
    front = IntegerWavefront(net, params.permute(1, 2, 0).contiguous())
    rows = y_int.permute(1, 2, 0).reshape(height * width, channels)[front.order]
    index = torch.empty(height * width, channels, dtype=torch.int64)
    mean = torch.empty_like(index)
    for step in range(front.steps):
        idx, mu, span = front.predict(step)
        index[span], mean[span] = idx.long(), mu
        front.store(span, rows[span])
    raster = [torch.empty_like(index), torch.empty_like(mean)]
    raster[0][front.order], raster[1][front.order] = index, mean
    return [t.view(height, width, channels).permute(2, 0, 1).numpy() for t in raster]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzz_against_numpy_reference(net, seed: int, kernel: str) -> None:
    """Random inputs (int16 extremes included) through the converted network and through a
    network with random parameters anywhere inside the bounds: bit-exact with the reference,
    with each exact GEMM kernel."""
    if kernel == "int8" and not int8_kernel_exact():
        pytest.skip("this CPU's int8 GEMM is not exact (the integer path uses float64 here)")
    generator = torch.Generator().manual_seed(100 + seed)
    with forced_kernel(kernel):
        check_against_reference(net, seed, generator)


def check_against_reference(net, seed: int, generator: torch.Generator) -> None:
    for candidate in (net, randomized(net, seed)):
        z_int = torch.randint(-INT16_MAX, INT16_MAX + 1, (CHANNELS, 2, 3), generator=generator)
        z_int[:, 0, 0] = INT16_MAX
        params = candidate.hyper_params(z_int.permute(1, 2, 0).contiguous()).permute(2, 0, 1)
        hyper_ref = hyper(z_int.numpy(), [layer_params(layer) for layer in candidate.hyper])
        np.testing.assert_array_equal(params.numpy(), hyper_ref)
        y_int = torch.randint(-(2**20), 2**20, (CHANNELS, 8, 12), generator=generator)
        y_int[:, ::3] //= 2**12  # mostly inside the int16 range, some rows beyond it
        index, mean = wavefront_predictions(candidate, params, y_int)
        context, head = layer_params(candidate.context), [layer_params(x) for x in candidate.head]
        thresholds = candidate.scale_thresholds.numpy()
        ref_index, ref_mean = entropy_parameters(y_int.numpy(), params.numpy(), context, head,
                                                 thresholds)  # fmt: skip
        np.testing.assert_array_equal(index, ref_index)
        np.testing.assert_array_equal(mean, ref_mean)
        assert len(np.unique(index)) > 1 and len(np.unique(mean)) > 100  # not degenerate


def test_scale_index_is_compressais_rule(model, net) -> None:
    """``#{thresholds < s}`` equals ``build_indexes(s / 2**16)`` for every representable scale."""
    table = (model.gaussian_conditional.scale_table.double() * 2**SCALE_BITS).long()
    scales = torch.cat([table, table - 1, table + 1, torch.randint(-(2**10), 2**25, (5000,))])
    index = torch.searchsorted(net.scale_thresholds, scales)
    as_float = (scales.double() / 2**SCALE_BITS).float()
    assert torch.equal(index, model.gaussian_conditional.build_indexes(as_float).long())


def test_conversion_tracks_the_float_network(model, net) -> None:
    """The fixed-point network computes what the float one does, to its resolution."""
    x = noisy_versions(generated_images(1, 128, seed=5))[0]
    with torch.no_grad():
        y = model.g_a(x)
        medians = model.entropy_bottleneck._get_medians()
        z_hat = model.entropy_bottleneck.quantize(model.h_a(y), "dequantize", medians)
        params = model.h_s(z_hat)
    z_int = torch.round(z_hat[0] * 2**net.z_bits).long().permute(1, 2, 0).contiguous()
    got = net.hyper_params(z_int).permute(2, 0, 1).double()
    scale = torch.tensor(net.calibration["params_scale"], dtype=torch.float64).view(-1, 1, 1)
    error = (got / scale - params[0].double()).abs().amax(dim=(1, 2))
    assert bool((error < 1e-3 * params[0].abs().amax(dim=(1, 2)) + 1e-4).all()), error.max()


def test_payload_round_trip_and_refusals(net) -> None:
    back = IntegerEntropyModel.from_payload(net.payload())
    z_int = torch.randint(-300, 300, (2, 3, CHANNELS), generator=torch.Generator().manual_seed(1))
    assert torch.equal(back.hyper_params(z_int), net.hyper_params(z_int))
    bad = net.payload()
    bad["layers"]["head"][0][1]["rescale"] = bad["layers"]["head"][0][1]["rescale"] * 0 + 2**20
    with pytest.raises(UserError, match=r"head\.0 multipliers"):
        IntegerEntropyModel.from_payload(bad)
    bad = net.payload()
    packed = bad["layers"]["hyper"][0][1]["rescale"]  # m⁺, s⁺, m⁻, s⁻: a slope above 1
    bad["layers"]["hyper"][0][1]["rescale"] = torch.stack(
        [packed[0], packed[1], packed[0] + 1, packed[1]]
    )
    with pytest.raises(UserError, match="negative slope exceeds 1"):
        IntegerEntropyModel.from_payload(bad)
    bad = net.payload()
    bad["layers"]["hyper"][1][1]["weight"] = bad["layers"]["hyper"][1][1]["weight"].float()
    with pytest.raises(UserError, match="wrong dtype"):
        IntegerEntropyModel.from_payload(bad)
    with pytest.raises(UserError, match="version"):
        IntegerEntropyModel.from_payload({**net.payload(), "version": 99})
    with pytest.raises(UserError, match="not a jicd-integer-entropy"):
        IntegerEntropyModel.from_payload({"format": "other"})


def test_unsupported_layers_are_refused() -> None:
    model = Cheng2020Anchor(8)
    model.h_s[1] = nn.GELU()
    with pytest.raises(UserError, match="layer GELU"):
        integerize(model, [])
    model = Cheng2020Anchor(8)
    model.h_s[0].stride = (2, 2)
    with pytest.raises(UserError, match="stride-1"):
        integerize(model, [])
