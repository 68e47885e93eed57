"""Engine set-up pieces that need no process group: DeepSpeed JSON, precision handling."""

from __future__ import annotations

import pytest
import torch

from jicd.models import build_model
from trainer.config import ConfigError, load_config
from trainer.engine import (
    EngineConfig,
    autocast_context,
    deepspeed_config,
    keep_entropy_models_fp32,
)


def test_deepspeed_json_follows_our_config() -> None:
    ds = deepspeed_config(batch_per_rank=4, world_size=4, clip=1.0, stage=2)
    assert ds["train_batch_size"] == 16 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_clipping"] == 1.0 and ds["zero_optimization"] == {"stage": 2}
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert not ds["torch_autocast"]["enabled"]
    bf16 = deepspeed_config(batch_per_rank=4, world_size=4, clip=1.0, stage=2, bf16_autocast=True)
    # DeepSpeed's own autocast, with every gradient all-reduce kept in fp32
    assert bf16["torch_autocast"] == {
        "enabled": True,
        "dtype": "bfloat16",
        "lower_precision_safe_modules": [],
    }


def test_zero_stage_3_is_rejected() -> None:
    with pytest.raises(ConfigError, match="zero_stage must be 0, 1 or 2"):
        load_config(None, ["engine.zero_stage=3"])


def record_entropy_model_calls(model) -> list[tuple[bool, torch.dtype]]:
    """(autocast enabled?, first input dtype) for every entropy-model call."""
    calls: list[tuple[bool, torch.dtype]] = []
    for name in ("entropy_bottleneck", "gaussian_conditional"):
        module = getattr(model, name)
        original = module.forward

        def traced(*args, _original=original, **kwargs):
            calls.append((torch.is_autocast_enabled("cpu"), args[0].dtype))
            return _original(*args, **kwargs)

        module.forward = traced
    return calls


def test_bf16_autocast_keeps_entropy_models_in_fp32() -> None:
    torch.manual_seed(0)
    cfg = EngineConfig(kind="ddp", precision="bf16-autocast")  # DeepSpeed: its own autocast
    x = torch.rand(1, 3, 64, 64)
    plain = build_model("jicd", 1, channels=16)
    calls = record_entropy_model_calls(plain)
    with autocast_context(cfg, x.device):
        plain(x)
    assert calls and all(enabled for enabled, _ in calls)  # what the option prevents
    assert any(dtype == torch.bfloat16 for _, dtype in calls)

    model = build_model("jicd", 1, channels=16)
    calls = record_entropy_model_calls(model)
    keep_entropy_models_fp32(model)  # wraps the traced forwards: they see its context
    with autocast_context(cfg, x.device):
        out = model(x)
    assert len(calls) == 2
    assert all(not enabled and dtype == torch.float32 for enabled, dtype in calls)
    assert torch.isfinite(out["x_hat"]).all()
