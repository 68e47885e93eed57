"""``engine.precision: bf16-autocast`` really runs the transforms in bf16, on both engines.

A forward hook on the first ``g_a`` convolution records its output dtype; the entropy models and
the training quantisation must still see and return fp32. Under CPU autocast here (bf16 exists
on the CPU too); ``make gpu-check`` repeats it on CUDA. The defect that was fixed (DeepSpeed's
forward enters ``torch.autocast(enabled=False)`` when its own ``torch_autocast`` section is off)
only shows on CUDA: DeepSpeed tests ``torch.is_autocast_enabled()``, which asks about CUDA
autocast, so on the CPU an outer context happens to survive. The DeepSpeed test below therefore
opens no outer context: bf16 must come from DeepSpeed's own section.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jicd import devices
from jicd import distributed as D
from jicd.models import build_model
from trainer.engine import EngineConfig, autocast_context, build_engine
from trainer.optim import OptimConfig, build_optimizer


@pytest.fixture(scope="module")
def one_rank_group():
    """One group for the module: DeepSpeed caches the first group it sees (a second
    ``init_process_group`` in the same process leaves it pointing at a destroyed one)."""
    with pytest.MonkeyPatch.context() as patch:
        for var in D.TORCHRUN_VARS:
            patch.delenv(var, raising=False)
        patch.setenv(devices.DEVICE_ENV, "cpu")
        info = D.init_distributed(timeout_s=60)
        yield info
        D.cleanup()


def probe_first_conv(module: nn.Module, seen: dict[str, torch.dtype], key: str) -> None:
    """Record the output dtype of the first convolution of ``module`` under ``seen[key]``."""

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        seen.setdefault(key, output.dtype)

    next(m for m in module.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(hook)


def traced_step(engine_cfg: EngineConfig) -> dict[str, torch.dtype]:
    """One forward + step with dtype probes; returns what each probe saw."""
    torch.manual_seed(0)
    model = build_model("jicd", 1, channels=16)
    seen: dict[str, torch.dtype] = {}
    probe_first_conv(model.ga0, seen, "g_a conv output")
    engine = build_engine(model, build_optimizer(model, OptimConfig()), engine_cfg, 1.0, 2)
    conditional = engine.module.gaussian_conditional
    quantize = conditional.quantize  # already wrapped by build_engine for bf16

    def probe_quantize(inputs, *args, **kwargs):
        seen.setdefault("quantize input", inputs.dtype)
        out = quantize(inputs, *args, **kwargs)
        seen.setdefault("quantize output", out.dtype)
        return out

    conditional.quantize = probe_quantize
    x = torch.rand(2, 3, 64, 64)
    with autocast_context(engine_cfg, x.device):  # the loop's context: a no-op for DeepSpeed
        out = engine.forward(x, x, x)
    seen["y likelihoods"] = out["likelihoods"]["y"].dtype
    seen["z likelihoods"] = out["likelihoods"]["z"].dtype
    loss = out["x_hat"].float().mean() - out["likelihoods"]["y"].float().log().mean()
    norm = engine.step(loss, torch.zeros(()))  # the backward works in mixed precision
    assert torch.isfinite(norm)
    return seen


def check_bf16_transforms_fp32_entropy(seen: dict[str, torch.dtype]) -> None:
    assert seen["g_a conv output"] == torch.bfloat16, seen
    assert seen["quantize input"] == torch.bfloat16, seen  # y comes out of bf16 convolutions
    assert seen["quantize output"] == torch.float32, seen  # noise added to fp32 y
    assert seen["y likelihoods"] == torch.float32 and seen["z likelihoods"] == torch.float32


def test_ddp_bf16_autocast_runs_transforms_in_bf16(one_rank_group) -> None:
    seen = traced_step(EngineConfig(kind="ddp", precision="bf16-autocast"))
    check_bf16_transforms_fp32_entropy(seen)


def test_fp32_stays_fp32(one_rank_group) -> None:
    seen = traced_step(EngineConfig(kind="ddp", precision="fp32"))
    assert set(seen.values()) == {torch.float32}, seen


@pytest.mark.slow
def test_deepspeed_bf16_autocast_runs_transforms_in_bf16(one_rank_group) -> None:
    seen = traced_step(EngineConfig(kind="deepspeed", precision="bf16-autocast"))
    check_bf16_transforms_fp32_entropy(seen)
