"""Parameter groups (main vs aux quantiles) and the per-iteration LR schedule."""

from __future__ import annotations

import pytest
import torch

from jicd.models import build_model
from trainer.optim import OptimConfig, build_optimizer, build_scheduler, split_parameters


@pytest.fixture(scope="module")
def model():
    return build_model("jicd", 1, channels=16)


def test_groups_are_disjoint_and_complete(model):
    main, aux = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in aux] == ["entropy_bottleneck.quantiles"]
    assert {id(p) for p in main}.isdisjoint({id(p) for p in aux})
    assert len(main) + len(aux) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out(model):
    model.proj.requires_grad_(False)
    try:
        main, _ = split_parameters(model)
        assert not {id(p) for p in model.proj.parameters()} & {id(p) for p in main}
    finally:
        model.proj.requires_grad_(True)


def test_one_adam_with_two_groups(model):
    optimizer = build_optimizer(model, OptimConfig(lr=2e-4, aux_lr=1e-3, betas=[0.8, 0.9]))
    assert isinstance(optimizer, torch.optim.Adam)
    main, aux = optimizer.param_groups
    assert (main["name"], main["lr"], aux["name"], aux["lr"]) == ("main", 2e-4, "aux", 1e-3)
    assert main["betas"] == (0.8, 0.9)


def test_schedule_warmup_then_step_decay(model):
    cfg = OptimConfig(lr=1e-4, aux_lr=1e-3, warmup_steps=4, milestones=[6, 8], gamma=0.1)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    main_lr, aux_lr = [], []
    for _ in range(10):
        main_lr.append(optimizer.param_groups[0]["lr"])
        aux_lr.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.25e-4, 0.5e-4, 0.75e-4, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6]
    assert main_lr == pytest.approx(expected)
    assert aux_lr == pytest.approx([1e-3] * 10)


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"betas": [0.9]},
        {"milestones": [5, 3]},
        {"warmup_steps": -1},
        {"clip_grad_norm": 0.0},
    ],
)
def test_optim_config_validation(bad):
    with pytest.raises(ValueError):
        OptimConfig(**bad)
