"""GPU acceptance check: one command, a PASS/FAIL/SKIP table with figures, exit 1 on a FAIL.

    make gpu-check                       # or: bash launch/gpu_check.sh [--out DIR]
    python -m trainer.gpu_check --out /tmp/gpu-check [--only resume codec]

Every line is one claim about the GPU paths (docs/cluster.md, "GPU acceptance check", says what
each one proves). On a machine without a GPU the GPU lines report SKIP with the reason and the
few lines that can run on the CPU run (that is how the test suite checks this module); a node
whose ``nvidia-smi`` lists GPUs that torch cannot use FAILs at the second line. Lines that need
two GPUs SKIP on one; without DALI the DALI lines SKIP. The lines live in
:mod:`trainer.gpu_check.device_lines` (data, NCCL, precision, codec) and
:mod:`trainer.gpu_check.train_lines` (training runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from jicd import devices
from trainer.gpu_check import device_lines as dev
from trainer.gpu_check import train_lines as tr
from trainer.gpu_check.context import (
    DALI_MISSING,
    Context,
    Result,
    Skip,
    dali_installed,
    last_line,
    photo,
    run,
)
from trainer.testing import make_export


def check_environment(ctx: Context) -> str:
    """Versions of everything the GPU paths depend on (DALI's absence is reported, not failed)."""
    parts = [f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
    smi = devices.nvidia_smi_gpus()
    if smi:
        query = run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"], 30)
        parts.append(f"driver/GPU {last_line(query.stdout)}")
    else:
        parts.append("no nvidia-smi")
    if torch.cuda.is_available():
        parts.append("NCCL " + ".".join(map(str, torch.cuda.nccl.version())))
    if dali_installed():
        import nvidia.dali

        parts.append(f"DALI {nvidia.dali.__version__}")
    else:
        parts.append(DALI_MISSING)
    return ", ".join(parts)


def check_gpu_visible(ctx: Context) -> str:
    """torch sees the GPUs that the driver lists (else: say why, the start-up message)."""
    message = devices.unusable_gpu_message()
    if message is not None:
        raise AssertionError(message)
    if ctx.gpus == 0:
        raise Skip("no GPU on this machine (nvidia-smi lists none)")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(ctx.gpus))
    return f"{ctx.gpus} GPU(s): {names}; device=auto picks cuda:LOCAL_RANK"


def check_evaluation_more_processes_than_gpus(ctx: Context) -> str:
    """``jicd evaluate`` under torchrun with GPUs + 1 processes (evaluate.sbatch does this)."""
    images = ctx.folder("eval_images")
    for i in range(3):
        photo(128, seed=i).save(images / f"img{i}.png")
    nproc = max(2, ctx.gpus + 1)
    out, model = ctx.out / "eval_results", make_export(ctx.folder("models") / "tiny.pt")
    started = time.perf_counter()
    done = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", "-m", "jicd.evaluation.evaluate",
         "--checkpoint", str(model), "--dataset", f"gen={images}",
         "--levels", "4", "--output", str(out)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, last_line(done.stderr)
    rows = json.loads(next(out.glob("*-per_image.json")).read_text())
    assert len(rows) == 3, f"{len(rows)} rows for 3 images"
    return (
        f"{nproc} processes on {ctx.gpus} GPU(s): 3 images, {time.perf_counter() - started:.0f} s"
    )


LINES: list[tuple[str, Callable[[Context], str]]] = [
    ("environment", check_environment),
    ("GPU visible to torch", check_gpu_visible),
    ("DALI mixed loader (5 formats)", dev.check_dali_mixed),
    ("DALI resume on GPU across an epoch", dev.check_dali_resume),
    ("NT-Xent on NCCL, 2 ranks vs 1", dev.check_nt_xent_nccl),
    ("bf16 really on (dtype hook)", dev.check_bf16),
    ("engines ZeRO 0/1/2 + DDP, NaN step", tr.check_engines_with_nan_step),
    ("DDP resume: Adam step on CPU", tr.check_ddp_resume_adam_step),
    ("resume 3+3 vs 6", tr.check_resume),
    ("train_multinode.sh + SIGUSR1", tr.check_multinode_usr1),
    ("codec GPU-encode -> CPU-decode", dev.check_codec_gpu_to_cpu),
    ("integer entropy path GPU <-> CPU exact", dev.check_integer_codec_exact),
    ("paper-scale step time", tr.check_paper_scale),
    ("evaluation, more processes than GPUs", check_evaluation_more_processes_than_gpus),
]
"""Every line, in table order."""


def run_checks(ctx: Context, only: list[str] | None = None) -> list[Result]:
    """Run every check (or those whose name contains one of ``only``), printing progress."""
    results = []
    for name, check in LINES:
        if only and not any(part.lower() in name.lower() for part in only):
            continue
        started = time.perf_counter()
        try:
            status, figures = "PASS", check(ctx)
        except Skip as why:
            status, figures = "SKIP", str(why)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a FAIL line
            status, figures = "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            (ctx.out / "failures.log").open("a").write(f"== {name}\n{traceback.format_exc()}\n")
        results.append(Result(name, status, f"{figures} [{time.perf_counter() - started:.0f} s]"))
        print(f"{status:4}  {name}: {figures}", file=sys.stderr, flush=True)
    return results


def table(results: list[Result]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':{width}}  result  figures", f"{'-' * width}  ------  -------"]
    lines += [f"{r.name:{width}}  {r.status:6}  {r.figures}" for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--only", nargs="+", help="run the checks whose name contains one of these")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="jicd-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, gpus=torch.cuda.device_count())
    results = run_checks(ctx, args.only)
    text = table(results)
    print(text)
    (out / "table.txt").write_text(text + "\n")
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
