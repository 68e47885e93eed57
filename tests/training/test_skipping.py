"""The loss cap and the skipped-streak stop (``trainer.skipping``), decided on combined flags."""

from __future__ import annotations

import pytest
import torch

from jicd.errors import UserError
from trainer.config import load_config, resolve_config
from trainer.skipping import StepGuard


def decide(guard: StepGuard, nonfinite: bool, above_cap: bool) -> bool:
    """One decision from host flags (the trainer passes all-reduced device flags)."""
    return bool(guard.decide(torch.tensor([float(nonfinite), float(above_cap)])))


def test_a_cap_armed_from_the_start_skips_every_step_above_it() -> None:
    guard = StepGuard(cap=100.0, cap_from="start", max_in_a_row=0)
    assert [decide(guard, False, above) for above in (True, True, False)] == [1, 1, 0]
    assert guard.skipped == 2 and guard.counters().in_a_row == 0


def test_from_scratch_the_cap_applies_once_the_loss_was_below_it() -> None:
    guard = StepGuard(cap=100.0, cap_from="first_below", max_in_a_row=0)
    armed = []
    skips = []
    for above in (True, True, False, True):
        skips.append(decide(guard, False, above))
        armed.append(guard.counters().armed)
    assert skips == [False, False, False, True]
    assert armed == [False, False, True, True]


def test_a_non_finite_loss_is_skipped_and_never_arms_the_cap() -> None:
    guard = StepGuard(cap=100.0, cap_from="first_below", max_in_a_row=0)
    assert decide(guard, nonfinite=True, above_cap=False)
    assert not guard.counters().armed


def test_a_streak_of_skips_stops_with_one_line_naming_loss_and_cap() -> None:
    guard = StepGuard(cap=100.0, cap_from="start", max_in_a_row=3)
    for _ in range(2):
        decide(guard, False, True)
        guard.check_progress(131.5)  # 1, 2 in a row: go on
    decide(guard, False, True)
    with pytest.raises(UserError) as stop:
        guard.check_progress(131.5)
    message = str(stop.value)
    assert "\n" not in message and "3 steps in a row" in message
    assert "131.5" in message and "train.loss_cap=100" in message and "train.init_from" in message


def test_a_streak_of_non_finite_losses_says_so() -> None:
    guard = StepGuard(cap=100.0, cap_from="start", max_in_a_row=1)
    decide(guard, nonfinite=True, above_cap=False)
    with pytest.raises(UserError, match="not finite.*optim.lr"):
        guard.check_progress(float("nan"))


def test_state_round_trips_and_old_checkpoints_keep_the_cap_armed() -> None:
    guard = StepGuard(cap=100.0, cap_from="first_below", max_in_a_row=5)
    decide(guard, False, True)
    other = StepGuard(cap=100.0, cap_from="first_below", max_in_a_row=5)
    other.load_state_dict(guard.state_dict())
    assert other.state_dict() == guard.state_dict() == {"skipped": 0, "in_a_row": 0, "armed": False}
    old = StepGuard(cap=100.0, cap_from="first_below", max_in_a_row=5)
    old.load_state_dict({"step": 7, "skipped": 2})  # a trainer.pt from before the guard
    assert old.counters().armed and old.skipped == 2


@pytest.mark.parametrize(
    ("init_from", "expected"), [(None, "first_below"), ("none", "first_below"), ("w.pt", "start")]
)
def test_the_cap_applies_from_the_start_only_when_fine_tuning(init_from, expected) -> None:
    overrides = [] if init_from is None else [f"train.init_from={init_from}"]
    cfg = resolve_config(load_config(None, overrides), world_size=1)
    assert cfg.train.loss_cap_from == expected
