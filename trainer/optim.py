"""One Adam with two parameter groups (network, entropy-bottleneck quantiles) and the LR schedule.

A single optimizer and a single backward of ``loss + aux_loss`` is what keeps data-parallel ranks
in sync (CompressAI's two-optimizer example loop diverges under DDP, see docs/stack.md). The aux
loss touches only ``*.quantiles`` and the rate loss never does, so the groups are disjoint.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from torch import nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from jicd.errors import UserError

AUX_SUFFIX = (
    "quantiles"  # EntropyBottleneck.quantiles: the only parameters of CompressAI's aux loss
)


@dataclass
class OptimConfig:
    """The ``optim`` section: Adam, warm-up and step decay (all counted in iterations)."""

    lr: float = 1e-4
    """Learning rate of the network parameters."""
    aux_lr: float = 1e-3
    """Learning rate of the entropy-bottleneck quantiles (constant: no warm-up, no decay)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas."""
    warmup_steps: int = 0
    """Linear warm-up of ``lr`` over this many iterations (0 = none)."""
    milestones: list[int] = field(default_factory=list)
    """Iterations at which ``lr`` is multiplied by ``gamma``."""
    gamma: float = 0.1
    """Decay factor at each milestone."""
    clip_grad_norm: float | None = 1.0
    """Global gradient-norm clip (None = no clipping); applied by the engine."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.aux_lr <= 0:
            raise UserError("optim.lr and optim.aux_lr must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"optim.betas must be two values in [0, 1), got {self.betas}")
        if self.warmup_steps < 0 or any(m < 0 for m in self.milestones):
            raise UserError("optim.warmup_steps and optim.milestones must be >= 0")
        if list(self.milestones) != sorted(self.milestones):
            raise UserError(f"optim.milestones must be increasing, got {self.milestones}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise UserError("optim.clip_grad_norm must be > 0 (or null to disable)")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters split into (main, aux); aux = names ending with ``quantiles``.

    Raises:
        AssertionError: if the groups overlap or miss a trainable parameter.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    main = [p for n, p in named if not n.endswith(AUX_SUFFIX)]
    aux = [p for n, p in named if n.endswith(AUX_SUFFIX)]
    main_ids, aux_ids = {id(p) for p in main}, {id(p) for p in aux}
    assert not main_ids & aux_ids, "a parameter is in both the main and the aux group"
    assert main_ids | aux_ids == {id(p) for _, p in named}, "a trainable parameter has no group"
    return main, aux


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> Adam:
    """One Adam with the groups ``main`` (lr) and ``aux`` (aux_lr), in that order.

    torch's fused implementation (one kernel per group and device, CPU and CUDA): the fastest
    on GPUs, and it can drop a step's update on the device (``found_inf``), which is how the
    trainer skips a step without waiting for the GPU (``trainer.engine.apply_update``).
    """
    main, aux = split_parameters(model)
    groups = [
        {"params": main, "lr": cfg.lr, "name": "main"},
        {"params": aux, "lr": cfg.aux_lr, "name": "aux"},
    ]
    beta1, beta2 = cfg.betas
    return Adam(groups, betas=(beta1, beta2), fused=True)


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Multiplier of ``lr`` at iteration ``step``: linear warm-up, then ×gamma per milestone."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    return warmup * cfg.gamma ** bisect_right(cfg.milestones, step)


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig) -> LambdaLR:
    """LambdaLR stepped once per iteration; the aux group keeps its constant rate.

    The quantile fit does not depend on the rate-distortion trajectory (CompressAI trains it with
    a separate, unscheduled optimizer), so only the ``main`` group is warmed up and decayed.
    """
    factors = [
        (lambda step: lr_factor(step, cfg)) if group.get("name") != "aux" else (lambda step: 1.0)
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lr_lambda=factors)
