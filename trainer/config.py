"""The root configuration: one section per component, each owned by that component's module.

    cfg = load_config("configs/q3.yaml", ["model.quality=3", "optim.lr=2e-4"])

Sections are handed out separately (``cfg.model`` to the model builder, ``cfg.data`` to the
loaders, …) so no component sees the whole tree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from data_pipeline.data_config import DataConfig, loader_parallelism
from jicd import distributed as D
from jicd.errors import UserError
from jicd.models import ModelConfig, lambda_for_quality
from jicd.noise import NoiseConfig
from jicd.typed_config import (
    ConfigError,
    deep_merge,
    from_dict,
    parse_overrides,
    read_recipe,
    read_yaml,
    to_dict,
    to_yaml,
)
from trainer.checkpointer import CheckpointConfig
from trainer.engine import EngineConfig
from trainer.logger import LoggingConfig
from trainer.losses import MS_SSIM_LAMBDAS, LossConfig
from trainer.optim import OptimConfig

__all__ = [
    "Config",
    "ConfigError",
    "TrainConfig",
    "check_resume_compatible",
    "load_config",
    "resolve_config",
    "to_yaml",
]
log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The run: where it lives, how long it trains, what stops or skips a step."""

    run_dir: str = "runs/default"
    """Checkpoints, exports, logs and the resolved config go here; a run restarted with the same
    run_dir resumes from its latest checkpoint."""
    steps: int = 770_000
    """Total optimizer iterations (the paper: 600 epochs of Flickr2W at batch 16 ≈ 770k)."""
    seed: int = 0
    """Base seed; each rank adds its global rank."""
    global_batch_size: int | None = None
    """Images per step over all ranks (the paper: 16); sets ``data.batch_size_per_gpu`` to
    global / world size. None keeps ``data.batch_size_per_gpu`` as given."""
    loss_cap: float | None = None
    """Skip a step whose loss exceeds this (None: 100 for q1–q3, 1000 for q4–q6, as the paper)."""
    loss_cap_from: Literal["start", "first_below"] | None = None
    """When the cap starts to apply: ``start`` (from the first step, the paper's fine-tune from
    pretrained weights) or ``first_below`` (once the loss has first fallen below it on every
    rank: a model trained from scratch starts above the cap, ≈ 130 at N = 128). None: ``start``
    when ``init_from`` names a file, else ``first_below`` (``trainer.skipping``)."""
    max_skipped_in_a_row: int = 100
    """Stop with an error after this many skipped steps in a row: such a run cannot make
    progress (0: never stop)."""
    val_every: int = 5000
    """Steps between validations (0 disables validation)."""
    init_from: str | None = None
    """A checkpoint to fine-tune from, any of the four formats (CompressAI cheng2020-anchor, the
    ECCV'22 baseline's, JICDCLS, a jicd export; optimizer state is not carried over), or
    ``none`` to train from scratch deliberately where ``require_init_from`` is set."""
    require_init_from: bool = False
    """Refuse to start without ``init_from`` (``configs/q*.yaml``: the paper recipe fine-tunes
    from cheng2020-anchor); ``init_from=none`` overrides it."""
    aux_loss_scale: float = 1e-3
    """Factor on CompressAI's aux loss in the single backward. Adam is invariant to a constant
    gradient scale per parameter, so quantile updates are unchanged, but the global-norm clip then
    sees (almost) only the network gradients — as with the paper's separate aux optimizer (the
    unscaled quantile gradient, norm ≈ 2 at N=128, would shrink small network updates)."""
    log_sample_keys: bool = False
    """Write the sample keys each rank consumed to ``<run_dir>/keys/rank{R}.txt`` (for checks)."""
    inject_nan_at_step: int | None = None
    """Testing aid: make the loss of the last rank non-finite at this step."""
    timeout_s: float = 1800.0
    """Collective timeout in seconds (short in tests, so a hang fails fast)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where each rank trains. ``auto``: ``$JICD_DEVICE`` when set, else ``cuda:<local rank>``
    when the node has a GPU for every local rank, else the CPU (gloo) for all of them; ``cuda``
    refuses to start with fewer GPUs than local ranks (``jicd.devices.choose_device``)."""
    deterministic: bool = False
    """Deterministic GPU kernels: ``torch.use_deterministic_algorithms``, cuDNN benchmark off,
    TF32 off, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``; bitwise-repeatable resumes on one GPU type
    and world size, at some speed cost (``trainer.determinism``)."""
    allow_config_change: bool = False
    """Resume even when a key that changes the model or the data stream differs from the run's
    saved ``config.yaml`` (by default such a resume is refused, naming the keys)."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.val_every < 0 or self.max_skipped_in_a_row < 0:
            raise UserError(
                "train.steps, train.val_every and train.max_skipped_in_a_row must be >= 0"
            )

    def init_path(self) -> str | None:
        """The file to fine-tune from; None for no ``init_from`` or ``init_from=none``."""
        if self.init_from is None or self.init_from.strip().lower() == "none":
            return None
        return self.init_from


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
    """Defaults < the YAML file's ``base:`` chain < the YAML file < dotted overrides (strict).

    Raises:
        ConfigError: unknown key, wrong type or invalid value (the message names the key), or a
            bad ``base:`` chain (missing file, cycle).
    """
    data = read_recipe(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    return from_dict(Config, data)


# Keys whose change on resume would silently make a different experiment: the model, the noise,
# the data stream, the objective. Throughput-only data knobs may change freely.
_RESUME_SENSITIVE = ("model.", "noise.", "data.", "loss.", "train.seed", "train.global_batch_size")
_RESUME_FREE = ("data.num_threads", "data.prefetch", "data.num_workers", "data.val_batch_size",
                "data.max_bad_fraction", "data.max_bad_in_a_row")  # fmt: skip


def default_loss_cap(quality: int) -> float:
    """The paper's skip threshold: 100 for q1–q3, 1000 for q4–q6."""
    return 100.0 if quality <= 3 else 1000.0


def resolve_config(cfg: Config, world_size: int) -> Config:
    """Fill in every derived value, so the dumped config is exactly the one that runs.

    * ``data.batch_size_per_gpu`` = ``train.global_batch_size`` / world size (NT-Xent needs
      equal batches on every rank);
    * ``loss.lmbda`` = the quality's λ_d when unset; ``train.loss_cap`` = the paper's cap,
      applied from the start when fine-tuning, from the first step below it when not;
    * ``data.seed`` = ``train.seed`` when unset;
    * ``loss.normalize`` = true for the paper's head, false for the authors'.

    Raises:
        UserError: the global batch is not divisible by the world size, a recipe that
            fine-tunes has no ``train.init_from``, or the authors' head has other patches.
    """
    total = cfg.train.global_batch_size
    if total is not None:
        if total % world_size:
            raise UserError(
                f"train.global_batch_size={total} is not divisible by the world size {world_size}"
            )
        cfg.data.batch_size_per_gpu = total // world_size
    if cfg.loss.lmbda is None:
        cfg.loss.lmbda = (
            MS_SSIM_LAMBDAS[cfg.model.quality]
            if cfg.loss.distortion == "ms-ssim"
            else lambda_for_quality(cfg.model.quality)
        )
    if cfg.train.loss_cap is None:
        cfg.train.loss_cap = default_loss_cap(cfg.model.quality)
    if cfg.train.loss_cap_from is None:
        cfg.train.loss_cap_from = "start" if cfg.train.init_path() else "first_below"
    if cfg.data.seed is None:
        cfg.data.seed = cfg.train.seed
    resolve_loader_parallelism(cfg.data)
    check_init_from(cfg)
    resolve_contrastive(cfg)
    return cfg


def resolve_loader_parallelism(data: DataConfig) -> None:
    """Size unset ``data.num_workers`` / ``data.num_threads`` from this rank's cores, and say so
    (a starved GPU is otherwise invisible until the data-wait fraction is read)."""
    if data.num_workers is not None and data.num_threads is not None:
        return
    cores = D.cpus_per_local_rank()
    chosen = loader_parallelism(cores)
    data.num_workers = chosen if data.num_workers is None else data.num_workers
    data.num_threads = chosen if data.num_threads is None else data.num_threads
    log.info(
        "data loading: %d core(s) for this rank -> data.num_workers=%d (torch), "
        "data.num_threads=%d (DALI); set them to override",
        cores, data.num_workers, data.num_threads,
    )  # fmt: skip


def check_init_from(cfg: Config) -> None:
    """A recipe that fine-tunes (``train.require_init_from``) needs ``train.init_from``."""
    if cfg.train.require_init_from and cfg.train.init_from is None:
        raise UserError(
            "this recipe fine-tunes from CompressAI's pretrained cheng2020-anchor "
            f"(train.require_init_from=true): pass train.init_from=FILE (e.g. the zoo file "
            f"cheng2020-anchor-{cfg.model.quality}, or an ECCV'22 baseline / JICDCLS / jicd "
            "checkpoint), or train.init_from=none to train from scratch deliberately"
        )


def resolve_contrastive(cfg: Config) -> None:
    """``loss.normalize`` from the head; the authors' head only on 256-pixel patches."""
    authors = cfg.model.head == "authors"
    if cfg.loss.normalize is None:
        cfg.loss.normalize = not authors
    if authors and cfg.model.flags()["contrastive"] and cfg.data.patch_size != 256:
        raise UserError(
            f"model.head=authors works on 256-pixel patches only (Linear(64, ·) on the ga0 "
            f"width), got data.patch_size={cfg.data.patch_size}; use model.head=paper"
        )


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def changed_keys(saved: dict, current: Config) -> list[str]:
    """Keys that change the model or the data stream and differ between two resolved configs."""
    old, new = flatten(saved), flatten(to_dict(current))
    if current.train.global_batch_size is not None:
        # The per-rank batch follows the world size, which may change on resume; the global
        # batch (compared below) is what defines the run.
        old.pop("data.batch_size_per_gpu", None)
        new.pop("data.batch_size_per_gpu", None)
    # A key the saved config lacks was added to jicd after the run started: there is nothing to
    # compare it with, and refusing would strand every run directory older than the key.
    keys = sorted(set(old) & set(new) | (set(old) - set(new)))
    return [
        k
        for k in keys
        if k.startswith(_RESUME_SENSITIVE)
        and not k.startswith(_RESUME_FREE)
        and old.get(k) != new.get(k)
    ]


def check_resume_compatible(saved_path: Path, current: Config) -> list[str]:
    """Refuse a resume whose resolved config changes the experiment (unless allowed).

    Returns:
        The changed keys (empty when compatible; non-empty only with
        ``train.allow_config_change=true``).

    Raises:
        ConfigError: one line naming the changed keys, with saved and new values.
    """
    saved = read_yaml(saved_path)
    changed = changed_keys(saved, current)
    if changed and not current.train.allow_config_change:
        old, new = flatten(saved), flatten(to_dict(current))
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"resuming {saved_path.parent} with a different config ({detail}); use a new "
            "train.run_dir, or train.allow_config_change=true to continue anyway"
        )
    return changed
