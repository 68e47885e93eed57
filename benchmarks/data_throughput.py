"""Training-loader throughput: DALI vs torch backend on the same shards, side by side.

Usage::

    python benchmarks/data_throughput.py                      # shards of ../shared/data/train-mini
    python benchmarks/data_throughput.py --shards DIR --threads 2 --batches 60 --patch 256

Both loaders produce the full training batch (random crop + augmented view, float32 on the CPU)
with the same crop size, batch size and number of CPU threads (DALI ``num_threads`` = torch
``num_workers``). The backends alternate ``--repeats`` times; prints every run's images/s and
the best of each with their ratio (best-of damps background load on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from data_pipeline import DataConfig, build_train_loader
from data_pipeline.shards import ShardConfig, prepare_shards

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train-mini"


def measure(cfg: DataConfig, batches: int, warmup: int) -> float:
    """Images per second of ``batches`` training batches after ``warmup`` batches."""
    loader = build_train_loader(replace(cfg, seed=0), rank=0, world_size=1, device="cpu")
    for _ in range(warmup):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * cfg.batch_size_per_gpu / (time.perf_counter() - start)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="shard folder (default: build from train-mini)")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="images for temp shards")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per backend")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 0, or 2 when no shards or source images are available."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards
        if shards is None:
            if not Path(args.source).is_dir():
                print(f"error: no --shards given and {args.source} not found", file=sys.stderr)
                return 2
            shards = os.path.join(tmp, "shards")
            prepare_shards(args.source, shards, ShardConfig(maxcount=100))
        rates: dict[str, list[float]] = {"dali": [], "torch": []}
        for _ in range(args.repeats):  # alternate, so background load hits both alike
            for backend, runs in rates.items():
                cfg = DataConfig(
                    shards=shards,
                    backend=backend,
                    patch_size=args.patch,
                    batch_size_per_gpu=args.batch,
                    num_threads=args.threads,
                    num_workers=args.threads,
                )
                runs.append(measure(cfg, args.batches, args.warmup))
                print(f"{backend:>5}: {runs[-1]:8.1f} images/s", flush=True)
    best = {backend: max(runs) for backend, runs in rates.items()}
    print(
        f"best of {args.repeats}: dali {best['dali']:.1f}, torch {best['torch']:.1f} images/s; "
        f"ratio dali/torch {best['dali'] / best['torch']:.2f} "
        f"(patch {args.patch}, batch {args.batch}, {args.threads} CPU threads each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
