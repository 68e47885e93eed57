"""Fixed-point arithmetic that gives the same bits on every device: the integer path's primitives.

Number formats (all integers; a *scale* ``s`` means the integer ``A`` stands for ``A / s``):

* activations and weights: integers in ``[-INT16_MAX, INT16_MAX]`` (int16 range, symmetric);
* accumulators: ``acc = Σ W·A + B`` with ``|acc| ≤ ACC_LIMIT = 2**46``, checked per layer when
  it is built or loaded (:func:`check_layer_bounds`);
* rescaling: ``out = (acc · m + 2**(s-1)) >> s`` per output channel (a rounding division by a
  power of two, ties towards +∞), with ``0 ≤ m < MULT_LIMIT = 2**16`` and ``0 ≤ s ≤ MAX_SHIFT``;
  a LeakyReLU is a second ``(m, s)`` pair used where ``acc < 0`` (its slope folded into ``m``).

**Why every device computes the same bits.**

* Products and sums of integer-valued float64 numbers are exact while every partial sum stays
  below ``2**53``, whatever the summation order, blocking or FMA use of the BLAS (cuBLAS, MKL,
  OpenBLAS): ``|W·A| ≤ INT16_MAX² < 2**30``, so a dot product over ``K`` terms stays below
  ``K · 2**30 ≤ 2**46`` for ``K ≤ 2**16`` (the largest layer here has ``K = 9 · 288 = 2592`` at
  N = 192). Only plain GEMMs are used — no convolution kernels, whose Winograd/FFT algorithms
  transform the operands and round. Where a probe proves it exact, a CPU computes the same
  integer products with int8 GEMMs instead (:mod:`.gemm`): same integers, less time.
* ``float64 → int64`` of an integer-valued double below ``2**53`` is exact; int64 multiply, add,
  compare, clamp and arithmetic right shift are exact on every backend, and ``|acc · m| + 2**60
  < 2**62 + 2**60 < 2**63`` keeps them free of overflow.

So :func:`requantize` of the same accumulator gives the same integers on a CPU of any
instruction set, with any thread count, and on a GPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from jicd.errors import UserError

INT16_MAX = 32767
ACC_LIMIT = 2**46
MULT_LIMIT = 2**16
MAX_SHIFT = 61
OUTPUT_LIMIT = 2**31 - 1  # clamp of the last layer (scales and means), which feeds no matmul
BIAS_LIMIT = 2**44  # |B| ≤ BIAS_LIMIT leaves ACC_LIMIT − BIAS_LIMIT > 2**45 for Σ W·A
_MULT_BITS = 15  # multipliers normalised to [2**15, 2**16): 15 bits of relative precision


def requantize(acc: Tensor, rescale: Tensor, limit: int, negative: bool) -> Tensor:
    """Rescale int64 accumulators to the next layer's activations, with the activation.

    Args:
        acc: ``(..., O)`` int64 accumulators, ``|acc| ≤ ACC_LIMIT``.
        rescale: ``(6, O)`` int64 rows ``m⁺, half⁺, s⁺, m⁻, half⁻, s⁻`` of
            :func:`rescale_rows`; rows 3-5 apply where ``acc < 0`` (LeakyReLU / ReLU).
        limit: output clamp, ``INT16_MAX`` for activations that feed another layer.
        negative: whether rows 3-5 differ from rows 0-2 (False: identity activation).

    Returns:
        ``(..., O)`` int64 ``clamp((acc·m + half) >> s, ±limit)``: exact (module docstring).

    The activation is computed as ``max(positive branch, negative branch)``, which equals
    "the negative branch where ``acc < 0``" because the negative factor is the smaller one
    (``m⁻/2**s⁻ ≤ m⁺/2**s⁺``, checked by :func:`check_layer_bounds`): both branches are
    monotone, ``acc·r⁻ ≤ acc·r⁺`` for ``acc ≥ 0`` and ``≥`` for ``acc < 0``, and flooring
    keeps the order. One ``maximum`` instead of a comparison and a select.
    """
    m_pos, half_pos, s_pos, m_neg, half_neg, s_neg = rescale.unbind(0)
    out = torch.addcmul(half_pos, acc, m_pos).bitwise_right_shift_(s_pos)
    if negative:
        negative_branch = torch.addcmul(half_neg, acc, m_neg).bitwise_right_shift_(s_neg)
        torch.maximum(out, negative_branch, out=out)
    return out.clamp_(-limit, limit)


def rescale_rows(mult: Tensor, shift: Tensor, mult_neg: Tensor, shift_neg: Tensor) -> Tensor:
    """Stack ``(m, 2**(s-1), s)`` for both signs → ``(6, O)`` int64 for :func:`requantize`."""

    def half(shift: Tensor) -> Tensor:
        return torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0), 0)

    rows = [mult, half(shift), shift, mult_neg, half(shift_neg), shift_neg]
    return torch.stack([r.to(torch.int64) for r in rows])


def fit_multiplier(ratio: Tensor) -> tuple[Tensor, Tensor]:
    """Integers ``(m, s)`` with ``m / 2**s ≈ ratio`` (per channel), ``m`` in ``[2**15, 2**16)``.

    Args:
        ratio: ``(O,)`` float64, ``≥ 0``: the real factor from accumulator to output units.

    Returns:
        ``(m, s)`` int64 ``(O,)``; relative error below ``2**-16`` unless ``ratio`` is so small
        that ``s`` hits :data:`MAX_SHIFT` (then ``m`` may be smaller, down to 0).

    Raises:
        UserError: a ratio of ``MULT_LIMIT`` or more (the output would be finer than the
            accumulator; never the case for calibrated scales).
    """
    ratio = ratio.to(torch.float64)
    mult = torch.zeros_like(ratio, dtype=torch.int64)
    shift = torch.zeros_like(ratio, dtype=torch.int64)
    for i, value in enumerate(ratio.tolist()):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"cannot integerize: rescale factor {value} is not finite and >= 0")
        if value == 0:
            continue
        s = min(max(_MULT_BITS - math.floor(math.log2(value)), 0), MAX_SHIFT)
        m = round(value * 2.0**s)
        if m >= MULT_LIMIT and s > 0:
            s, m = s - 1, round(value * 2.0 ** (s - 1))
        if m >= MULT_LIMIT:
            raise UserError(f"cannot integerize: rescale factor {value:.3g} >= {MULT_LIMIT}")
        mult[i], shift[i] = m, s
    return mult, shift


def check_layer_bounds(name: str, weight: Tensor, bias: Tensor, rescale: Tensor) -> None:
    """Refuse parameters outside the bounds that make :func:`requantize` exact.

    Args:
        weight: ``(O, K)``-like integer-valued tensor (any trailing shape, ``K`` = fan-in).
        bias: ``(O,)`` int64.
        rescale: ``(6, O)`` int64 of :func:`rescale_rows`.

    Raises:
        UserError: one line naming the layer and the bound it breaks (a corrupt or hand-made
            export); a real conversion never trips it.
    """
    fan_in = weight[0].numel() if weight.shape[0] else 0
    if weight.numel() and float(weight.abs().max()) > INT16_MAX:
        raise UserError(f"integer entropy model: {name} weights exceed the int16 range")
    if bool((weight != weight.round()).any()):
        raise UserError(f"integer entropy model: {name} weights are not integers")
    peak_bias = int(bias.abs().max()) if bias.numel() else 0
    if fan_in * INT16_MAX**2 + peak_bias > ACC_LIMIT:
        raise UserError(f"integer entropy model: {name} accumulators may exceed 2**46")
    mults, shifts = rescale[[0, 3]], rescale[[2, 5]]
    if bool((mults < 0).any() | (mults >= MULT_LIMIT).any()):
        raise UserError(f"integer entropy model: {name} multipliers outside [0, 2**16)")
    if bool((shifts < 0).any() | (shifts > MAX_SHIFT).any()):
        raise UserError(f"integer entropy model: {name} shifts outside [0, {MAX_SHIFT}]")
    if not torch.equal(rescale, rescale_rows(rescale[0], rescale[2], rescale[3], rescale[5])):
        raise UserError(f"integer entropy model: {name} rounding offsets are inconsistent")
    rows = rescale[[0, 2, 3, 5]].tolist()  # Python ints: m·2**s can exceed int64
    if any(mn << sp > mp << sn for mp, sp, mn, sn in zip(*rows, strict=True)):
        raise UserError(f"integer entropy model: {name} negative slope exceeds 1")
