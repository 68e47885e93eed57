"""How much of the device a training step uses: FLOPs per step and the device's matmul rate.

``flop_utilisation`` = FLOPs of one step / step time / the rate a large matrix product reaches
on the same device, measured here (not a datasheet number), so the figure says how far the step
is from what the hardware does with dense work. Used by the trainer's log and by
``benchmarks/gpu_step.py``.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.losses import JointLoss

if TYPE_CHECKING:
    from compressai.models import CompressionModel


def training_step_flops(
    model: CompressionModel, criterion: JointLoss, batch: int, patch: int
) -> int:
    """FLOPs of one three-branch forward, loss and backward of ``batch`` images ``patch``².

    Counted on a copy of the model on the ``meta`` device: no memory, no kernel, and no draw
    from the run's random streams (the optimizer update adds a negligible O(parameters)).
    """
    meta = copy.deepcopy(model).to("meta")
    images = torch.empty(batch, 3, patch, patch, device="meta")
    with FlopCounterMode(display=False) as counter:
        output = meta(images, images, images)
        loss = criterion(output, images)["loss"] + meta.aux_loss()
        loss.backward()
    return counter.get_total_flops()


def matmul_rate(device: torch.device, size: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product on ``device`` (bf16 on CUDA, fp32 on the CPU).

    Args:
        device: where to measure.
        size: matrix side (default 8192 on CUDA, 1024 on the CPU).
        repeats: timed products after one warm-up.
    """
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    generator = torch.Generator(device).manual_seed(0)  # not the run's random streams
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    a @ b  # warm-up (cuBLAS handle, heuristics)
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if cuda:
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)
