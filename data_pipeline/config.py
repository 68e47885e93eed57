"""Data section of the training config and the two loader factories.

Batch contract of every training loader (both backends)::

    {"clean": (B, 3, P, P) float32 in [0, 1] on device,      # random crop = target
     "augmented": (B, 3, P, P) float32 in [0, 1] on device,  # flip + colour jitter + RRC of clean
     "keys": list[str]}

an infinite iterable with ``state_dict()`` / ``load_state_dict()`` for an exact resume, and the
same number of full batches per epoch on every rank. Validation loaders are finite and yield
``{"clean", "keys", "index": LongTensor (B,)}`` (``index`` = position in the val split; rank r gets
positions r, r + W, ...). Noise is added by the trainer (:mod:`data_pipeline.noise`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import torch

BACKENDS = ("auto", "dali", "torch")


@dataclass
class AugmentConfig:
    """The positive view of the contrastive loss (torchvision semantics)."""

    flip_probability: float = 0.5
    """Probability of a horizontal flip."""
    brightness: float = 0.8
    """Brightness factor drawn from [1 - b, 1 + b]."""
    contrast: float = 0.8
    """Contrast factor drawn from [1 - c, 1 + c]."""
    saturation: float = 0.8
    """Saturation factor drawn from [1 - s, 1 + s]."""
    hue: float = 0.2
    """Hue shift drawn from [-h, h] turns (DALI gets degrees: 360 h)."""
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Random resized crop: area fraction range of the clean patch."""
    crop_ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    """Random resized crop: aspect ratio range."""


@dataclass
class DataConfig:
    """Where the shards are and how batches are made."""

    shards: str = ""
    """Folder written by ``jicd prepare-shards`` (holds manifest.json)."""
    backend: str = "auto"
    """"dali", "torch", or "auto" (DALI when importable, else torch)."""
    patch_size: int = 256
    """Side P of the square training / validation crops."""
    batch_size_per_gpu: int = 16
    """Training images per rank and step."""
    val_batch_size: int = 8
    """Validation images per rank and step."""
    num_threads: int = 4
    """DALI CPU threads per rank."""
    prefetch: int = 2
    """Batches prepared ahead (DALI queue depth, torch prefetch_factor)."""
    num_workers: int = 2
    """Torch backend: DataLoader worker processes per rank (0 = in the main process)."""
    shuffle_buffer: int = 1024
    """DALI backend: reader shuffle buffer (samples)."""
    seed: int = 0
    """Base seed; each rank uses seed + global rank."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Positive-view augmentation."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"data.backend: unknown backend {self.backend!r}; choose one of {BACKENDS}"
            )
        if min(self.patch_size, self.batch_size_per_gpu, self.val_batch_size) < 1:
            raise ValueError("data.patch_size and the batch sizes must be >= 1")


def resolve_backend(backend: str) -> str:
    """ "auto" -> "dali" when ``nvidia.dali`` is importable, else "torch"."""
    if backend not in BACKENDS:
        raise ValueError(f"data.backend: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    return "dali" if importlib.util.find_spec("nvidia.dali") is not None else "torch"


def build_train_loader(
    cfg: DataConfig, rank: int, world_size: int, device: torch.device | str, seed: int | None = None
) -> Any:
    """Infinite training loader of this rank (see the module docstring for the contract).

    Args:
        cfg: data config.
        rank: global rank (selects this rank's part of every epoch).
        world_size: number of ranks.
        device: where batches are delivered (``cuda:<local rank>`` or ``cpu``).
        seed: base seed (default ``cfg.seed``); the rank's random streams use seed + rank.
    """
    base_seed = cfg.seed if seed is None else seed
    if resolve_backend(cfg.backend) == "dali":
        from data_pipeline.dali_loader import DaliTrainLoader

        return DaliTrainLoader(cfg, rank, world_size, torch.device(device), base_seed)
    from data_pipeline.torch_loader import TorchTrainLoader

    return TorchTrainLoader(cfg, rank, world_size, torch.device(device), base_seed)


def build_val_loader(
    cfg: DataConfig, rank: int, world_size: int, device: torch.device | str
) -> Any:
    """Finite validation loader: center crops, rank r gets val positions r, r + W, ...

    One implementation for both backends (deterministic decoding in PIL): validation is small
    and must give the same pixels whichever training backend is used.
    """
    resolve_backend(cfg.backend)  # reject an unknown backend here too
    from data_pipeline.torch_loader import ValLoader

    return ValLoader(cfg, rank, world_size, torch.device(device))


def check_loader_state(state: dict[str, Any], backend: str, rank: int, world_size: int) -> None:
    """Refuse a loader state saved by another backend, rank or world size."""
    saved = (state.get("backend"), state.get("rank"), state.get("world_size"))
    if saved != (backend, rank, world_size):
        raise ValueError(
            f"loader state is for (backend, rank, world size) {saved}, "
            f"not {(backend, rank, world_size)}"
        )
