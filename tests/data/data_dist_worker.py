"""torchrun worker of ``tests/data/test_loaders_distributed.py`` (one process per rank, gloo).

    torchrun --nproc_per_node=2 tests/data/data_dist_worker.py SHARDS BACKEND OUT_DIR

Reads two epochs of training batches with a collective after every step (as the trainer does:
unequal batch counts would hang here), then the validation split, and writes what this rank saw
to ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from data_pipeline import DataConfig, build_train_loader, build_val_loader
from jicd import distributed


def main(shards: str, backend: str, out_dir: str) -> None:
    info = distributed.init_distributed(timeout_s=60)
    cfg = DataConfig(
        shards=shards, backend=backend, patch_size=64, batch_size_per_gpu=7, val_batch_size=2,
        num_threads=1, num_workers=0,
    )  # fmt: skip
    loader = build_train_loader(replace(cfg, seed=0), info.rank, info.world_size, info.device)
    epochs = []
    for _epoch in range(2):
        batches = []
        for _ in range(loader.batches_per_epoch):
            batch = next(loader)
            distributed.all_reduce_sum(torch.ones(1))  # hangs if another rank stopped early
            batches.append(batch["keys"])
        epochs.append(batches)
    val = build_val_loader(cfg, info.rank, info.world_size, info.device)
    report = {
        "batches_per_epoch": loader.batches_per_epoch,
        "epochs": epochs,
        "val_indices": [i for batch in val for i in batch["index"].tolist()],
    }
    Path(out_dir, f"rank{info.rank}.json").write_text(json.dumps(report))
    distributed.barrier()
    distributed.cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:4])
