"""Loading a run folder's checkpoint files as plain data: a resume never runs foreign code.

A training run resumes from whatever lies in its ``train.run_dir``, and ``checksums.json`` only
proves that the files are the ones it lists, not who wrote them: anyone who can write the run
folder can rewrite both. Every checkpoint file is therefore unpickled with
``torch.load(weights_only=True)`` (:func:`jicd.files.torch_load_plain`), which builds tensors,
containers, numbers and strings and refuses any other class or function, plus the few plain
types our checkpoints hold (:func:`plain_globals`): NumPy arrays (the NumPy RNG state), and
the records DeepSpeed's ZeRO optimizer files hold (its stage enum, loss-scaler settings and
fragment addresses: attribute bags, no code).

DeepSpeed's own engine loads its model and optimizer files with ``weights_only=False``; its
``checkpoint_engine`` is the supported hook, so :class:`PlainCheckpointEngine` (the torch engine
with a plain-data ``load``) replaces it (:func:`install`). Its conversion to another number of
ranks (``ds_to_universal``) has no such hook, so :func:`check_plain_files` vets every file of the
checkpoint before the conversion reads it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jicd.files import torch_load_plain


def _plain_globals() -> list:
    """Classes that rebuild plain data only: NumPy arrays and dtypes, DeepSpeed's records."""
    # _reconstruct: how pickled arrays rebuild themselves (private, so absent from the stubs)
    names = [np.core.multiarray._reconstruct, np.ndarray, np.dtype]  # type: ignore[attr-defined]
    names += [type(np.dtype(t)) for t in ("uint32", "float64", "int64")]
    with contextlib.suppress(ImportError):
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        names += [ZeroStageEnum, LossScaler, fragment_address]
    return names


@contextlib.contextmanager
def plain_globals() -> Iterator[None]:
    """``torch.serialization.safe_globals`` with :func:`_plain_globals`, for this load only."""
    with torch.serialization.safe_globals(_plain_globals()):
        yield


def load_plain(path: str | os.PathLike) -> Any:
    """A checkpoint file's contents, on the CPU, plain data only.

    Raises:
        UserError: one line naming the file when it is not plain data (or not a torch file).
    """
    with plain_globals():
        return torch_load_plain(path, f"checkpoint file {path}")


def check_plain_files(directory: Path) -> None:
    """Refuse a checkpoint folder holding any ``.pt`` file that is not plain data."""
    for path in sorted(directory.rglob("*.pt")):
        load_plain(path)


def install(engine: Any) -> None:
    """Make a ``deepspeed.DeepSpeedEngine`` load its checkpoint files as plain data (saving is
    DeepSpeed's torch engine unchanged)."""
    engine.checkpoint_engine = _plain_engine_class()(engine._config)


def _plain_engine_class() -> type:
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class _PlainCheckpointEngine(TorchCheckpointEngine):
        """DeepSpeed's torch checkpoint engine whose ``load`` unpickles plain data only.

        Always onto the CPU (DeepSpeed asks for the CPU, or for "where it was saved"): the
        engine copies weights and optimizer states to their parameters' devices itself.
        """

        def load(self, path: str, map_location=None):
            return load_plain(path)

    return _PlainCheckpointEngine


def __getattr__(name: str) -> Any:
    # DeepSpeed is imported on first use (``jicd train`` checks arguments before heavy imports).
    if name == "PlainCheckpointEngine":
        return _plain_engine_class()
    raise AttributeError(name)
