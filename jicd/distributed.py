"""The one module that knows about ranks, torchrun's environment and the process group.

Everything else asks this module (``get_rank()``, ``is_main()``, ``device()``…) instead of reading
environment variables. A plain ``python launch/train.py`` run becomes a one-process group, so the
same code path (collectives included) runs with and without ``torchrun``. Which device and
backend a rank gets is decided by :mod:`jicd.devices`.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import random
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist

from jicd.devices import (
    DEVICE_ENV,
    backend_for,
    choose_device,
    requested_device,
    unusable_gpu_message,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
log = logging.getLogger(__name__)


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


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 for a plain process)."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    return get_local_rank() + 1  # a launcher without it: check this rank's own index only


def cpus_available() -> int:
    """Cores this process may use: its CPU affinity (Slurm and container cpusets restrict it),
    bounded by a cgroup CPU quota and by ``$SLURM_CPUS_PER_TASK`` when set; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limits = [count or 1, _cgroup_cpu_quota()]
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(limit for limit in limits if limit))


def _cgroup_cpu_quota() -> int | None:
    """Whole cores allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), or None."""
    for path, period_path in (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            fields = Path(path).read_text().split()
            if period_path is not None:
                fields.append(Path(period_path).read_text().strip())
        except OSError:
            continue
        if len(fields) == 2 and fields[0].lstrip("-").isdigit() and int(fields[0]) > 0:
            return max(1, -(-int(fields[0]) // int(fields[1])))  # ceil(quota / period)
    return None


def cpus_per_local_rank() -> int:
    """This rank's share of :func:`cpus_available` (torchrun does not pin its workers, so the
    node's processes share the cores); at least 1."""
    return max(1, cpus_available() // local_world_size())


def init_distributed(
    timeout_s: float = 1800.0, device: str = "auto", before_group: Callable[[], None] | None = None
) -> DistInfo:
    """Initialise the process group (one process when not under torchrun) and pick the device.

    Args:
        timeout_s: collective timeout; tests use a short one so a hang fails quickly.
        device: "auto", "cpu" or "cuda" (``train.device``; "auto" defers to ``$JICD_DEVICE``,
            see :func:`choose_device`).
        before_group: called once the device is chosen (``$DS_ACCELERATOR`` set), before the
            group exists: where libraries that capture the group at import are imported.

    Raises:
        UserError: an invalid or unsatisfiable device request.
    """
    global _INFO
    env = read_env()
    if not env:
        # A single process still gets a real (world size 1) group: the gather, the engine and
        # the checkpoint code then have one path only. Its store is in-process (no TCP port:
        # a port found free and bound later can be taken in between by another job on the
        # node). The variables are set for libraries that read them (DeepSpeed checks that
        # they exist); nothing binds MASTER_PORT.
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1", MASTER_PORT="0",
        )  # fmt: skip
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    requested = requested_device(device)
    cuda_count = torch.cuda.device_count() if requested != "cpu" else 0
    chosen = choose_device(requested, local, local_world_size(), cuda_count)
    _warn_about_unused_gpus(requested, chosen, cuda_count)
    backend = backend_for(chosen)
    if chosen.type == "cpu":
        # DeepSpeed picks its accelerator by itself (CUDA when present) and moves the model there;
        # a CPU run on a GPU node must tell it, before deepspeed is first imported.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if before_group is not None:
        before_group()
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.HashStore() if not env else None  # torchrun's variables name its store
        dist.init_process_group(backend, timeout=timeout, rank=rank, world_size=world, store=store)
    _INFO = DistInfo(rank, world, local, backend, chosen)
    return _INFO


def cleanup() -> None:
    """Destroy the process group and its threads now (safe to call more than once).

    Every ProcessGroupGloo runs worker and TCP-loop threads until its C++ object is freed. Left
    to interpreter exit (unreachable cycles are never collected there), they still run while
    the process destroys its statics, which aborted ranks at random (SIGABRT, "Fatal Python
    error: Aborted") after a clean run. So: collect the cycles that reference tensors and
    groups, destroy the groups — through DeepSpeed when it registered them, so that its group
    registry lets go of them too — and collect again, which frees the groups and joins their
    threads while the interpreter is whole (tests/training/test_teardown.py counts them).
    """
    global _INFO, _HOST_GROUP
    _HOST_GROUP = None
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        deepspeed_comm: Any = sys.modules.get("deepspeed.comm.comm")  # its ``cdb`` global
        if deepspeed_comm is not None and deepspeed_comm.cdb is not None:
            deepspeed_comm.destroy_process_group()
            deepspeed_comm.cdb = None  # its backend object still holds the world group
        else:
            dist.destroy_process_group()
    _INFO = None
    gc.collect()


EXIT_REPORT_ENV = "JICD_EXIT_REPORT_DIR"


def report_clean_exit(step: int) -> None:
    """Tell the launcher that this worker ended cleanly at ``step`` (its checkpoint written).

    ``launch/train_multinode.sh`` sets ``$JICD_EXIT_REPORT_DIR``: after a stop signal, torchrun
    itself exits non-zero even when its workers stopped cleanly, so the launcher counts these
    reports (one per local rank) instead. Nothing happens without the variable.
    """
    folder = os.environ.get(EXIT_REPORT_ENV)
    if not folder:
        return
    path = Path(folder) / f"worker-{get_local_rank()}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"step": step, "rank": int(os.environ.get("RANK", "0"))}))
    os.replace(partial, path)  # the launcher counts only complete reports


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
    requested = requested_device()
    count = torch.cuda.device_count() if requested != "cpu" else 0
    return choose_device(requested, get_local_rank(), local_world_size(), count)


def _warn_about_unused_gpus(requested: str, chosen: torch.device, cuda_count: int) -> None:
    """Say at start when a node has GPUs that this run will not use (only local rank 0)."""
    if chosen.type != "cpu" or requested == "cpu" or get_local_rank() != 0:
        return
    if cuda_count:
        log.warning(
            "%d process(es) on this node but %d GPU(s): running on the CPU (gloo); start one "
            "process per GPU, or set train.device=cpu (or %s=cpu) to silence this",
            local_world_size(), cuda_count, DEVICE_ENV,
        )  # fmt: skip
    elif (message := unusable_gpu_message()) is not None:
        log.warning("%s; running on the CPU (gloo)", message)


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


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks, on ``values``' device, never read back (no host sync:
    the trainer's per-step flags stay on the GPU)."""
    out = values.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


_HOST_GROUP: dist.ProcessGroup | None = None


def host_group() -> dist.ProcessGroup | None:
    """A gloo group over all ranks for flags that live on the host (None: the default group
    is gloo already). Host values sent through NCCL would cost a GPU round trip each."""
    global _HOST_GROUP
    if dist.get_backend() == "gloo":
        return None
    if _HOST_GROUP is None:
        # every rank is in a group over all ranks: never ``GroupMember.NON_GROUP_MEMBER``
        _HOST_GROUP = cast(dist.ProcessGroup, dist.new_group(backend="gloo"))
    return _HOST_GROUP


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each host flag, whether it is true on at least one rank (one all-reduce, on the
    host: no GPU involved). The trainer drops a batch with an undecodable sample this way."""
    values = torch.tensor([float(flag) for flag in flags])
    if get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=host_group())
    return tuple(v > 0 for v in values.tolist())


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
