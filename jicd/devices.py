"""Which device and backend a rank gets, and why a node's GPUs may be unusable.

Pure decisions from (request, local rank, local world size, GPU count), so the mapping is tested
without GPUs; :mod:`jicd.distributed` applies them when it creates the process group.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import torch

from jicd.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_ENV = "JICD_DEVICE"


def requested_device(configured: str = "auto") -> str:
    """The device request in force: ``configured`` unless it is "auto", then ``$JICD_DEVICE``.

    Raises:
        UserError: a value other than auto, cpu or cuda (naming where it came from).
    """
    source, value = "device", configured
    if configured == "auto" and os.environ.get(DEVICE_ENV):
        source, value = DEVICE_ENV, os.environ[DEVICE_ENV]
    if value not in DEVICE_CHOICES:
        raise UserError(f"{source}={value!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    return value


def choose_device(
    requested: str, local_rank: int, local_world_size: int, cuda_count: int
) -> torch.device:
    """This rank's device (a pure function, so the mapping is testable without GPUs).

    ``cpu``: always the CPU. ``cuda``: ``cuda:<local_rank>``, refused unless every local rank
    gets its own GPU. ``auto``: the same GPU mapping when there are enough GPUs for all local
    ranks, else the CPU for every rank of the node (one backend for the whole group: NCCL
    cannot mix with CPU ranks, and two ranks on one GPU is not a configuration we train).

    Args:
        requested: "auto", "cpu" or "cuda".
        local_rank: rank within the node.
        local_world_size: processes on this node.
        cuda_count: GPUs visible to torch on this node.

    Raises:
        UserError: ``cuda`` requested with fewer GPUs than local ranks.
    """
    if requested not in DEVICE_CHOICES:
        raise UserError(f"device={requested!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    enough = cuda_count > 0 and local_world_size <= cuda_count and local_rank < cuda_count
    if requested == "cuda" and not enough:
        why = unusable_gpu_message() if cuda_count == 0 else None
        raise UserError(
            f"device=cuda but this node runs {local_world_size} process(es) and torch sees "
            f"{cuda_count} GPU(s): start at most {cuda_count} per node, or use device=cpu"
            + (f" ({why})" if why else "")
        )
    if requested == "cpu" or not enough:
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def nvidia_smi_gpus() -> list[str]:
    """``nvidia-smi -L`` lines ("GPU 0: …"), or [] without a driver tool."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in done.stdout.splitlines() if line.startswith("GPU")]


def unusable_gpu_message() -> str | None:
    """Why torch cannot use the GPUs that ``nvidia-smi`` lists; None when there is no mismatch.

    The usual cause is a driver older than the CUDA of the torch wheel (torch 2.14.1+cu130 needs
    a driver for CUDA 13.0, i.e. >= 580); without this message such a node would silently train
    on the CPU with gloo.
    """
    if torch.cuda.device_count() > 0:
        return None
    listed = nvidia_smi_gpus()
    if not listed:
        return None
    try:
        torch.cuda.init()
        reason = "torch.cuda.device_count() is 0"
    except Exception as exc:  # noqa: BLE001 - the driver's own words are the message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"nvidia-smi lists {len(listed)} GPU(s) but torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}) cannot use them: {reason}; this torch build needs an NVIDIA "
        f"driver that supports CUDA {torch.version.cuda}"
    )
