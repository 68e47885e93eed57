"""A short fine-tune of the entropy side with the integer path in the loop.

``jicd integerize SRC -o DST --finetune-steps N`` runs it after calibration (after Ballé et
al., ICLR 2019, who train the integer networks themselves). What moves: the float ``h_s``,
``context_prediction`` and ``entropy_parameters`` that the integer model is quantised from;
``g_a``, ``h_a``, the entropy bottleneck and ``g_s`` are frozen, so the reconstruction stays
that of the source model and only the rate of ``y`` is optimised. The fixed-point scales stay
those of the calibration (:func:`.convert.quantize`), so every format is kept.

Each step, on a random crop of a calibration image:

1. quantise the current float weights into an integer model (exact, no gradient);
2. run the integer encoder's own quantisation pass (:meth:`IntegerWavefront.quantise`): the
   symbols, CDF indices and means that the integer path would code;
3. run the float networks teacher-forced on that decoded latent, and use as *forward values*
   the integer path's — the mean it codes with and the scale of the CDF table it picks — with
   the float networks' gradients (straight-through): the Gaussian bits of the integer path's
   own symbols give the gradient;
4. the loss's *value* is what the rANS coder spends on those symbols with those CDF tables
   (:func:`jicd.codec.rans.coded_bits`: the 16-bit table probabilities, and CompressAI's
   escape code for symbols outside a table), per pixel.

So the loss is the integer path's rate (within the rANS coder's few bytes of flush per
stream), and its gradient reaches the float weights through the float networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jicd.codec.integer.coder import IntegerWavefront, quantise_z
from jicd.codec.integer.convert import Calibration, quantize
from jicd.codec.integer.fixed_point import INT16_MAX
from jicd.codec.integer.network import IntegerEntropyModel
from jicd.codec.placement import analysis_transforms
from jicd.codec.rans import coded_bits

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

TRAINED = ("h_s", "context_prediction", "entropy_parameters")


@dataclass
class FinetuneReport:
    """Integer-path bits per pixel of ``y`` on the calibration images, before and after."""

    steps: int
    bpp_before: float
    bpp_after: float


def integer_rate(model: CompressionModel, net: IntegerEntropyModel, x: Tensor) -> Tensor:
    """Bits per pixel of ``y`` for ``x (1, 3, H, W)`` on the integer path, differentiable.

    The value is the integer path's rate estimate (its symbols, its means, the scale of its
    CDF table); the gradient flows into the float ``h_s``, ``context_prediction`` and
    ``entropy_parameters`` (straight-through). Shapes: ``y (1, M, H/16, W/16)``.
    """
    gaussian = model.gaussian_conditional
    with torch.no_grad():
        y, z = analysis_transforms(model, x)
        _, z_int = quantise_z(net, z)
        front = IntegerWavefront(net, net.hyper_params(z_int))
        symbols, indexes = front.quantise(y)
        one = 1 << net.y_bits
        y_int = front.latent()
        symbol = front.raster(symbols).to(torch.float32)
        mean_int = front.raster(front.rows - symbols * one).to(torch.float32) / one
        table = gaussian.scale_table.to(y.device, torch.float32)
        index = front.raster(indexes.to(torch.int64))
        scale_int = table[index]
        z_hat = z_int.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / (1 << net.z_bits)
        context_input = y_int.clamp(-INT16_MAX, INT16_MAX).to(torch.float32) / one
    params = model.h_s(z_hat)
    ctx = model.context_prediction(context_input)
    scales, means = model.entropy_parameters(torch.cat([params, ctx], dim=1)).chunk(2, dim=1)
    scales = gaussian.lower_bound_scale(scales)
    scales = scales + (scale_int - scales).detach()  # forward: the integer path's values
    means = means + (mean_int - means).detach()
    residual = y - means
    values = residual + (symbol - residual).detach()  # forward: its symbols
    likelihood = gaussian._likelihood(values, scales)
    if gaussian.use_likelihood_bound:
        likelihood = gaussian.likelihood_lower_bound(likelihood)
    proxy = -torch.log2(likelihood).sum()
    tables = (net.y_cdf, net.y_cdf_length, net.y_offset)  # what the integer path codes with
    spent = coded_bits(*tables, front.raster(symbols), index)
    bits = proxy + (spent.sum().to(proxy.dtype) - proxy).detach()  # value: what is coded
    return bits / (x.shape[-2] * x.shape[-1])


def finetune(
    model: CompressionModel,
    images: list[Tensor],
    calibration: Calibration,
    steps: int,
    lr: float = 1e-5,
    crop: int = 256,
    seed: int = 0,
) -> tuple[IntegerEntropyModel, FinetuneReport]:
    """Fine-tune ``model``'s entropy side for ``steps`` Adam steps (see the module docstring).

    Args:
        model: the float model (its entropy-side weights are updated in place).
        images: ``(1, 3, H, W)`` noisy calibration images (sides multiples of 64).
        calibration: the scales (:func:`.convert.calibrate` on the same images).
        crop: side of the random square crops (a multiple of 64; whole images if larger).

    Returns:
        ``(the integer model of the fine-tuned weights, report)``.
    """
    trained = [p for name in TRAINED for p in getattr(model, name).parameters()]
    flags = {p: p.requires_grad for p in model.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(trained, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    before = mean_rate(model, quantize(model, calibration), images)
    try:
        for step in range(steps):
            x = random_crop(images[step % len(images)], crop, generator)
            loss = integer_rate(model, quantize(model, calibration), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)
    net = quantize(model, calibration)
    return net, FinetuneReport(steps, before, mean_rate(model, net, images))


@torch.no_grad()
def mean_rate(model: CompressionModel, net: IntegerEntropyModel, images: list[Tensor]) -> float:
    """Mean integer-path bits per pixel of ``y`` over ``images``."""
    return sum(float(integer_rate(model, net, x)) for x in images) / len(images)


def random_crop(x: Tensor, side: int, generator: torch.Generator) -> Tensor:
    """A random ``side × side`` crop of ``x (1, 3, H, W)`` on the 64-px grid (or ``x``)."""
    height, width = x.shape[-2:]
    if side >= height and side >= width:
        return x
    crop_h, crop_w = min(side, height), min(side, width)
    top = 64 * int(torch.randint(0, (height - crop_h) // 64 + 1, (1,), generator=generator))
    left = 64 * int(torch.randint(0, (width - crop_w) // 64 + 1, (1,), generator=generator))
    return x[..., top : top + crop_h, left : left + crop_w]
