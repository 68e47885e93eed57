"""Seconds per training step, side by side: today's DeepSpeed step vs each fast path.

    python benchmarks/gpu_step.py                          # N=128/192, batch 4/16, TF32 and bf16
    python benchmarks/gpu_step.py --paths ddp full graphs --channels 128 --batch 16
    python benchmarks/gpu_step.py --tiny                   # CPU, N=8: what the test suite runs

Every row is the trainer's own step (``trainer.step.TrainStep``: noise, three branches, eq. 10,
skip decision, clipping, Adam, LR schedule) on one in-memory batch of 256² crops, one process,
no data loading; timed over ``--steps`` steps after ``--warmup`` (compilation and CUDA-graph
recording happen there) with one synchronisation at the end. Paths:

* ``deepspeed`` — DeepSpeed ZeRO-1, eager: the configuration of ``configs/base/paper.yaml``
  (its step synchronises inside DeepSpeed); the reference of the ratio column;
* ``ddp`` — DDP, eager, no host synchronisation in the step;
* ``regional`` / ``full`` — ``engine.compile`` (DDP);
* ``graphs`` — ``engine.compile=full`` + ``engine.cuda_graphs`` (CUDA only).

Columns: seconds per step, images/s, peak memory, and the FLOP utilisation against the rate of a
large matrix product measured by this script on the same device (``trainer.perf``). ``--out``
writes the rows as JSON, the step-time table ``jicd reproduce --scale paper --step-times`` plans
with.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jicd import distributed as D  # noqa: E402
from jicd.models import build_model  # noqa: E402
from trainer.acceleration import enable_tf32  # noqa: E402
from trainer.config import load_config, resolve_config  # noqa: E402
from trainer.losses import JointLoss  # noqa: E402
from trainer.perf import matmul_rate, training_step_flops  # noqa: E402
from trainer.step import build_train_step  # noqa: E402
from trainer.testing import synthetic_batch  # noqa: E402

PATHS = {
    "deepspeed": ["engine.kind=deepspeed", "engine.zero_stage=1"],
    "ddp": ["engine.kind=ddp"],
    "regional": ["engine.kind=ddp", "engine.compile=regional"],
    "full": ["engine.kind=ddp", "engine.compile=full"],
    "graphs": ["engine.kind=ddp", "engine.compile=full", "engine.cuda_graphs=true"],
}
PRECISIONS = {"tf32": ["engine.precision=fp32"], "bf16": ["engine.precision=bf16-autocast"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 192])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation)")
    parser.add_argument("--tiny", action="store_true", help="CPU, N=8, 64², 3+2 steps")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per path")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one path, in a child process
    args = parser.parse_args(argv)
    if args.tiny:
        args.channels, args.batch, args.patch, args.steps, args.warmup = [8], [2], 64, 3, 2
        args.precision = ["tf32"]
    return args


def run_row(device: torch.device, channels: int, batch: int, patch: int, path: str,
            precision: str, args: argparse.Namespace) -> dict:  # fmt: skip
    """One configuration: build, warm up, time; peak memory and FLOP count."""
    overrides = [f"model.channels={channels}", f"data.batch_size_per_gpu={batch}",
                 f"data.patch_size={patch}", "data.num_workers=0", "data.num_threads=1",
                 *PATHS[path], *PRECISIONS[precision]]  # fmt: skip
    cfg = resolve_config(load_config(REPO / "configs" / "smoke.yaml", overrides), world_size=1)
    torch._dynamo.reset()  # a new model per row: no stale graphs, no recompile limit reached
    torch.manual_seed(0)
    model = build_model("jicd", 3, channels=channels).to(device).train()
    criterion = JointLoss(cfg.loss, cfg.loss.resolved_lmbda())
    flops = training_step_flops(model, criterion, batch, patch)
    step = build_train_step(model, cfg, device, rank=0)
    data = synthetic_batch(batch, patch, device)
    stop = torch.zeros(1, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup):
        step(data, i, stop)
    synchronize(device)
    started = time.perf_counter()
    for i in range(args.steps):
        result = step(data, args.warmup + i, stop)
    synchronize(device)
    seconds = (time.perf_counter() - started) / args.steps
    skipped = step.guard.counters().skipped
    step.engine.close()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "channels": channels, "batch": batch, "precision": precision, "path": path,
        "step_s": seconds, "images_s": batch / seconds, "peak_gib": peak, "flops": flops,
        "skipped": skipped, "loss": float(result.values["loss"]),
    }  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(rows: list[dict], rate: float) -> str:
    """Rows, each (N, batch, precision) together, with the ratio to its first path's time."""
    rows = sorted(rows, key=lambda r: (r["channels"], r["batch"], r["precision"]))
    lines = [f"{'N':>4} {'batch':>5} {'prec':>5} {'path':>9} {'s/step':>8} {'img/s':>7} "
             f"{'peak GiB':>8} {'util':>6} {'vs ref':>7}"]  # fmt: skip
    reference: dict[tuple, float] = {}
    for r in rows:
        key = (r["channels"], r["batch"], r["precision"])
        reference.setdefault(key, r["step_s"])
        util = r["flops"] / r["step_s"] / rate
        lines.append(
            f"{r['channels']:>4} {r['batch']:>5} {r['precision']:>5} {r['path']:>9} "
            f"{r['step_s']:>8.4f} {r['images_s']:>7.1f} {r['peak_gib']:>8.2f} {util:>6.1%} "
            f"{reference[key] / r['step_s']:>6.2f}x"
        )
    return "\n".join(lines)


def measure(args: argparse.Namespace, path: str) -> list[dict]:
    """Every (N, batch, precision) row of ``path``, in this process."""
    info = D.init_distributed(timeout_s=300, device="cpu" if args.tiny else "auto")
    if info.device.type == "cuda":
        enable_tf32()
    rows = []
    try:
        for channels in args.channels:
            for batch in args.batch:
                for precision in args.precision:
                    rows.append(
                        run_row(info.device, channels, batch, args.patch, path, precision, args)
                    )
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        D.cleanup()
    return rows


def measure_in_child(argv: list[str], path: str, timeout: float) -> list[dict]:
    """:func:`measure` in a child process: a path that crashes (a compiler or kernel fault)
    or hangs costs its own rows only, reported with the reason."""
    command = [sys.executable, __file__, *argv, "--child", path]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as late:  # keep the rows it finished
        out = late.stdout.decode() if isinstance(late.stdout, bytes) else (late.stdout or "")
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [*rows, {"path": path, "error": f"stopped after {timeout:.0f} s"}]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:]
        rows.append({"path": path, "error": f"exit {done.returncode}: {' '.join(tail)[:200]}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        measure(args, args.child)
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    paths = [p for p in args.paths if p != "graphs" or device.type == "cuda"]
    if device.type == "cuda":
        enable_tf32()
    rate = matmul_rate(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; matmul rate {rate / 1e12:.1f} TFLOP/s", flush=True)
    rows: list[dict] = []
    for path in paths:
        rows += measure_in_child(argv, path, args.timeout)
        for row in rows:
            if row["path"] == path and "error" in row:
                print(f"{path}: {row['error']}", flush=True)
    print(table([r for r in rows if "error" not in r], rate))
    if args.out:
        payload = {"device": name, "torch": torch.__version__, "matmul_flops_per_s": rate,
                   "rows": rows}  # fmt: skip
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
