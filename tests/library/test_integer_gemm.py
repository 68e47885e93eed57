"""The exact integer GEMM kernels: float64 and int8 planes give the true integer product, and
the int8 kernel is used only where a probe shows this process's int8 GEMM does not saturate."""

from __future__ import annotations

import pytest
import torch

from jicd.codec.integer import gemm
from jicd.codec.integer.fixed_point import INT16_MAX
from jicd.codec.integer.gemm import KERNELS, ExactMatrix, forced_kernel, kernel_for

CPU = torch.device("cpu")


def int64_product(rows: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Plain int64 matmul by broadcasting (no BLAS): the reference."""
    return (rows.to(torch.int64)[:, :, None] * matrix.to(torch.int64)[None]).sum(1)


def operands(count: int, depth: int, width: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(-INT16_MAX, INT16_MAX + 1, (count, depth), generator=generator)
    matrix = torch.randint(-INT16_MAX, INT16_MAX + 1, (depth, width), generator=generator)
    rows[0], matrix[:, 0] = INT16_MAX, -INT16_MAX  # the extremes of both signs
    if count > 1:
        rows[1] = -INT16_MAX
    bias = torch.randint(-(2**40), 2**40, (width,), generator=generator)
    start = torch.randint(-(2**40), 2**40, (count, width), generator=generator)
    return rows, matrix, bias, start


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", [(1, 3, 2), (2, 24, 8), (13, 2304, 384), (70, 2592, 40)])
def test_kernels_give_the_integer_product(kernel: str, shape: tuple[int, int, int]) -> None:
    if kernel == "int8" and not gemm.int8_kernel_exact():
        pytest.skip("this CPU's int8 GEMM is not exact")
    rows, matrix, bias, start = operands(*shape, seed=sum(shape))
    exact = ExactMatrix(matrix.to(torch.float64), bias)
    want = int64_product(rows, matrix) + bias
    with forced_kernel(kernel):
        assert kernel_for(CPU) == kernel
        for dtype in (torch.int16, torch.int64):
            assert torch.equal(exact(rows.to(dtype)), want)
        assert torch.equal(exact(rows, start), want + start)


def saturating_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What oneDNN's int8 GEMM does on CPUs without VNNI: ``a`` shifted to u8, pairs of
    ``u8·s8`` products summed in saturating int16 (``vpmaddubsw``), then compensated."""
    unsigned = a.to(torch.int64) + 128
    products = unsigned[:, :, None] * b.to(torch.int64)[None]  # (M, K, N)
    if products.shape[1] % 2:
        products = torch.cat([products, torch.zeros_like(products[:, :1])], dim=1)
    pairs = products[:, 0::2] + products[:, 1::2]
    summed = pairs.clamp(-(2**15), 2**15 - 1).sum(1)
    return (summed - 128 * b.to(torch.int64).sum(0)).to(torch.int32)


def test_probe_refuses_a_saturating_int8_gemm(monkeypatch) -> None:
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    gemm.int8_kernel_exact.cache_clear()
    try:
        assert not gemm.int8_kernel_exact()
        with forced_kernel("int8"):  # asked for, but not exact here: float64 is used
            assert kernel_for(CPU) == "float64"
        rows, matrix, bias, _ = operands(5, 64, 16, seed=3)
        assert torch.equal(ExactMatrix(matrix, bias)(rows), int64_product(rows, matrix) + bias)
    finally:
        monkeypatch.undo()
        gemm.int8_kernel_exact.cache_clear()


def test_saturating_model_is_wrong_where_the_probe_looks() -> None:
    """The stand-in above really is inexact on large operands (else the previous test would
    prove nothing) and exact on small ones."""
    big = torch.full((2, 8), 127, dtype=torch.int8), torch.full((8, 3), -128, dtype=torch.int8)
    small = torch.full((2, 8), 3, dtype=torch.int8), torch.full((8, 3), -5, dtype=torch.int8)
    assert not torch.equal(saturating_int_mm(*big), int64_product(*big).to(torch.int32))
    assert torch.equal(saturating_int_mm(*small), int64_product(*small).to(torch.int32))


def test_environment_forces_float64_and_gpus_use_it(monkeypatch) -> None:
    monkeypatch.setenv(gemm.KERNEL_ENV, "float64")
    assert kernel_for(CPU) == "float64"
    monkeypatch.delenv(gemm.KERNEL_ENV)
    assert kernel_for(torch.device("meta")) == "float64"  # any non-CPU device
    with pytest.raises(ValueError, match="unknown kernel"), forced_kernel("fp16"):
        pass
