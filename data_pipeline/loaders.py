"""The two loader factories: training (DALI or torch backend) and validation.

Both return loaders that keep the batch contract of :mod:`data_pipeline.contract`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from data_pipeline.contract import LoaderPlace, TrainLoader
from data_pipeline.data_config import DataConfig, resolve_backend

if TYPE_CHECKING:  # the loaders import torchvision / DALI: only when one is built
    from data_pipeline.val_loader import ValLoader

Device = torch.device | str
Keys = Iterable[str]


def build_train_loader(
    cfg: DataConfig, rank: int, world_size: int, device: Device, excluded: Keys = ()
) -> TrainLoader:
    """Infinite training loader of this rank (see the module docstring for the contract).

    Args:
        cfg: data config.
        rank: global rank (selects this rank's part of every epoch).
        world_size: number of ranks.
        device: where batches are delivered (``cuda:<local rank>`` or ``cpu``).
        excluded: keys of training samples never to read (the run's known undecodable ones).
    """
    place = LoaderPlace.of(rank, world_size, device, excluded)
    base_seed = 0 if cfg.seed is None else cfg.seed
    if resolve_backend(cfg.backend) == "dali":
        from data_pipeline.dali_loader import DaliTrainLoader

        return DaliTrainLoader(cfg, place, base_seed)
    from data_pipeline.torch_loader import TorchTrainLoader

    return TorchTrainLoader(cfg, place, base_seed)


def build_val_loader(
    cfg: DataConfig, rank: int, world_size: int, device: Device, excluded: Keys = ()
) -> ValLoader:
    """Finite validation loader: center crops, rank r gets val positions r, r + W, ...

    Arguments as for :func:`build_train_loader`.
    One implementation for both backends (deterministic decoding in PIL): validation is small
    and must give the same pixels whichever training backend is used.
    """
    resolve_backend(cfg.backend)  # reject an unknown backend here too
    from data_pipeline.val_loader import ValLoader

    return ValLoader(cfg, LoaderPlace.of(rank, world_size, device, excluded))
