"""Which steps apply their update: the loss cap, non-finite losses, and the stop on a streak.

The paper skips a step whose loss is non-finite or above a cap (100 for q1–q3, 1000 for q4–q6).
That cap was set for fine-tuning from pretrained weights, whose loss starts far below it; a model
trained from scratch starts above it (≈ 130 at N = 128) and, with the cap applied from the first
step, would skip every step for ever. So the cap is *armed* either from the start
(``train.loss_cap_from=start``, the default when ``train.init_from`` names a file) or once the
loss has first fallen below it on every rank (``first_below``, the default from scratch). Before
it is armed, only non-finite losses skip. A run that skips ``train.max_skipped_in_a_row``
steps in a row cannot make progress and stops with one line saying why.

The decision is taken **on the device**, from flags all-reduced over ranks, and applied on the
device (the optimizer's ``found_inf``), so a step needs no host synchronisation: the host reads
the counters only at log steps (:meth:`StepGuard.counters`). Every rank takes the same
decisions, so all ranks skip, arm and stop together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from jicd.errors import UserError

log = logging.getLogger(__name__)

CapFrom = Literal["start", "first_below"]


@dataclass(frozen=True)
class GuardCounters:
    """The guard's state as host values (read at log steps: one device-to-host copy)."""

    skipped: int
    in_a_row: int
    armed: bool
    last_nonfinite: bool


class StepGuard:
    """Skip decisions, cap arming and the skipped-streak stop (state saved in checkpoints).

    Args:
        cap: ``train.loss_cap``.
        cap_from: ``train.loss_cap_from`` ("start" or "first_below", resolved).
        max_in_a_row: ``train.max_skipped_in_a_row`` (0: never stop).
        device: where the state lives (the training device).
    """

    def __init__(
        self, cap: float, cap_from: CapFrom, max_in_a_row: int, device: torch.device | str = "cpu"
    ) -> None:
        self.cap, self.max_in_a_row = cap, max_in_a_row
        # [armed, skipped, in_a_row, last_nonfinite] as float64: exact counts to 2**53 steps.
        self.state = torch.tensor([cap_from == "start", 0, 0, 0], dtype=torch.float64)
        self.state = self.state.to(device)
        self._armed_seen = cap_from == "start"

    def decide(self, flags: Tensor) -> Tensor:
        """Update the state from combined flags and return the skip decision, on the device.

        Args:
            flags: ``(2,)`` tensor, all-reduced (maximum) over ranks: ``[non-finite loss,
                loss above the cap]``, each > 0 when true on some rank.

        Returns:
            ``()`` float32 tensor: 1.0 to skip this step's update, 0.0 to apply it.
        """
        nonfinite, above = (flags[0] > 0).double(), (flags[1] > 0).double()
        armed, skipped, in_a_row, _ = self.state.unbind()
        skip = torch.maximum(nonfinite, armed * above)
        now_armed = torch.maximum(armed, (1 - nonfinite) * (1 - above))
        new = torch.stack([now_armed, skipped + skip, (in_a_row + 1) * skip, nonfinite])
        self.state.copy_(new)
        return skip.float()

    def counters(self) -> GuardCounters:
        """The state on the host (a synchronisation: call at log steps only)."""
        armed, skipped, in_a_row, last_nonfinite = self.state.tolist()
        if armed and not self._armed_seen:
            self._armed_seen = True
            log.info("loss below train.loss_cap=%g on every rank: the cap applies now", self.cap)
        return GuardCounters(int(skipped), int(in_a_row), bool(armed), bool(last_nonfinite))

    @property
    def skipped(self) -> int:
        return self.counters().skipped

    def check_progress(self, last_loss: float) -> None:
        """Stop when too many steps in a row were skipped (same answer on every rank).

        Args:
            last_loss: this rank's loss of the last step (named in the message).

        Raises:
            UserError: one line naming the streak, the last loss, the cap and what to do.
        """
        counters = self.counters()
        if not self.max_in_a_row or counters.in_a_row < self.max_in_a_row:
            return
        if not counters.last_nonfinite:
            why = f"last loss {last_loss:.4g} above train.loss_cap={self.cap:g}"
            fix = (
                "start from pretrained weights (train.init_from=FILE), raise train.loss_cap, "
                "or set train.loss_cap_from=first_below"
            )
        else:
            why = f"the loss is not finite on some rank (here {last_loss:.4g})"
            fix = "lower optim.lr or resume from an earlier checkpoint"
        raise UserError(
            f"training cannot make progress: {counters.in_a_row} steps in a row were skipped "
            f"({why}); {fix} (train.max_skipped_in_a_row={self.max_in_a_row}, 0 never stops)"
        )

    def state_dict(self) -> dict[str, Any]:
        c = self.counters()
        return {"skipped": c.skipped, "in_a_row": c.in_a_row, "armed": c.armed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; checkpoints from before the guard carry only ``skipped`` (cap then armed,
        as it always was)."""
        armed = bool(state.get("armed", True))
        values = [armed, int(state.get("skipped", 0)), int(state.get("in_a_row", 0)), 0]
        self.state.copy_(torch.tensor(values, dtype=torch.float64))
        self._armed_seen = armed
