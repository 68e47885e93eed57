"""The one module that knows about ranks, torchrun's environment, backends and devices.

Everything else asks this module (``get_rank()``, ``is_main()``, ``device()``…) instead of reading
environment variables. A plain ``python launch/train.py`` run becomes a one-process group, so the
same code path (collectives included) runs with and without ``torchrun``.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device


_INFO: DistInfo | None = None


def read_env() -> dict[str, str]:
    """torchrun's variables, or an empty dict when not launched by torchrun.

    Raises:
        RuntimeError: when only some of them are set (a half-configured launch would otherwise
            hang or silently train on one process).
    """
    present = {k: os.environ[k] for k in TORCHRUN_VARS if k in os.environ}
    if present and len(present) != len(TORCHRUN_VARS):
        missing = [k for k in TORCHRUN_VARS if k not in present]
        raise RuntimeError(
            f"incomplete torchrun environment: {', '.join(present)} set but "
            f"{', '.join(missing)} missing; launch with torchrun or unset them"
        )
    return present


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def choose_backend() -> str:
    """NCCL when CUDA is available, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the process group (one process when not under torchrun) and pick the device.

    Args:
        timeout_s: collective timeout; tests use a short one so a hang fails quickly.
    """
    global _INFO
    env = read_env()
    if not env:
        # A single process still gets a real (world size 1) group: the gather, the engine and
        # the checkpoint code then have one path only.
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )  # fmt: skip
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    backend = choose_backend()
    device = torch.device(f"cuda:{local}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world
        )
    _INFO = DistInfo(rank, world, local, backend, device)
    return _INFO


def cleanup() -> None:
    """Destroy the process group if one is up (safe to call more than once)."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _INFO = None


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """Rank within this node."""
    return _INFO.local_rank if _INFO else int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on global rank 0: the only rank that writes shared files and logs."""
    return get_rank() == 0


def device() -> torch.device:
    """The device this rank trains on."""
    if _INFO is not None:
        return _INFO.device
    return (
        torch.device("cuda", get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    )


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks (returns a new tensor; identity on one process)."""
    out = values.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag, whether it is true on at least one rank (one all-reduce for all of them).

    The trainer uses it to skip a step, or stop after it, on every rank together.
    """
    values = torch.tensor([float(flag) for flag in flags], device=device())
    return tuple(bool(v > 0) for v in all_reduce_sum(values).tolist())


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block on one intra-op thread, whatever the process's setting.

    For many tiny ops (per-sample augmentation, the wavefront coder's small matmuls): extra
    OpenMP threads waiting on busy cores slow them down several times, and one thread also makes
    their arithmetic independent of the caller's thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (callers add the rank where streams must differ)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RankFilter(logging.Filter):
    """Prefixes every record with the global rank (``[rank 1] …``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = get_rank()
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Rank-prefixed logging on stderr; non-main ranks only log warnings and above."""
    handler = logging.StreamHandler()
    handler.addFilter(RankFilter())
    handler.setFormatter(logging.Formatter("[rank %(rank)s] %(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if is_main() else max(level, logging.WARNING))


def replica_divergence(module: torch.nn.Module) -> float:
    """Largest spread over ranks of per-tensor parameter checksums (0.0 when replicas agree).

    Data-parallel replicas must stay bit-identical; a non-zero value reveals e.g. an optimizer
    stepped on some ranks only (CompressAI's two-optimizer loop diverges this way under DDP).
    """
    sums = [p.detach().double().sum() for p in module.parameters()]
    sums += [p.detach().double().abs().sum() for p in module.parameters()]
    local = torch.stack(sums).to(device())
    if get_world_size() == 1:
        return 0.0
    high, low = local.clone(), local.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())
