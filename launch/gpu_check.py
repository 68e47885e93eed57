"""GPU acceptance check: one command, a PASS/FAIL/SKIP table with figures, exit 1 on a FAIL.

    make gpu-check                       # or: bash launch/gpu_check.sh [--out DIR]
    python launch/gpu_check.py --out /tmp/gpu-check [--only resume codec]

Every line is one claim about the GPU paths (``docs/cluster.md#gpu-acceptance-check`` says what
each one proves). On a machine without a GPU the GPU lines report SKIP with the reason and the
few lines that can run on the CPU run (that is how the test suite checks this script); a node whose
``nvidia-smi`` lists GPUs that torch cannot use FAILs at the second line. Lines that need two
GPUs SKIP on one. Sized for under 5 minutes on one GPU (not yet timed on one); the GPU lines
live in ``launch/gpu_check_cuda.py`` (data, NCCL, precision, codec) and
``launch/gpu_check_train.py`` (training runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The line modules import this one as ``gpu_check``: make that the running script, not a copy
# (else their Skip would be another class than the one caught here).
sys.modules.setdefault("gpu_check", sys.modules[__name__])

import numpy as np  # noqa: E402  (after the repository is on sys.path)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from jicd import distributed as D  # noqa: E402


class Skip(Exception):
    """Raised by a check that cannot run here; its message is the reason."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    figures: str


@dataclass
class Context:
    """What the checks share: a scratch folder, the GPU count, generated inputs (lazily)."""

    out: Path
    gpus: int

    def need_gpus(self, count: int = 1) -> None:
        if self.gpus < count:
            raise Skip(f"needs {count} GPU(s), torch sees {self.gpus}")

    def need_dali(self) -> None:
        """SKIP (not FAIL) where DALI is absent: ``data.backend=auto`` then uses the torch loader,
        which is a supported configuration, so its absence is no defect."""
        if not dali_installed():
            raise Skip(DALI_MISSING)

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


DALI_MISSING = "DALI not installed (torch loader in use)"


def dali_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("nvidia.dali") is not None


def photo(side: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth photo-like image (low-frequency colour field + a little texture)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((side, side), Image.BICUBIC), dtype=np.float32)
    pixels = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "L":
        return image.convert("L")
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(200)
    return image


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the rank variables of the in-process group (a child would
    take them for a torchrun launch and bind the same port), plus ``extra``."""
    drop = {*D.TORCHRUN_VARS, "LOCAL_WORLD_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` from the repository root; its output is returned, not printed."""
    env = child_env(**kwargs.pop("env", {}))
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# ------------------------------------------------------------------------- CPU-capable lines
def check_environment(ctx: Context) -> str:
    """Versions of everything the GPU paths depend on (DALI's absence is reported, not failed)."""
    parts = [f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
    smi = D.nvidia_smi_gpus()
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
    message = D.unusable_gpu_message()
    if message is not None:
        raise AssertionError(message)
    if ctx.gpus == 0:
        raise Skip("no GPU on this machine (nvidia-smi lists none)")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(ctx.gpus))
    return f"{ctx.gpus} GPU(s): {names}; device=auto picks cuda:LOCAL_RANK"


def tiny_export(ctx: Context) -> Path:
    """A random N=16 jicd export (coding speed is not what these lines measure)."""
    from jicd.models import ModelConfig, build_model_from_config
    from jicd.models.weights import save_export

    path = ctx.folder("models") / "tiny.pt"
    if not path.is_file():
        torch.manual_seed(0)
        cfg = ModelConfig(preset="jicd", quality=1, channels=16)
        save_export(path, build_model_from_config(cfg), cfg)
    return path


def check_evaluation_more_processes_than_gpus(ctx: Context) -> str:
    """``jicd evaluate`` under torchrun with GPUs + 1 processes (evaluate.sbatch does this)."""
    images = ctx.folder("eval_images")
    for i in range(3):
        photo(128, seed=i).save(images / f"img{i}.png")
    nproc = max(2, ctx.gpus + 1)
    out = ctx.out / "eval_results"
    started = time.perf_counter()
    done = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", "-m", "jicd.evaluation.evaluate",
         "--checkpoint", str(tiny_export(ctx)), "--dataset", f"gen={images}",
         "--levels", "4", "--output", str(out)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, last_line(done.stderr)
    rows = json.loads(next(out.glob("*-per_image.json")).read_text())
    assert len(rows) == 3, f"{len(rows)} rows for 3 images"
    return (
        f"{nproc} processes on {ctx.gpus} GPU(s): 3 images, {time.perf_counter() - started:.0f} s"
    )


CPU_CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("environment", check_environment),
    ("GPU visible to torch", check_gpu_visible),
]
LATE_CPU_CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("evaluation, more processes than GPUs", check_evaluation_more_processes_than_gpus),
]


def run_checks(ctx: Context, only: list[str] | None = None) -> list[Result]:
    """Run every check (or those whose name contains one of ``only``), printing progress."""
    from gpu_check_cuda import cuda_checks  # beside this file

    results = []
    for name, check in [*CPU_CHECKS, *cuda_checks(), *LATE_CPU_CHECKS]:
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
