"""One training iteration: noise, the three-branch forward, the loss, the skip decision, the update.

:class:`TrainStep` is the whole of what the GPU does per step, and nothing of what the host does
around it (loading, logging, checkpoints: ``trainer.loop``). With the DDP engine it never waits
for the GPU: the loss terms stay device tensors, the skip and stop flags are all-reduced on the
device and applied there (``trainer.skipping``, ``trainer.engine.apply_update``), so the host can
queue the next step while the GPU runs this one (``tests/training/test_step_sync.py`` runs it
with every device-to-host read patched to raise). The loop reads results at log steps only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from data_pipeline.contract import TrainBatch
from jicd import distributed as D
from jicd.metrics import psnr
from jicd.noise import NoiseConfig, training_noise
from trainer.acceleration import accelerate
from trainer.engine import TrainEngine, autocast_context, build_engine
from trainer.losses import JointLoss
from trainer.optim import build_optimizer, build_scheduler
from trainer.skipping import StepGuard

if TYPE_CHECKING:  # trainer.config imports trainer.engine, as this module does
    from trainer.config import Config


class StopSignal:
    """A stop request (SIGTERM/SIGUSR1) set on the host, read by the device without a sync.

    The signal handler writes into a host tensor (pinned on CUDA); each step copies it to the
    device asynchronously, into the flags that are all-reduced with the loss flags.
    """

    def __init__(self, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.host = torch.zeros(1, pin_memory=pinned)
        self.device = device
        self.received = False

    def set(self) -> None:
        self.received = True
        self.host.fill_(1.0)

    def on_device(self) -> Tensor:
        return self.host.to(self.device, non_blocking=True)


@dataclass
class StepResult:
    """Device tensors of one step (0-dim); read them at log steps only."""

    values: dict[str, Tensor]
    """Loss terms, ``psnr``, ``grad_norm`` (NaN when skipped) and ``skipped`` (0/1)."""
    stop: Tensor
    """> 0 when some rank asked to stop after this step (all-reduced)."""


class TrainStep:
    """Noise → forward → loss → combined flags → update (or not) → LR schedule, on the device.

    Args:
        engine: DDP or DeepSpeed engine around the model and its optimizer.
        criterion: eq. 10 as named terms.
        scheduler: stepped once per iteration, skipped or not.
        guard: the skip/cap state (device tensors).
        noise: the ``noise`` section; ``generator``: the rank's noise generator.
        aux_loss_scale: factor on CompressAI's aux loss in the single backward.
        autocast: the precision context (``trainer.engine.autocast_context``), entered anew
            around every forward.
        inject_nan_at_step: testing aid (``train.inject_nan_at_step``).
    """

    def __init__(
        self,
        engine: TrainEngine,
        criterion: JointLoss,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        guard: StepGuard,
        noise: NoiseConfig,
        generator: torch.Generator,
        aux_loss_scale: float,
        autocast: contextlib.AbstractContextManager,
        inject_nan_at_step: int | None = None,
    ) -> None:
        self.engine, self.criterion, self.scheduler = engine, criterion, scheduler
        self.guard = guard
        self.noise, self.generator, self.aux_loss_scale = noise, generator, aux_loss_scale
        self.autocast, self.inject_nan_at_step = autocast, inject_nan_at_step

    def __call__(self, batch: TrainBatch, step: int, stop: Tensor) -> StepResult:
        """One iteration on this rank's batch; every rank runs every branch and collective.

        Args:
            batch: ``clean``, ``augmented`` ``(B, 3, P, P)`` (and ``noisy`` for paired data).
            step: the iteration index (for ``inject_nan_at_step``).
            stop: ``(1,)`` this rank's stop request on the device (:class:`StopSignal`).
        """
        clean, augmented = batch["clean"], batch["augmented"]
        noisy = training_noise(self.noise, batch, self.generator)
        with self.autocast:
            output = self.engine.forward(noisy, clean, augmented)
        terms = self.criterion(output, clean)
        terms["aux"] = self.engine.module.aux_loss()
        total = terms["loss"] + self.aux_loss_scale * terms["aux"]
        if self.inject_nan_at_step == step and D.get_rank() == D.get_world_size() - 1:
            total = total * float("nan")
        loss = terms["loss"].detach()
        local = torch.cat([(~torch.isfinite(total.detach())).float().view(1),
                           (loss > self.guard.cap).float().view(1), stop.float()])  # fmt: skip
        flags = D.all_reduce_max(local)  # one collective: any rank's flags, never read here
        skip = self.guard.decide(flags[:2])
        grad_norm = self.engine.step(total, skip)
        self.scheduler.step()
        values = {name: value.detach().float() for name, value in terms.items()}
        values["psnr"] = psnr(output["x_hat"].detach(), clean).mean()
        values |= {"grad_norm": grad_norm.float(), "skipped": skip}
        return StepResult(values, flags[2])


def build_train_step(
    model: torch.nn.Module, cfg: Config, device: torch.device, rank: int
) -> TrainStep:
    """The step of a resolved training config for ``model`` (on ``device``, in train mode):
    optimizer and LR schedule, compilation (``engine.compile``), the engine, the step guard and
    this rank's noise generator. Used by the trainer and by ``benchmarks/gpu_step.py``.

    Args:
        cfg: a resolved :class:`trainer.config.Config` (derived values filled in).
    """
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    accelerate(model, cfg.engine, device)
    batch = cfg.data.batch_size_per_gpu
    engine = build_engine(model, optimizer, cfg.engine, cfg.optim.clip_grad_norm, batch)
    train = cfg.train
    assert train.loss_cap is not None and train.loss_cap_from is not None, "resolved config"
    guard = StepGuard(train.loss_cap, train.loss_cap_from, train.max_skipped_in_a_row, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(train.seed * 1_000_003 + rank)
    criterion = JointLoss(cfg.loss, cfg.loss.resolved_lmbda())
    return TrainStep(
        engine, criterion, scheduler, guard, cfg.noise, generator,
        train.aux_loss_scale, autocast_context(cfg.engine, device), train.inject_nan_at_step,
    )  # fmt: skip
