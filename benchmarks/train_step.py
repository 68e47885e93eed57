"""Training-step cost: three-branch step vs plain Cheng2020Anchor, and data-parallel efficiency.

    python benchmarks/train_step.py                       # N=128, batch 4, 128-px patches
    python benchmarks/train_step.py --channels 192 --patch 256 --batch 2

Part 1 (one process, ``--threads`` threads): time of one training iteration (forward, eq. 10
loss, backward, Adam step) of the jicd model with all three branches, divided by the same
iteration of a plain CompressAI ``Cheng2020Anchor`` (rate + distortion only), measured
alternately in the same run, next to the ratio of their FLOPs (``torch.utils.flop_counter``).

Part 2 (``torchrun`` with 1 and then 2 ranks, one thread each, gloo, DeepSpeed ZeRO-0): images/s
of the trainer's real ``train_step`` (noise synthesis, global NT-Xent gather, skip check,
all-reduce, clipping) on batches held in memory, so the loader does not compete for the cores.
Efficiency = images/s with 2 ranks ÷ (2 × images/s with 1 rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=128, help="N (128: q1-q3, 192: q4-q6)")
    parser.add_argument("--batch", type=int, default=4, help="images per rank and step")
    parser.add_argument("--patch", type=int, default=128, help="square patch size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (part 1)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="part 1 device"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per model")
    parser.add_argument("--dp-steps", type=int, default=8, help="timed steps per rank (part 2)")
    parser.add_argument("--skip-dp", action="store_true", help="only part 1")
    parser.add_argument(
        "--paper-scale", action="store_true", help="FLOPs per paper iteration -> GPU-hours"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # part 2, under torchrun
    return parser.parse_args(argv)


def make_batch(batch: int, patch: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, patch, patch, generator=gen).to(device)
    return {"clean": clean, "augmented": clean.flip(-1), "noisy": (clean + 0.05).clamp(0, 1)}


def iteration(model, criterion, optimizer, batch, three_branch: bool) -> None:
    """One training iteration; the plain model only sees the noisy image (rate + distortion)."""
    if three_branch:
        out = model(batch["noisy"], batch["clean"], batch["augmented"])
    else:
        out = model(batch["noisy"])
    loss = criterion(out, batch["clean"])["loss"] + 1e-3 * model.aux_loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock times cover it (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def count_flops(model, criterion, optimizer, batch, three_branch: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        iteration(model, criterion, optimizer, batch, three_branch)
    return counter.get_total_flops()


def step_cost(args: argparse.Namespace) -> dict[str, float]:
    """Part 1: seconds and FLOPs per iteration of both models, timed alternately."""
    from compressai.models import Cheng2020Anchor

    from jicd.models import build_model
    from trainer.losses import JointLoss, LossConfig
    from trainer.optim import OptimConfig, build_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch, args.patch, args.device)
    criterion = JointLoss(LossConfig(), 0.0067)
    setups = {
        "jicd": build_model("jicd", 3, channels=args.channels).to(args.device),
        "cheng2020-anchor": Cheng2020Anchor(N=args.channels).to(args.device),
    }
    setups = {k: (m, build_optimizer(m, OptimConfig())) for k, m in setups.items()}
    flops = {k: count_flops(m, criterion, o, batch, k == "jicd") for k, (m, o) in setups.items()}
    times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(args.repeats):
        for name, (model, optimizer) in setups.items():
            synchronize(args.device)
            start = time.perf_counter()
            iteration(model, criterion, optimizer, batch, name == "jicd")
            synchronize(args.device)
            times[name].append(time.perf_counter() - start)
    best = {k: sorted(v)[len(v) // 2] for k, v in times.items()}  # median
    return {
        "jicd_s": best["jicd"],
        "anchor_s": best["cheng2020-anchor"],
        "time_ratio": best["jicd"] / best["cheng2020-anchor"],
        "flop_ratio": flops["jicd"] / flops["cheng2020-anchor"],
        "jicd_gflop": flops["jicd"] / 1e9,
        "anchor_gflop": flops["cheng2020-anchor"] / 1e9,
    }


def dp_worker(args: argparse.Namespace) -> None:
    """Part 2 body (one rank): the trainer's real step on in-memory batches."""
    from jicd import distributed as D
    from trainer.config import load_config, resolve_config
    from trainer.loop import Trainer
    from trainer.testing import synthetic_batch

    torch.set_num_threads(1)
    shards, out = args.worker.split(",")
    overrides = [
        f"model.channels={args.channels}", f"data.shards={shards}", "data.backend=torch",
        f"data.patch_size={args.patch}", f"data.batch_size_per_gpu={args.batch}",
        f"train.run_dir={Path(out).parent / 'run'}", "logging.tensorboard=false",
    ]  # fmt: skip
    info = D.init_distributed(timeout_s=300)
    try:
        cfg = load_config(REPO / "configs" / "smoke.yaml", overrides)
        trainer = Trainer(resolve_config(cfg, info.world_size), info)
        batch = synthetic_batch(args.batch, args.patch, trainer.device)
        for step in range(2):  # warm-up
            trainer.train_step(batch, step, trainer.stop.on_device())
        D.barrier()
        start = time.perf_counter()
        for step in range(args.dp_steps):
            result = trainer.train_step(batch, step, trainer.stop.on_device())
        result.stop.tolist()  # wait for the queued steps
        D.barrier()
        elapsed = time.perf_counter() - start
        if D.is_main():
            images = args.dp_steps * args.batch * D.get_world_size()
            Path(out).write_text(json.dumps({"images_per_s": images / elapsed}))
    finally:
        D.cleanup()


def images_per_second(args: argparse.Namespace, nproc: int, shards: Path, tmp: Path) -> float:
    out = tmp / f"dp{nproc}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
        "--standalone", __file__,
        f"--worker={shards},{out}", f"--channels={args.channels}", f"--batch={args.batch}",
        f"--patch={args.patch}", f"--dp-steps={args.dp_steps}",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=1800)
    return json.loads(out.read_text())["images_per_s"]


def data_parallel_efficiency(args: argparse.Namespace) -> dict[str, float]:
    """Part 2: 1 rank, then 2 ranks, on the same machine."""
    from trainer.testing import make_shards

    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), count=12, side=args.patch, min_side=args.patch)
        one = images_per_second(args, 1, shards, Path(tmp))
        two = images_per_second(args, 2, shards, Path(tmp))
    return {"images_per_s_1rank": one, "images_per_s_2ranks": two, "efficiency": two / (2 * one)}


PAPER_ITERATIONS, PAPER_BATCH, PAPER_PATCH = 769_800, 16, 256


def paper_scale() -> None:
    """FLOPs of one paper iteration (batch 16, 256², three branches) at N = 128 and 192, counted
    on the meta device (``trainer.perf``); GPU-hours follow from a *measured* step time
    (``benchmarks/gpu_step.py``, ``make gpu-check``): 769,800 × t / 3600 per quality."""
    from jicd.models import build_model
    from trainer.losses import JointLoss, LossConfig
    from trainer.perf import training_step_flops

    criterion = JointLoss(LossConfig(), 0.0067)
    for quality, channels in ((3, 128), (6, 192)):
        model = build_model("jicd", quality)
        flops = training_step_flops(model, criterion, PAPER_BATCH, PAPER_PATCH)
        per_quality = flops * PAPER_ITERATIONS / 1e18
        print(
            f"N={channels}: {flops / 1e12:.2f} TFLOP per iteration, {per_quality:.1f} EFLOP "
            f"per quality; GPU-hours = {PAPER_ITERATIONS:,} x (measured s/step) / 3600"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        dp_worker(args)
        return 0
    if args.paper_scale:
        paper_scale()
        return 0
    shape = f"N={args.channels}, batch {args.batch}, {args.patch}x{args.patch}"
    cost = step_cost(args)
    print(f"part 1 ({shape}, {args.device}, {args.threads} thread(s), median of {args.repeats})")
    print(f"  three-branch jicd step  {cost['jicd_s']:.3f} s   {cost['jicd_gflop']:.1f} GFLOP")
    print(f"  plain cheng2020-anchor  {cost['anchor_s']:.3f} s   {cost['anchor_gflop']:.1f} GFLOP")
    print(f"  time ratio {cost['time_ratio']:.2f}   FLOP ratio {cost['flop_ratio']:.2f}")
    print(f"  time ratio / FLOP ratio = {cost['time_ratio'] / cost['flop_ratio']:.3f}")
    if not args.skip_dp:
        dp = data_parallel_efficiency(args)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        print(f"part 2 ({shape}, DeepSpeed ZeRO-0, {backend}, 1 thread per rank)")
        print(f"  1 rank   {dp['images_per_s_1rank']:.2f} images/s")
        print(f"  2 ranks  {dp['images_per_s_2ranks']:.2f} images/s")
        print(f"  data-parallel efficiency {dp['efficiency']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
