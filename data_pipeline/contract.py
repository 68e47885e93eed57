"""The batch contract every loader of :mod:`data_pipeline.loaders` keeps, and its state check.

Batch contract of every training loader (both backends)::

    {"clean": (B, 3, P, P) float32 in [0, 1] on device,      # random crop = target
     "augmented": (B, 3, P, P) float32 in [0, 1] on device,  # flip + colour jitter + RRC of clean
     "keys": list[str]}

an infinite iterable with ``state_dict()`` / ``load_state_dict()`` for an exact resume, and the
same number of full batches per epoch on every rank. Validation loaders are finite and yield
``{"clean", "keys", "index": LongTensor (B,)}`` (``index`` = position in the val split; rank r gets
positions r, r + W, ...). Noise is added by the trainer (:mod:`jicd.noise`).
"""

from __future__ import annotations

from typing import Any

from jicd.errors import UserError


def check_loader_state(state: dict[str, Any], backend: str, rank: int, world_size: int) -> None:
    """Refuse a loader state saved by another backend, rank or world size."""
    saved = (state.get("backend"), state.get("rank"), state.get("world_size"))
    if saved != (backend, rank, world_size):
        raise UserError(
            f"loader state is for (backend, rank, world size) {saved}, "
            f"not {(backend, rank, world_size)}"
        )
