"""Data pipeline of jicd: shard writing and checking, DALI / torch training and validation loaders.

The noise model is not here: it lives in the library (the ``jicd.noise`` package) so that
training, validation, evaluation and the codec CLI share one implementation.

Public API::

    from data_pipeline import DataConfig, build_train_loader, build_val_loader
    from data_pipeline.shards import ShardConfig, prepare_shards
"""

from data_pipeline.data_config import AugmentConfig, DataConfig, resolve_backend
from data_pipeline.loaders import build_train_loader, build_val_loader

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "build_train_loader",
    "build_val_loader",
    "resolve_backend",
]
