"""The training lines of ``make gpu-check``: engines, resume, launcher signal, paper-scale time.

Each runs ``launch/train.py`` / ``launch/train_multinode.sh`` on the first GPU, or the trainer
in gpu_check's own process (paper scale); they SKIP without a GPU.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from trainer.gpu_check.context import REPO, Context, child_env, group, last_line, run, shards

ITERATIONS_PER_QUALITY = 769_800  # 600 epochs of Flickr2W at batch 16 (configs/q*.yaml)


def train(ctx: Context, run_dir: Path, overrides: list[str], timeout: float = 240):
    """``launch/train.py`` with the smoke config on this machine's first GPU."""
    smoke = shards(ctx, "smoke", 24, 96, ("jpg", "png"))
    done = run(
        [sys.executable, str(REPO / "launch" / "train.py"), "--config", "configs/smoke.yaml",
         f"data.shards={smoke}", f"train.run_dir={run_dir}", "train.device=cuda",
         "train.val_every=0", "logging.tensorboard=false", *overrides],
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{run_dir.name}: {last_line(done.stderr)}"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["split"] == "train"]


def check_engines_with_nan_step(ctx: Context) -> str:
    """DeepSpeed ZeRO 0/1/2 and DDP train on CUDA; a NaN at step 2 is skipped, training goes on."""
    ctx.need_gpus(1)
    figures = []
    for kind, stage in (("deepspeed", 0), ("deepspeed", 1), ("deepspeed", 2), ("ddp", 0)):
        name = f"{kind}{stage if kind == 'deepspeed' else ''}"
        rows = train(
            ctx, ctx.out / f"engine_{name}",
            [f"engine.kind={kind}", f"engine.zero_stage={stage}", "train.inject_nan_at_step=2",
             "train.steps=4", "checkpoint.export=false"],
        )  # fmt: skip
        last = rows[-1]
        assert last["skipped_total"] == 1 and math.isfinite(last["loss"]), last
        figures.append(f"{name} loss {last['loss']:.3f}")
    return "1 step skipped each; " + ", ".join(figures)


def export_diff(a: Path, b: Path) -> float:
    sa, sb = (
        torch.load(p / "export" / "model.pt", weights_only=False)["state_dict"] for p in (a, b)
    )
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def check_resume(ctx: Context) -> str:
    """3 + 3 steps (stop, resume) vs 6: close by default, bitwise with train.deterministic."""
    ctx.need_gpus(1)
    figures = []
    for deterministic in (False, True):
        flag = [f"train.deterministic={str(deterministic).lower()}", "checkpoint.every=3"]
        whole, parts = ctx.out / f"resume6_{deterministic}", ctx.out / f"resume33_{deterministic}"
        a = train(ctx, whole, [*flag, "train.steps=6"])
        train(ctx, parts, [*flag, "train.steps=3"])
        b = train(ctx, parts, [*flag, "train.steps=6"])
        loss = abs(a[-1]["loss"] - b[-1]["loss"])
        weights = export_diff(whole, parts)
        if deterministic:
            assert loss == 0.0 and weights == 0.0, (loss, weights)
        else:
            assert weights < 1e-3, weights
        figures.append(f"{'deterministic' if deterministic else 'default'}: max |Δw| {weights:.1e}")
    return "; ".join(figures)


def check_ddp_resume_adam_step(ctx: Context) -> str:
    """After a DDP resume (weights on CUDA) Adam's step counters stay on the CPU."""
    from jicd.models import build_model
    from trainer.engine import EngineConfig, build_engine
    from trainer.optim import OptimConfig, build_optimizer

    info = group(ctx)
    engines = []
    for _ in range(2):
        model = build_model("jicd", 1, channels=16).to(info.device)
        engines.append(
            build_engine(
                model, build_optimizer(model, OptimConfig()), EngineConfig(kind="ddp"), 1.0, 1
            )
        )
    out = engines[0].forward(*(torch.rand(1, 3, 64, 64, device=info.device),) * 3)
    keep = torch.zeros((), device=info.device)  # skip flag 0: the update is applied
    engines[0].step(out["x_hat"].mean(), keep)
    engines[0].save(ctx.folder("ddp_ckpt"), "t")
    engines[1].load(ctx.folder("ddp_ckpt"), "t")
    steps = [s["step"] for s in engines[1].optimizer.state.values() if "step" in s]
    moments = [s["exp_avg"] for s in engines[1].optimizer.state.values() if "exp_avg" in s]
    assert steps and {t.device.type for t in steps} == {"cpu"}, {t.device for t in steps}
    assert {t.device.type for t in moments} == {"cuda"}
    return f"{len(steps)} step tensors on cpu, moments on cuda"


def check_multinode_usr1(ctx: Context) -> str:
    """train_multinode.sh (this torchrun's flags) + SIGUSR1: checkpoint at the stop step, exit."""
    ctx.need_gpus(1)
    smoke = shards(ctx, "smoke", 24, 96, ("jpg", "png"))
    run_dir = ctx.out / "usr1"
    env = child_env(
        NPROC_PER_NODE="1",
        MASTER_PORT="0",  # one node: the rendezvous binds a free port itself (no race)
        TORCHRUN=str(Path(sys.executable).parent / "torchrun"),
    )
    proc = subprocess.Popen(
        ["bash", "launch/train_multinode.sh", "--config", "configs/smoke.yaml",
         f"data.shards={smoke}", f"train.run_dir={run_dir}", "train.device=cuda",
         "train.steps=100000", "train.val_every=0", "checkpoint.every=100000",
         "logging.tensorboard=false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None  # stderr=PIPE
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no training progress: {last_line(proc.stderr.read())}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    status = proc.wait(timeout=120)
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{step:08d}", (latest, step)
    why = last_line(proc.stderr.read())
    assert status == 0, f"launcher exit {status} after a clean stop: {why}"
    return f"stopped at step {step}, checkpoint {latest}, launcher exit 0"


MAX_DATA_WAIT = 0.10  # above this the loader, not the GPU, sets the pace: a FAIL
WARM_UP_STEPS = 10


def paper_scale_figures(rows: list[dict], batch: int) -> dict[str, float]:
    """Step time, throughput, data-wait and loss of a paper-scale run's train log rows.

    Raises:
        AssertionError: a step was skipped (its time would be that of a step that did
            nothing), no step was timed, or the GPU waited on data more than 10 % of the time.
    """
    train = [r for r in rows if r["split"] == "train"]
    skipped = train[-1]["skipped_total"] if train else 0
    losses = ", ".join(f"{r['loss']:.4g}" for r in train)
    assert train and skipped == 0, (
        f"{skipped:.0f} of {train[-1]['step'] if train else 0} steps skipped (losses seen: "
        f"{losses}): the time would be of steps that did nothing"
    )
    timed = [r for r in train if r["step"] > WARM_UP_STEPS]
    assert timed, f"no step after the {WARM_UP_STEPS} warm-up steps was logged"
    images = sum(r["images_per_s"] for r in timed) / len(timed)
    wait = sum(r["data_wait_fraction"] for r in timed) / len(timed)
    assert wait <= MAX_DATA_WAIT, (
        f"the GPU waited on data {wait:.0%} of the time (> {MAX_DATA_WAIT:.0%}): raise "
        "data.num_workers (torch loader) or data.num_threads (DALI), or give each rank more cores"
    )
    return {"step_s": batch / images, "images_s": images, "wait": wait, "loss": timed[-1]["loss"]}


def paper_scale_step(ctx: Context, channels: int) -> dict[str, float]:
    """The trainer at paper scale from scratch (``train.init_from=none``): the loss cap applies
    once the loss has fallen below it (``train.loss_cap_from=first_below``), so every timed
    step is a real optimizer step — and a skipped one fails the line."""
    from trainer.config import load_config, resolve_config
    from trainer.loop import Trainer

    info = group(ctx)
    root = shards(ctx, "paper", 64, 320, ("jpg",))
    config = "configs/q3.yaml" if channels == 128 else "configs/q4.yaml"
    run_dir = ctx.out / f"paper_{channels}"
    cfg = load_config(REPO / config, [
        f"data.shards={root}", f"train.run_dir={run_dir}", "train.steps=30", "train.val_every=0",
        "logging.log_every=10", "logging.progress_bar=false", "logging.tensorboard=false",
        "checkpoint.every=1000000", "checkpoint.export=false", "train.init_from=none",
        f"model.channels={channels}",
    ])  # fmt: skip
    resolve_config(cfg, info.world_size)
    torch.cuda.reset_peak_memory_stats()
    Trainer(cfg, info).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    figures = paper_scale_figures(rows, cfg.data.batch_size_per_gpu)
    return figures | {"peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def check_paper_scale(ctx: Context) -> str:
    """Step time at batch 16, 256², N=128/192 on one GPU, and the recipe's GPU-hours from it."""
    ctx.need_gpus(1)
    figures, hours = [], {}
    for channels in (128, 192):
        m = paper_scale_step(ctx, channels)
        hours[channels] = ITERATIONS_PER_QUALITY * m["step_s"] / 3600
        figures.append(
            f"N={channels}: {m['step_s']:.3f} s/step, {m['images_s']:.0f} img/s, "
            f"wait {m['wait']:.0%}, loss {m['loss']:.3g}, peak {m['peak_gib']:.1f} GiB, "
            f"{hours[channels]:.0f} GPU-h/q"
        )
    total = 3 * hours[128] + 3 * hours[192]
    return (
        "from scratch, 0 skipped; "
        + "; ".join(figures)
        + f"; 6 qualities: {total:.0f} GPU-hours on this GPU type"
    )
