"""Data-parallel engines: DeepSpeed (default) or plain DistributedDataParallel.

Both expose the same small surface to the training loop: ``forward``, ``step(loss)`` (one backward
of the total loss, gradient clipping, one optimizer step), ``save``/``load`` of model + optimizer,
and ``module`` (the unwrapped model). The LR schedule is stepped by the loop, not by the engine,
so it follows the iteration count even when a step is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from jicd.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    """How the model is wrapped for data-parallel training."""

    kind: Literal["deepspeed", "ddp"] = "deepspeed"
    """``deepspeed`` (ZeRO stage below) or ``ddp`` (torch DistributedDataParallel)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0, 1 or 2 (3 is not supported: CompressAI's update() needs whole
    parameters)."""
    precision: Literal["fp32", "bf16-autocast"] = "fp32"
    """fp32, or bf16 autocast of the transforms with the entropy models kept in fp32."""

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2):
            raise UserError(f"engine.zero_stage must be 0, 1 or 2, got {self.zero_stage}")


def deepspeed_config(batch_per_rank: int, world_size: int, clip: float, stage: int) -> dict:
    """The DeepSpeed JSON, generated so the batch size has one source of truth."""
    return {
        "train_micro_batch_size_per_gpu": batch_per_rank,
        "train_batch_size": batch_per_rank * world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": clip,
        "zero_optimization": {"stage": stage},
        # A client torch.optim.Adam under ZeRO: verified to work (docs/stack.md), but not on
        # DeepSpeed's own list of tested optimizers.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }


class _WrappedModel:
    """What both engines share: the wrapper in ``self.engine``, the model inside it."""

    engine: Any

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def forward(self, *args: Any) -> Any:
        return self.engine(*args)


class DeepSpeedEngine(_WrappedModel):
    """``deepspeed.initialize`` with our client optimizer (two parameter groups)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
        import deepspeed

        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config
        )

    def step(self, loss: torch.Tensor) -> float:
        """Backward, all-reduce, clip and optimizer step; returns the global gradient norm."""
        self.engine.backward(loss)
        norm = None
        if self.engine.zero_optimization_stage() == 0:
            # Without ZeRO, DeepSpeed clips in place but does not record the norm.
            norm = gradient_norm(self.module.parameters())
        self.engine.step()
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save(self, directory: Path, tag: str) -> None:
        """Called on every rank: ZeRO stages write one optimizer partition per rank."""
        self.engine.save_checkpoint(str(directory), tag=tag, save_latest=False)

    def load(self, directory: Path, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {directory / tag}")


class DDPEngine(_WrappedModel):
    """torch ``DistributedDataParallel`` with explicit clipping."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float):
        ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        self.engine = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.optimizer = optimizer
        self.clip = clip

    def step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        limit = self.clip if self.clip > 0 else float("inf")
        norm = nn.utils.clip_grad_norm_(params, limit)
        self.optimizer.step()
        return float(norm)

    def save(self, directory: Path, tag: str) -> None:
        """Every rank holds identical replicas, so only rank 0 writes."""
        import torch.distributed as dist

        if dist.get_rank() == 0:
            target = directory / tag
            target.mkdir(parents=True, exist_ok=True)
            state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}
            torch.save(state, target / "ddp_state.pt")

    def load(self, directory: Path, tag: str) -> None:
        state = torch.load(directory / tag / "ddp_state.pt", map_location=model_device(self.module))
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])


TrainEngine = DeepSpeedEngine | DDPEngine


def gradient_norm(parameters: Any) -> float:
    """Global L2 norm of the (already all-reduced) gradients."""
    grads = [p.grad.detach().double() for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def build_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: EngineConfig,
    clip_grad_norm: float | None,
    batch_per_rank: int,
) -> TrainEngine:
    """Wrap ``model`` (already on its device) and its optimizer for data-parallel training.

    Args:
        model: the model, on this rank's device.
        optimizer: one optimizer with two parameter groups (main, aux); an LR scheduler built on
            it keeps working after wrapping (ZeRO keeps the group dicts).
        cfg: the engine section.
        clip_grad_norm: global gradient-norm limit (None disables clipping).
        batch_per_rank: micro-batch size of one rank.
    """
    import torch.distributed as dist

    clip = clip_grad_norm or 0.0  # 0 = no clipping, for both engines
    if cfg.precision == "bf16-autocast":
        keep_entropy_models_fp32(model)
    if cfg.kind == "deepspeed":
        ds = deepspeed_config(batch_per_rank, dist.get_world_size(), clip, cfg.zero_stage)
        return DeepSpeedEngine(model, optimizer, ds)
    return DDPEngine(model, optimizer, clip)


def autocast_context(cfg: EngineConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass precision context (a no-op for fp32)."""
    if cfg.precision == "bf16-autocast":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_entropy_models_fp32(model: nn.Module) -> None:
    """Run the entropy bottleneck and the Gaussian conditional outside autocast, in fp32.

    bf16 likelihoods shift the rate by ~1.3 % and fp16 turns the 1e-9 likelihood bound into 0
    (docs/stack.md), so only the transforms may run in reduced precision.
    """
    for name in ("entropy_bottleneck", "gaussian_conditional"):
        module = getattr(model, name)
        module.forward = functools.partial(_fp32_forward, module.forward)


def _fp32_forward(forward: Any, *args: Any, **kwargs: Any) -> Any:
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    args = tuple(a.float() if torch.is_tensor(a) else a for a in args)
    with torch.autocast(device_type=device_type, enabled=False):
        return forward(*args, **kwargs)
