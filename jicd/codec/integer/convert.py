"""Float model → :class:`~jicd.codec.integer.network.IntegerEntropyModel` (``jicd integerize``).

Per layer with float weights ``w (O, I, k, k)``, bias ``b``, input scale ``s_in`` (per input
channel) and output scale ``s_out`` (per output channel), all from calibration:

* ``w_eff = w / s_in`` and a per-output-channel gain ``g = INT16_MAX / max|w_eff[o]|`` (capped
  so that ``|b·g| ≤ 2**44``): ``W = round(w_eff · g)`` uses the whole int16 range and
  ``B = round(b · g)``, so the accumulator is ``g · (w·x + b)``;
* the rescale ``s_out / g`` becomes the integer pair ``(m, s)`` of
  :func:`~.fixed_point.fit_multiplier`; a LeakyReLU's negative branch is the pair for
  ``slope · s_out / g``.

Activation scales map ``±2·peak`` (calibration peak per channel, one bit of headroom) onto
``±INT16_MAX``;
``y`` and ``z`` use powers of two (``2**y_bits``, ``2**z_bits``) so that ``y_hat`` and ``z_hat``
are exact binary fractions, and the predicted scales come out at ``2**SCALE_BITS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from jicd.codec.integer.calibration import (
    MARGIN,
    RangeRecorder,
    activation_scales,
    collect_ranges,
    fraction_bits,
)
from jicd.codec.integer.fixed_point import (
    BIAS_LIMIT,
    INT16_MAX,
    OUTPUT_LIMIT,
    fit_multiplier,
    rescale_rows,
)
from jicd.codec.integer.layers import IntegerLayer
from jicd.codec.integer.network import IntegerEntropyModel
from jicd.codec.integer.stages import Stage, conv_parameters, parse_stages
from jicd.codec.schedule import causal_taps
from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

SCALE_BITS = 16  # predicted scales at 2**-16: far finer than the table's 13 % steps


def quantize_layer(
    conv: nn.Conv2d,
    in_scale: Tensor,
    out_scale: Tensor,
    slope: float | None,
    limit: int = INT16_MAX,
    shuffle: int = 1,
    taps: list[tuple[int, int]] | None = None,
    name: str = "layer",
) -> IntegerLayer:
    """The integer version of ``conv`` (+ activation ``slope``: None identity, 0 ReLU).

    Args:
        in_scale: ``(I,)`` float64 scale of each input channel.
        out_scale: ``(O,)`` float64 scale of each output channel (before any shuffle).
    """
    weight, bias = conv_parameters(conv)
    w_eff = weight / in_scale.view(1, -1, 1, 1)
    peak = w_eff.abs().flatten(1).amax(dim=1)
    gain = torch.where(peak > 0, INT16_MAX / peak.clamp(min=1e-300), torch.ones_like(peak))
    gain = torch.where(bias != 0, torch.minimum(gain, BIAS_LIMIT / bias.abs()), gain)
    integer_weight = torch.round(w_eff * gain.view(-1, 1, 1, 1)).clamp(-INT16_MAX, INT16_MAX)
    integer_bias = torch.round(bias * gain).to(torch.int64)
    ratio = out_scale / gain
    mult, shift = fit_multiplier(ratio)
    if slope is None:
        mult_neg, shift_neg = mult, shift
    elif slope == 0:
        mult_neg, shift_neg = torch.zeros_like(mult), torch.zeros_like(shift)
    else:
        mult_neg, shift_neg = fit_multiplier(ratio * slope)
    rescale = rescale_rows(mult, shift, mult_neg, shift_neg)
    return IntegerLayer(integer_weight, integer_bias, rescale, limit, shuffle, taps, name)


def _full(size: int, value: float) -> Tensor:
    return torch.full((size,), float(value), dtype=torch.float64)


def _stack_layers(
    stages: list[Stage], ranges: RangeRecorder, group: str, in_scale: Tensor, margin: float
) -> tuple[list[IntegerLayer], Tensor]:
    """Quantise hidden stages; returns the layers and the last output's per-channel scales."""
    layers = []
    for i, stage in enumerate(stages):
        scale = activation_scales(ranges.channel_peaks[f"{group}.{i}"], margin)
        out = scale.repeat_interleave(stage.shuffle**2)  # conv channel c·r² + k → channel c
        layer = quantize_layer(
            stage.conv, in_scale, out, stage.slope, shuffle=stage.shuffle, name=f"{group}.{i}"
        )
        layers.append(layer)
        in_scale = scale
    return layers, in_scale


def _tables(model: CompressionModel, scale_bits: int) -> dict[str, Tensor]:
    """CDF tables of both entropy models, the z medians' source, and the index thresholds."""
    gaussian, bottleneck = model.gaussian_conditional, model.entropy_bottleneck
    if gaussian.quantized_cdf.numel() == 0 or bottleneck.quantized_cdf.numel() == 0:
        raise UserError("cannot integerize: the model's CDF tables are empty (update() first)")
    table = gaussian.scale_table.detach().to("cpu", torch.float64)
    if float(table[0]) < float(gaussian.lower_bound_scale.bound):
        raise UserError("cannot integerize: the scale table starts below the scale bound")
    thresholds = torch.floor(table[:-1] * 2.0**scale_bits).to(torch.int64)
    found = {"scale_thresholds": thresholds}
    for prefix, module in (("y_", gaussian), ("z_", bottleneck)):
        found[prefix + "cdf"] = module.quantized_cdf.detach().to("cpu", torch.int32).clone()
        found[prefix + "cdf_length"] = module.cdf_length.detach().to("cpu", torch.int32).clone()
        found[prefix + "offset"] = module.offset.detach().to("cpu", torch.int32).clone()
    return found


@dataclass
class Calibration:
    """What :func:`calibrate` measured: the value ranges that fix every fixed-point scale."""

    ranges: RangeRecorder
    margin: float
    images: int
    description: str = ""


@torch.no_grad()
def integerize(
    model: CompressionModel, images: list[Tensor], margin: float = MARGIN, description: str = ""
) -> IntegerEntropyModel:
    """Calibrate on ``images`` (``(1, 3, H, W)`` noisy inputs) and quantise the entropy side.

    Args:
        model: a Cheng2020Anchor-like model with updated CDF tables (any device).
        images: calibration inputs, H and W multiples of 64.
        margin: headroom factor over the calibration peaks.
        description: stored in the model's ``calibration`` record (e.g. the image folder).

    Raises:
        UserError: the model has layers the integer path does not implement.
    """
    return quantize(model, calibrate(model, images, margin, description))


@torch.no_grad()
def calibrate(
    model: CompressionModel, images: list[Tensor], margin: float = MARGIN, description: str = ""
) -> Calibration:
    """The float model's value ranges on ``images`` (see :func:`integerize`)."""
    hyper = parse_stages(model.h_s, "h_s")
    head = parse_stages(model.entropy_parameters, "entropy_parameters", kernel_one=True)
    ranges = collect_ranges(model, hyper, head, images)
    return Calibration(ranges, margin, len(images), description)


@torch.no_grad()
def quantize(model: CompressionModel, calibration: Calibration) -> IntegerEntropyModel:
    """The integer entropy model of ``model``'s current weights at ``calibration``'s scales.

    The scales depend only on the calibration, so re-quantising after a weight update (the
    fine-tune of :mod:`.finetune`) keeps every fixed-point format.

    Raises:
        UserError: the model has layers the integer path does not implement.
    """
    hyper = parse_stages(model.h_s, "h_s")
    head = parse_stages(model.entropy_parameters, "entropy_parameters", kernel_one=True)
    context = model.context_prediction
    pad = context.kernel_size[0] // 2
    taps = [(di + pad, dj + pad) for di, dj in causal_taps(context)]
    ranges, margin = calibration.ranges, calibration.margin
    peaks = ranges.peaks
    z_bits, y_bits = fraction_bits(peaks["z"], margin), fraction_bits(peaks["y"], margin)
    hyper_layers, params_scale = _stack_layers(
        hyper, ranges, "hyper", _full(hyper[0].conv.in_channels, 2.0**z_bits), margin
    )
    ctx_scale = activation_scales(ranges.channel_peaks["context"], margin)
    channels = context.in_channels
    ctx_layer = quantize_layer(
        context, _full(channels, 2.0**y_bits), ctx_scale, None, taps=taps, name="context"
    )
    first_in = torch.cat([params_scale, ctx_scale])
    head_layers, last_in = _stack_layers(head[:-1], ranges, "head", first_in, margin)
    out_scale = torch.cat([_full(channels, 2.0**SCALE_BITS), _full(channels, 2.0**y_bits)])
    head_layers.append(
        quantize_layer(head[-1].conv, last_in, out_scale, head[-1].slope, OUTPUT_LIMIT,
                       name=f"head.{len(head) - 1}")
    )  # fmt: skip
    tables = _tables(model, SCALE_BITS)
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().to("cpu", torch.float64)
    tables["z_median"] = torch.round(medians * 2.0**z_bits).to(torch.int64)
    record = {
        "description": calibration.description,
        "images": calibration.images,
        "margin": margin,
        "peaks": peaks,
        "params_scale": params_scale.tolist(),
    }
    scalars = {"y_bits": y_bits, "z_bits": z_bits, "scale_bits": SCALE_BITS}
    return IntegerEntropyModel(hyper_layers, ctx_layer, head_layers, tables, scalars, record)
