"""Exact products of int16-range integer matrices, with the fastest kernel that is exact here.

Every kernel below returns the same int64 result — the true integer product — so which one a
machine uses never changes a bit of a file; it only changes the speed.

* ``float64``: one float64 GEMM on the integer values. Exact on every BLAS and device because
  every partial sum stays below ``2**53`` (:mod:`.fixed_point`). The GPU kernel: data-centre
  GPUs run float64 GEMMs at tensor-core speed.
* ``int8``: each operand is split into two int8 planes, ``a = 256·hi + lo + 128`` with
  ``hi = a >> 8`` and ``lo = (a & 255) − 128`` (both in ``[-128, 127]``), and the four plane
  products come from **one** ``torch._int_mm`` (int8 × int8 → int32, exact while
  ``K · 2**14 < 2**31``) of the stacked planes ``[hi_a; lo_a] @ [hi_w | lo_w]``::

      a @ w = 2**16·(hi_a@hi_w) + 2**8·(hi_a@lo_w + lo_a@hi_w) + lo_a@lo_w
              + 128·rowsum(a) + 128·(colsum(w) − 128·K)

  On a CPU with AVX-512 VNNI / AMX this is 3–4× faster than the float64 GEMM (which is
  memory-bound on the weights at the wavefront's few rows) and reads a quarter of the bytes.
  **It is used only where a probe proved it exact in this process**: oneDNN's int8 GEMM on
  CPUs without VNNI (or under ``ONEDNN_MAX_CPU_ISA=AVX2``) sums pairs of ``u8·s8`` products
  in saturating int16 (``vpmaddubsw``) and returns wrong integers for large operands — the
  probe's worst-case operands catch exactly that, and such a machine uses ``float64``.

``JICD_INTEGER_GEMM=float64`` forces the float64 kernel (``int8`` asks for the int8 one and
falls back when the probe fails); :func:`forced_kernel` does the same in-process for tests and
benchmarks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

KERNELS = ("float64", "int8")
KERNEL_ENV = "JICD_INTEGER_GEMM"
_forced: str | None = None  # set by forced_kernel()


class ExactMatrix(nn.Module):
    """``x ↦ x @ matrix + bias``, exactly, for a ``(K, O)`` integer matrix in the int16 range.

    Args:
        matrix: ``(K, O)`` integer-valued tensor, ``|·| ≤ INT16_MAX``.
        bias: optional ``(O,)`` int64 added to every row.

    Buffers (not persistent: derived from a layer's weights, so they stay out of state dicts
    and model digests): ``f64`` ``(K, O)`` float64; ``packed`` ``(K, 2·O)`` int8
    ``[hi | lo | ones]`` planes; ``bias`` ``(O,)`` and ``int8_constant`` ``(O,)`` int64 (the
    bias plus the plane corrections ``128·(colsum − 128·K) + 128·128·K``).
    """

    f64: Tensor
    packed: Tensor
    bias: Tensor
    int8_constant: Tensor

    def __init__(self, matrix: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        whole = matrix.to(torch.int64)
        depth, self.out_features = whole.shape
        bias = torch.zeros(self.out_features, dtype=torch.int64) if bias is None else bias
        self.register_buffer("f64", whole.to(torch.float64), persistent=False)
        hi, lo = split_planes(whole).chunk(2)
        # Column 2·O is all ones: the GEMM also yields the planes' row sums (rowsum(a) below);
        # 7 zero columns keep the width a multiple of 8 (oneDNN's fast int8 kernels).
        ones = torch.zeros(depth, 8, dtype=torch.int8)
        ones[:, 0] = 1
        packed = torch.cat([hi, lo, ones], dim=1).contiguous()
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("bias", bias.to(torch.int64).clone(), persistent=False)
        constant = self.bias + 128 * (whole.sum(0) - 128 * depth) + 128 * 128 * depth
        self.register_buffer("int8_constant", constant, persistent=False)

    def forward(self, rows: Tensor, start: Tensor | None = None) -> Tensor:
        """``rows @ matrix + bias (+ start)``, exactly.

        Args:
            rows: ``(P, K)`` integer tensor (int16/int32/int64) with values in the int16 range.
            start: optional ``(P, O)`` int64 added as well.

        Returns:
            ``(P, O)`` int64 (exact while ``|bias + start| + K·INT16_MAX² < 2**53``).
        """
        if kernel_for(rows.device) == "int8":
            acc = self._int8(rows)
        else:
            acc = torch.addmm(self.bias.to(torch.float64), rows.to(torch.float64), self.f64)
            acc = acc.to(torch.int64)
        return acc if start is None else acc.add_(start)

    def _int8(self, rows: Tensor) -> Tensor:
        count, out = rows.shape[0], self.out_features
        planes = torch._int_mm(split_planes(rows), self.packed).to(torch.int64)  # (2P, 2O+8)
        hh, hl = planes[:count, :out], planes[:count, out : 2 * out]
        lh, ll = planes[count:, :out], planes[count:, out : 2 * out]
        # 2**16·hh + 2**8·(hl + lh) + ll, in three fused adds (alpha: one kernel each).
        middle = torch.add(torch.add(hl, lh), hh, alpha=256)
        acc = torch.add(ll, middle, alpha=256)
        # + 128·rowsum(a), rowsum(a) = 256·rowsum(hi) + rowsum(lo) + 128·K (the ones column)
        ones = slice(2 * out, 2 * out + 1)
        row_sums = torch.add(planes[count:, ones], planes[:count, ones], alpha=256)
        acc.add_(row_sums, alpha=128)
        return acc.add_(self.int8_constant)


def split_planes(values: Tensor) -> Tensor:
    """``(P, K)`` integers in ``[-2**15, 2**15)`` → int8 ``(2P, K)`` ``[hi; lo]`` with
    ``v = 256·hi + lo + 128``.

    Written straight into one int8 buffer (three kernels, no concatenation): ``hi = v >> 8``
    fits; ``lo`` is ``v & 255`` stored modulo 256 and shifted by 128 modulo 256, which lands
    on ``(v & 255) − 128`` exactly. :func:`int8_kernel_exact` checks this on every int16
    value before the int8 kernel is used.
    """
    count = values.shape[0]
    planes = torch.empty((2 * count, *values.shape[1:]), dtype=torch.int8, device=values.device)
    torch.bitwise_right_shift(values, 8, out=planes[:count])
    torch.bitwise_and(values, 255, out=planes[count:])
    planes[count:].sub_(128)
    return planes


def kernel_for(device: torch.device) -> str:
    """The kernel :class:`ExactMatrix` uses on ``device`` in this process (see module doc)."""
    wanted = _forced or os.environ.get(KERNEL_ENV, "").strip().lower() or "auto"
    if wanted == "float64" or device.type != "cpu":
        return "float64"
    return "int8" if int8_kernel_exact() else "float64"


@contextmanager
def forced_kernel(name: str) -> Iterator[None]:
    """Use kernel ``name`` (``float64``, or ``int8`` where exact) inside the block."""
    global _forced
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose from {KERNELS}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


@functools.cache
def int8_kernel_exact() -> bool:
    """Whether ``torch._int_mm`` on this CPU returns true int32 products for any int8 operands.

    Checks :func:`split_planes` on every int16 value, then probes the shapes the integer path
    uses (1 to 64 rows; depths and widths around its layers') with the operands that make a
    saturating ``u8·s8`` pair sum overflow, plus random ones, against an exact float64 product.
    """
    if not hasattr(torch, "_int_mm"):
        return False
    every = torch.arange(-(2**15), 2**15, dtype=torch.int64).view(1, -1)
    planes = split_planes(every).to(torch.int64)
    if not torch.equal(planes, torch.cat([every >> 8, (every & 255) - 128])):
        return False
    generator = torch.Generator().manual_seed(0)
    try:
        for rows in (1, 2, 5, 17, 64):
            for depth, width in ((24, 8), (2592, 96)):
                for a, w in _probe_operands(rows, depth, width, generator):
                    got = torch._int_mm(a, w).to(torch.int64)
                    want = (a.to(torch.float64) @ w.to(torch.float64)).to(torch.int64)
                    if not torch.equal(got, want):
                        return False
    except RuntimeError:  # no int8 GEMM for these shapes on this build
        return False
    return True


def _probe_operands(
    rows: int, depth: int, width: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    def full(shape: tuple[int, int], value: int) -> Tensor:
        return torch.full(shape, value, dtype=torch.int8)

    for a_value in (127, -128):
        for w_value in (127, -128):
            yield full((rows, depth), a_value), full((depth, width), w_value)
    yield (
        torch.randint(-128, 128, (rows, depth), generator=generator, dtype=torch.int8),
        torch.randint(-128, 128, (depth, width), generator=generator, dtype=torch.int8),
    )
