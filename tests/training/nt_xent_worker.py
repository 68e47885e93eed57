"""One rank of the distributed NT-Xent check (``tests/training/test_nt_xent_distributed.py``).

    python -m torch.distributed.run --nproc-per-node=2 tests/training/nt_xent_worker.py OUT_DIR

Every rank builds the same global batch, keeps its own slice, projects it with a shared linear
layer and back-propagates two losses: ``nt_xent`` (the project's global gather) and the popular
"local-gradient trick" (no-grad gather, local tensor re-inserted). Parameter gradients are
averaged over ranks as DDP does. Results go to ``OUT_DIR/rank{R}.pt``; the test imports
``single_process_reference`` from here for the one-process result on the same global batch.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainer.losses import nt_xent, nt_xent_of_rows

BATCH_PER_RANK, FEATURES, PROJ_DIM, TEMPERATURE = 3, 6, 5, 0.1


def global_batch(world_size: int) -> dict[str, torch.Tensor]:
    """Inputs of the whole job: the same on every rank and in the single-process reference."""
    gen = torch.Generator().manual_seed(0)
    total = world_size * BATCH_PER_RANK
    return {
        "noisy": torch.randn(total, FEATURES, generator=gen),
        "augmented": torch.randn(total, FEATURES, generator=gen),
        "weight": torch.randn(PROJ_DIM, FEATURES, generator=gen),
    }


def local_trick_nt_xent(z_noisy: torch.Tensor, z_aug: torch.Tensor, temperature: float):
    """The WRONG variant kept for the regression test: gradients only reach the local rows."""
    n = z_noisy.size(0)
    local = F.normalize(torch.stack([z_noisy, z_aug], dim=1), dim=2)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    with torch.no_grad():
        dist.all_gather(parts, local.contiguous())
    parts[dist.get_rank()] = local
    return nt_xent_of_rows(torch.cat(parts), dist.get_rank() * n, n, temperature)


def loss_and_gradients(loss_fn: Callable, batch: dict, rows: slice) -> dict[str, torch.Tensor]:
    """Loss of the images ``rows`` of ``batch`` and the gradients of its leaves."""
    noisy = batch["noisy"][rows].clone().requires_grad_()
    augmented = batch["augmented"][rows].clone().requires_grad_()
    weight = batch["weight"].clone().requires_grad_()
    loss = loss_fn(noisy @ weight.T, augmented @ weight.T, TEMPERATURE)
    loss.backward()
    return {
        "loss": loss.detach(),
        "grad_noisy": noisy.grad,
        "grad_augmented": augmented.grad,
        "grad_weight": weight.grad,
    }


def run(loss_fn: Callable, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """This rank's share; the weight gradient is averaged over ranks as DDP does."""
    rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
    result = loss_and_gradients(loss_fn, global_batch(world_size), rows)
    dist.all_reduce(result["grad_weight"], op=dist.ReduceOp.SUM)
    result["grad_weight"] /= world_size
    return result


def single_process_reference(world_size: int) -> dict[str, torch.Tensor]:
    """The same global batch in one process (no process group): what the ranks must reproduce."""
    return loss_and_gradients(nt_xent, global_batch(world_size), slice(None))


def main(argv: list[str] | None = None) -> int:
    out_dir = Path((argv or sys.argv[1:])[0])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        results = {
            "global": run(nt_xent, rank, world_size),
            "local_trick": run(local_trick_nt_xent, rank, world_size),
        }
        torch.save(results, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
