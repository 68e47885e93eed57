"""Which steps apply their update: the loss cap, non-finite losses, and the stop on a streak.

The paper skips a step whose loss is non-finite or above a cap (100 for q1–q3, 1000 for q4–q6).
That cap was set for fine-tuning from pretrained weights, whose loss starts far below it; a model
trained from scratch starts above it (≈ 130 at N = 128) and, with the cap applied from the first
step, would skip every step for ever. So the cap is *armed* either from the start
(``train.loss_cap_from=start``, the default when ``train.init_from`` names a file) or once the
loss has first fallen below it on every rank (``first_below``, the default from scratch). Before
it is armed, only non-finite losses skip. A run that skips ``train.max_skipped_in_a_row``
steps in a row cannot make progress and stops with one line saying why.

Every decision is taken from all-reduced flags, so all ranks skip, arm and stop together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from jicd.errors import UserError

log = logging.getLogger(__name__)

CapFrom = Literal["start", "first_below"]


@dataclass(frozen=True)
class StepVerdict:
    """What every rank does with this step."""

    skip: bool
    """Do not apply the update (non-finite loss on some rank, or an armed cap exceeded)."""
    armed_now: bool
    """The cap became armed at this step (its loss was below the cap on every rank)."""


class StepGuard:
    """Skip decisions, cap arming and the skipped-streak stop (state saved in checkpoints).

    Args:
        cap: ``train.loss_cap``.
        cap_from: ``train.loss_cap_from`` ("start" or "first_below", resolved).
        max_in_a_row: ``train.max_skipped_in_a_row`` (0: never stop).
    """

    def __init__(self, cap: float, cap_from: CapFrom, max_in_a_row: int) -> None:
        self.cap, self.max_in_a_row = cap, max_in_a_row
        self.armed = cap_from == "start"
        self.skipped = 0
        self.in_a_row = 0
        self.last_nonfinite = False

    def decide(self, nonfinite: bool, above_cap: bool) -> StepVerdict:
        """Decide from flags already combined over ranks (true if true on any rank)."""
        skip = nonfinite or (self.armed and above_cap)
        armed_now = not self.armed and not nonfinite and not above_cap
        self.armed = self.armed or armed_now
        if armed_now:
            log.info("loss below train.loss_cap=%g on every rank: the cap applies now", self.cap)
        self.skipped += skip
        self.in_a_row = self.in_a_row + 1 if skip else 0
        self.last_nonfinite = nonfinite
        return StepVerdict(skip, armed_now)

    def check_progress(self, last_loss: float) -> None:
        """Stop when too many steps in a row were skipped (same answer on every rank).

        Args:
            last_loss: this rank's loss of the last step (named in the message).

        Raises:
            UserError: one line naming the streak, the last loss, the cap and what to do.
        """
        if not self.max_in_a_row or self.in_a_row < self.max_in_a_row:
            return
        if not self.last_nonfinite:
            why = f"last loss {last_loss:.4g} above train.loss_cap={self.cap:g}"
            fix = (
                "start from pretrained weights (train.init_from=FILE), raise train.loss_cap, "
                "or set train.loss_cap_from=first_below"
            )
        else:
            why = f"the loss is not finite on some rank (here {last_loss:.4g})"
            fix = "lower optim.lr or resume from an earlier checkpoint"
        raise UserError(
            f"training cannot make progress: {self.in_a_row} steps in a row were skipped ({why}); "
            f"{fix} (train.max_skipped_in_a_row={self.max_in_a_row}, 0 never stops)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row, "armed": self.armed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; checkpoints from before the guard carry only ``skipped`` (cap then armed,
        as it always was)."""
        self.skipped = int(state.get("skipped", 0))
        self.in_a_row = int(state.get("in_a_row", 0))
        self.armed = bool(state.get("armed", True))
