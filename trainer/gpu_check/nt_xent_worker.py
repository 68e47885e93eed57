"""One rank of the GPU check's NCCL line (``check_nt_xent_nccl``), run under torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        -m trainer.gpu_check.nt_xent_worker OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from jicd import distributed as D


def nt_xent_worker(out: Path) -> None:
    """One rank: global NT-Xent of its slice vs the single-process loss (rank 0 compares)."""
    import torch.distributed as dist
    import torch.nn.functional as F

    from trainer.losses import nt_xent, nt_xent_of_rows

    info = D.init_distributed(timeout_s=120, device="cuda")
    gen = torch.Generator().manual_seed(0)
    n, total = 4, 4 * info.world_size
    noisy, aug = (torch.randn(total, 32, generator=gen).cuda() for _ in range(2))
    weight0 = torch.randn(16, 32, generator=gen).cuda()
    rows = slice(info.rank * n, (info.rank + 1) * n)
    report = {}
    for dtype in (torch.float32, torch.bfloat16):
        weight = weight0.clone().requires_grad_()
        loss = nt_xent((noisy[rows] @ weight.T).to(dtype), (aug[rows] @ weight.T).to(dtype), 0.1)
        loss.backward()
        assert weight.grad is not None  # weight is a leaf that requires grad
        grad = weight.grad.clone()
        dist.all_reduce(grad)
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        ref_w = weight0.clone().requires_grad_()
        pairs = torch.cat([(noisy @ ref_w.T).to(dtype), (aug @ ref_w.T).to(dtype)], 1).float()
        ref = nt_xent_of_rows(F.normalize(pairs.view(total, 2, -1), dim=2), 0, total, 0.1)
        ref.backward()
        assert ref_w.grad is not None
        report[str(dtype)] = {
            "loss": float((mean_loss / info.world_size - ref).abs()),
            "grad": float((grad / info.world_size - ref_w.grad).abs().max()),
        }
    if info.rank == 0:
        (out / "nt_xent.json").write_text(json.dumps(report))
    D.cleanup()


if __name__ == "__main__":
    nt_xent_worker(Path(sys.argv[1]))
