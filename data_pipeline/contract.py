"""The batch contract every loader of :mod:`data_pipeline.loaders` keeps, and its state check.

Batch contract of every training loader (both backends)::

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

Validation loaders are finite and yield ``{"clean", "keys", "index": LongTensor (B,)}`` (and
``noisy`` for paired shards)
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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from jicd.errors import UserError


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
