"""The batch contract every loader of :mod:`data_pipeline.loaders` keeps, and its state check.

Batch contract of every training loader (both backends), typed as :class:`TrainBatch`::

    {"clean": (B, 3, P, P) float32 in [0, 1] on device,      # random crop = target
     "augmented": (B, 3, P, P) float32 in [0, 1] on device,  # flip + colour jitter + RRC of clean
     "noisy": (B, 3, P, P) float32 in [0, 1] on device,      # paired shards only: the same crop
                                                             # window of the real noisy image
     "keys": list[str],
     "bad_samples": list[BadSample]}                         # usually empty

an infinite iterable with ``state_dict()`` / ``load_state_dict()`` for an exact resume,
``exclude(keys)``, and the same number of full batches per epoch on every rank. A batch with
``bad_samples`` (undecodable samples, :mod:`data_pipeline.undecodable`) must not be trained on:
the caller drops it on *every* rank (one flag all-reduced), merges the reports of all ranks and
calls ``exclude`` with the same keys everywhere, which keeps the per-rank batch counts equal.

Validation loaders are finite and yield :class:`ValBatch`: ``{"clean", "keys", "index":
LongTensor (B,)}`` (and ``noisy`` for paired shards)
(``index`` = position in the val split; rank r gets positions r, r + W, ...); undecodable
samples are left out of their batch and collected in ``loader.bad_samples``. Noise is added by
the trainer (:mod:`jicd.noise`).

**Another world size.** A state saved with W ranks loads into W' ranks: the run continues at
the same epoch and the same fraction of it. With the torch backend and an unchanged global
batch this is the very same global batches (same samples, same crops), only split differently
among the ranks; with DALI the rest of that epoch is a seeded random subset of the same size
(DALI does not say which samples its shuffle buffer has served), after which full epochs
follow (:mod:`data_pipeline.dali_loader`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

import torch
from torch import Tensor
from typing_extensions import NotRequired  # typing.NotRequired from Python 3.11 on

from data_pipeline.undecodable import BadSample
from jicd.errors import UserError


class TrainBatch(TypedDict):
    """One training batch of one rank (shapes: B = per-rank batch, P = patch size)."""

    clean: Tensor
    """(B, 3, P, P) float32 in [0, 1] on the loader's device: the random crop, the target."""
    augmented: Tensor
    """(B, 3, P, P) float32 in [0, 1]: flip + colour jitter + RRC of ``clean`` (positive view)."""
    noisy: NotRequired[Tensor]
    """(B, 3, P, P) float32 in [0, 1], paired shards only: the same crop of the real noisy image."""
    keys: list[str]
    """Sample keys, one per image."""
    bad_samples: list[BadSample]
    """Undecodable samples met for this batch (usually empty; then the batch is not trained on)."""


class ValBatch(TypedDict):
    """One validation batch (center crops; undecodable samples are left out of it)."""

    clean: Tensor
    """(B, 3, P, P) float32 in [0, 1] on the loader's device."""
    noisy: NotRequired[Tensor]
    """(B, 3, P, P), paired shards only."""
    keys: list[str]
    index: Tensor
    """(B,) int64: positions in the validation split (rank r gets r, r + W, ...)."""


class TrainLoader(Protocol):
    """What the trainer needs of a training loader (:class:`~data_pipeline.torch_loader.
    TorchTrainLoader`, :class:`~data_pipeline.dali_loader.DaliTrainLoader`): an infinite
    iterator of :class:`TrainBatch` that resumes exactly and can drop samples."""

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over all ranks."""
        ...

    @property
    def batches_per_epoch(self) -> int:
        """Full batches of the current epoch (identical on every rank)."""
        ...

    def __iter__(self) -> Iterator[TrainBatch]: ...

    def __next__(self) -> TrainBatch: ...

    def exclude(self, keys: Iterable[str]) -> None:
        """Never read these samples again (called with the same keys on every rank)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Stop worker processes / pipelines (the next batch would start new ones)."""
        ...


@dataclass(frozen=True)
class LoaderPlace:
    """Where a loader runs, the same for every loader of a rank.

    Attributes:
        rank: global rank (selects this rank's part of every epoch).
        world_size: number of ranks.
        device: where batches are delivered (``cuda:<local rank>`` or ``cpu``).
        excluded: keys of samples never to read (the run's known undecodable ones).
    """

    rank: int
    world_size: int
    device: torch.device
    excluded: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls, rank: int, world_size: int, device: torch.device | str, excluded: Iterable[str] = ()
    ) -> LoaderPlace:
        return cls(rank, world_size, torch.device(device), frozenset(excluded))


def check_loader_state(state: dict[str, Any], backend: str, rank: int, world_size: int) -> bool:
    """Refuse a loader state of another backend, or of another rank at the same world size.

    Returns:
        True when the state was saved with another world size (the loader then continues from
        the saved epoch and fraction instead of restoring exactly).
    """
    if state.get("backend") != backend:
        raise UserError(f"loader state is for backend {state.get('backend')!r}, not {backend!r}")
    if state.get("world_size") == world_size and state.get("rank") != rank:
        raise UserError(
            f"loader state is for rank {state.get('rank')} of {world_size}, not rank {rank}"
        )
    return state.get("world_size") != world_size
