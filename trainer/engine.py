"""Data-parallel engines: DeepSpeed (default) or plain DistributedDataParallel.

Both expose the same small surface to the training loop: ``forward``, ``step(loss, skip)`` (one
backward of the total loss, gradient clipping, one optimizer step unless ``skip``),
``save``/``load`` of model + optimizer, ``close`` and ``module`` (the unwrapped model). The LR
schedule is stepped by the loop, not by the engine, so it follows the iteration count even when
a step is skipped.

The DDP engine applies ``skip`` on the device (fused Adam's ``found_inf``: parameters, moments
and the step count stay as they were) and returns the gradient norm as a device tensor, so its
step never waits for the GPU; DeepSpeed's step synchronises inside DeepSpeed anyway (overflow
checks, norms), so it reads ``skip`` on the host.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from compressai.models import CompressionModel

from jicd.errors import UserError
from jicd.files import torch_save_atomic

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
    compile: Literal["none", "regional", "full"] = "none"
    """``torch.compile``: ``regional`` compiles each transform, denoiser and entropy network
    on its own (short compile, few recompiles), ``full`` the whole training forward
    (``trainer.acceleration``)."""
    compile_backend: Literal["inductor", "aot_eager"] | None = None
    """torch.compile backend; None: ``inductor`` on CUDA (generated Triton kernels),
    ``aot_eager`` on the CPU (graphs traced through dynamo and AOTAutograd, run with the
    eager kernels: same arithmetic; inductor's generated CPU code crashed on this model's
    backward with torch 2.14, segmentation fault within three steps)."""
    tf32: bool = True
    """On CUDA, fp32 matrix products and convolutions on TF32 tensor cores (10-bit mantissa
    inputs, fp32 accumulation); off with ``train.deterministic``."""
    cuda_graphs: bool = False
    """With ``compile: full`` on CUDA: replay the compiled forward and backward as CUDA graphs
    (``mode="reduce-overhead"``; training crops have static shapes)."""

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2):
            raise UserError(f"engine.zero_stage must be 0, 1 or 2, got {self.zero_stage}")
        if self.cuda_graphs and self.compile != "full":
            raise UserError("engine.cuda_graphs=true needs engine.compile=full")


def deepspeed_config(
    batch_per_rank: int, world_size: int, clip: float, stage: int, bf16_autocast: bool = False
) -> dict:
    """The DeepSpeed JSON, generated so the batch size has one source of truth.

    ``bf16_autocast`` turns on DeepSpeed's own ``torch_autocast`` section: its forward enters
    ``torch.autocast(enabled=False)`` whenever that section is off, so an autocast context
    opened around the engine is silently ignored. ``lower_precision_safe_modules: []`` keeps
    every gradient all-reduce in fp32 (DeepSpeed would otherwise reduce the Conv2d/Linear
    gradients in bf16); the master weights and Adam stay fp32 (DeepSpeed's ``bf16`` section,
    which would make them bf16, crashes on GDN layers: docs/stack.md).
    """
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
        "torch_autocast": {
            "enabled": bf16_autocast,
            "dtype": "bfloat16",
            "lower_precision_safe_modules": [],
        },
    }


class _WrappedModel:
    """What both engines share: the wrapper in ``self.engine``, the model inside it."""

    engine: Any

    @property
    def module(self) -> CompressionModel:
        """The model inside the wrapper (a CompressAI model: ``aux_loss``, ``update``, …)."""
        return self.engine.module

    def forward(self, *args: Any) -> Any:
        return self.engine(*args)


class DeepSpeedEngine(_WrappedModel):
    """``deepspeed.initialize`` with our client optimizer (two parameter groups)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
        import deepspeed

        from trainer.safe_load import install

        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config
        )
        install(self.engine)  # its checkpoint files are unpickled as plain data only

    def step(self, loss: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Backward, all-reduce, clip and optimizer step, unless ``skip`` (read on the host:
        DeepSpeed's step synchronises anyway); returns the global gradient norm (NaN when
        skipped or unknown) as a 0-dim tensor."""
        if bool(skip > 0):
            return torch.tensor(float("nan"), device=loss.device)
        self.engine.backward(loss)
        norm = None
        if self.engine.zero_optimization_stage() == 0:
            # Without ZeRO, DeepSpeed clips in place but does not record the norm.
            norm = gradient_norm(self.module.parameters())
        self.engine.step()
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return torch.as_tensor(float("nan") if norm is None else norm, device=loss.device).float()

    def save(self, directory: Path, tag: str) -> None:
        """Called on every rank: ZeRO stages write one optimizer partition per rank.

        A write that fails (ENOSPC) raises between DeepSpeed's tag check and its closing
        barrier, where the other ranks then wait: this rank meets them there before raising, so
        the checkpointer can tell every rank about the failure instead of hanging.
        """
        import torch.distributed as dist

        try:
            self.engine.save_checkpoint(str(directory), tag=tag, save_latest=False)
        except (OSError, RuntimeError):  # torch.save reports a full disk as a RuntimeError
            dist.barrier()
            raise

    def load(self, directory: Path, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {directory / tag}")

    def close(self) -> None:
        """DeepSpeed's own teardown (hooks, optimizer state); the process group stays up."""
        self.engine.destroy()


class DDPEngine(_WrappedModel):
    """torch ``DistributedDataParallel`` with explicit clipping."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float):
        ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        self.engine = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.optimizer = optimizer
        self.clip = clip

    def step(self, loss: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Backward, all-reduce (DDP's hooks), clip and optimizer step; with ``skip`` > 0 the
        update is dropped on the device. Returns the gradient norm (NaN when skipped) as a
        0-dim device tensor: nothing here waits for the GPU.

        Args:
            loss: scalar total loss.
            skip: ``()`` float tensor on the device, 1.0 to drop this step's update.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        limit = self.clip if self.clip > 0 else float("inf")
        norm = nn.utils.clip_grad_norm_(params, limit, foreach=True)
        apply_update(self.optimizer, skip)
        return torch.where(skip > 0, torch.full_like(norm, float("nan")), norm)

    def save(self, directory: Path, tag: str) -> None:
        """Every rank holds identical replicas, so only rank 0 writes."""
        import torch.distributed as dist

        if dist.get_rank() == 0:
            target = directory / tag
            target.mkdir(parents=True, exist_ok=True)
            state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}
            torch_save_atomic(state, target / "ddp_state.pt")

    def load(self, directory: Path, tag: str) -> None:
        # Loaded to the CPU: load_state_dict copies weights and Adam moments to the parameters'
        # device, but leaves Adam's scalar ``step`` tensors where they were loaded; on the GPU
        # each would cost a host sync (``.item()``) per parameter per step.
        from trainer.safe_load import load_plain

        state = load_plain(directory / tag / "ddp_state.pt")
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        """Nothing to release beyond what dropping the wrapper does."""


TrainEngine = DeepSpeedEngine | DDPEngine


def import_engine_library(cfg: EngineConfig) -> None:
    """Import DeepSpeed before the process group exists (``init_distributed(before_group=…)``).

    DeepSpeed's ``TorchBackend.barrier(group=GroupMember.WORLD)`` evaluates its default at import
    time: imported after the group exists, it holds the world group for the life of the process,
    whose gloo threads then still run while the process exits — a rank that finished cleanly
    could die there with SIGABRT. Imported first, the default is None.
    """
    if cfg.kind == "deepspeed":
        import deepspeed.comm  # noqa: F401


def apply_update(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``skip``, decided on the device when the optimizer can.

    torch's fused Adam takes ``found_inf`` (the flag of ``GradScaler``): when it is non-zero
    the kernel leaves parameters, moments and step counts untouched. Other optimizers read the
    flag on the host.
    """
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
        optimizer.grad_scale = None  # type: ignore[attr-defined]
        optimizer.step()
    elif not bool(skip > 0):
        optimizer.step()


def gradient_norm(parameters: Any) -> torch.Tensor:
    """Global L2 norm of the (already all-reduced) gradients, as a 0-dim tensor."""
    grads = [p.grad.detach().double() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))


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
        bf16 = cfg.precision == "bf16-autocast"
        ds = deepspeed_config(batch_per_rank, dist.get_world_size(), clip, cfg.zero_stage, bf16)
        return DeepSpeedEngine(model, optimizer, ds)
    return DDPEngine(model, optimizer, clip)


def autocast_context(cfg: EngineConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The precision context the loop opens around ``engine.forward``.

    DDP: bf16 autocast for ``bf16-autocast``. DeepSpeed: always a no-op, because its engine
    opens (or, when its ``torch_autocast`` section is off, disables) autocast itself.
    """
    if cfg.precision == "bf16-autocast" and cfg.kind == "ddp":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_entropy_models_fp32(model: CompressionModel) -> None:
    """Run the entropy models, and the training quantisation, outside autocast in fp32.

    bf16 likelihoods shift the rate by ~1.3 % and fp16 turns the 1e-9 likelihood bound into 0
    (docs/stack.md), so only the transforms may run in reduced precision. ``quantize`` is called
    directly by the model (not through ``forward``): wrapped too, so the uniform noise is added
    to an fp32 ``y`` (in bf16, with 8 mantissa bits, ``y + u`` is already coarser than the noise
    once |y| > 16). Tensor keyword arguments (``means=``) are cast like positional ones.
    """
    for name in ("entropy_bottleneck", "gaussian_conditional"):
        module = getattr(model, name)
        module.forward = functools.partial(_in_fp32, module.forward)
    conditional = model.gaussian_conditional
    conditional.quantize = functools.partial(_in_fp32, conditional.quantize)


def _in_fp32(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function`` with autocast off and every floating tensor argument cast to fp32."""
    args = tuple(_fp32(a) for a in args)
    kwargs = {key: _fp32(value) for key, value in kwargs.items()}
    tensors = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
    device_type = tensors[0].device.type if tensors else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        return function(*args, **kwargs)


def _fp32(value: Any) -> Any:
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value
