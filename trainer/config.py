"""The root configuration: one section per component, each owned by that component's module.

    cfg = load_config("configs/q3.yaml", ["model.quality=3", "optim.lr=2e-4"])

Sections are handed out separately (``cfg.model`` to the model builder, ``cfg.data`` to the
loaders, …) so no component sees the whole tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.config import DataConfig
from data_pipeline.noise import NoiseConfig
from trainer.checkpoint import CheckpointConfig
from trainer.configuration import (
    ConfigError,
    deep_merge,
    from_dict,
    parse_overrides,
    read_yaml,
    to_yaml,
)
from trainer.engine import EngineConfig
from trainer.loop import TrainConfig
from trainer.losses import LossConfig
from trainer.metrics import LoggingConfig
from trainer.models import ModelConfig
from trainer.optim import OptimConfig

__all__ = ["Config", "ConfigError", "load_config", "to_yaml"]


@dataclass
class Config:
    """Everything a training run needs; YAML files and ``a.b=c`` overrides fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Defaults < YAML file < dotted overrides, strictly typed.

    Raises:
        ConfigError: unknown key, wrong type or invalid value (the message names the key).
    """
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    return from_dict(Config, data)
