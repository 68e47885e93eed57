"""Launch real training runs (torchrun + gloo on loopback) for the trainer tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
DETERMINISTIC_KEYS = (
    "loss",
    "rd_loss",
    "bpp",
    "mse",
    "guidance",
    "contrastive",
    "aux",
    "grad_norm",
)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    return env


def train_command(nproc: int, run_dir: Path, shards: Path, overrides: list[str]) -> list[str]:
    """``torchrun`` (or plain python for nproc=0) on launch/train.py with the smoke config."""
    args = [str(REPO / "launch" / "train.py"), "--config", str(SMOKE)]
    args += [f"train.run_dir={run_dir}", f"data.shards={shards}", *overrides]
    if nproc == 0:
        return [sys.executable, *args]
    # --standalone: the rendezvous binds a port of the kernel's choosing (port 0), so two runs
    # started together never race for one port found free beforehand.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(nproc), *args]


def run_training(
    nproc: int, run_dir: Path, shards: Path, overrides: list[str], timeout: float = 240
) -> subprocess.CompletedProcess:
    """Run to completion; raises with the output tail on a non-zero exit."""
    proc = subprocess.run(
        train_command(nproc, run_dir, shards, overrides),
        env=child_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_failing(
    nproc: int, run_dir: Path, shards: Path, overrides: list[str], timeout: float = 300
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a launch that must fail; returns it and its ``jicd train: error:`` lines."""
    proc = subprocess.run(
        train_command(nproc, run_dir, shards, overrides),
        env=child_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode != 0, "the launch was expected to fail"
    return proc, [line for line in proc.stderr.splitlines() if "jicd train: error:" in line]


def start_training(
    nproc: int, run_dir: Path, shards: Path, overrides: list[str]
) -> subprocess.Popen:
    """Start a run in its own process group (so a test can signal or kill all of it)."""
    return subprocess.Popen(
        train_command(nproc, run_dir, shards, overrides), env=child_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (torchrun starts each worker in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the launcher's process group; SIGKILL also reaches every worker (a node crash)."""
    workers = descendants(proc.pid) if sig == signal.SIGKILL else []
    os.killpg(proc.pid, sig)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def metrics(run_dir: Path, split: str = "train") -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


def last_step(run_dir: Path) -> int:
    rows = metrics(run_dir)
    return rows[-1]["step"] if rows else 0


def exported_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "export" / "model.pt", weights_only=False)["state_dict"]


def max_param_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def deterministic_metrics(run_dir: Path, first_step: int) -> list[dict]:
    """Logged train terms from ``first_step`` on, without timing-dependent fields."""
    rows = [r for r in metrics(run_dir) if r["step"] >= first_step]
    return [{k: r[k] for k in ("step", *DETERMINISTIC_KEYS) if k in r} for r in rows]
