"""What the loop logs every ``logging.log_every`` steps: window sums kept on the device.

Step results stay device tensors (``trainer.step``); adding them up queues a few tiny kernels and
waits for nothing. At a log step :meth:`LogWindow.means_over_ranks` does the window's only
synchronisation: one all-reduce and one device-to-host copy.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from jicd import distributed as D


class LogWindow:
    """Running sums of the step values between two log points."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.waited = 0.0
        self.started: float | None = None
        self.images = 0
        self.last: dict[str, Tensor] = {}

    def add(self, values: dict[str, Tensor], started: float, waited: float, images: int) -> None:
        """Add one step's values (0-dim device tensors); ``grad_norm`` counts applied steps only
        (a skipped step has none), ``applied`` counts them.

        Args:
            values: the step's results.
            started: ``time.perf_counter()`` when the step began waiting for its batch.
            waited: seconds it waited for the batch.
            images: images of this rank's batch.
        """
        applied = 1 - values["skipped"]
        for key, value in values.items():
            if key == "grad_norm":
                value = torch.where(applied > 0, value, torch.zeros_like(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.sums["applied"] = self.sums["applied"] + applied if "applied" in self.sums else applied
        self.count += 1
        self.waited += waited
        self.started = started if self.started is None else self.started
        self.images += images
        self.last = values

    def means_over_ranks(self) -> dict[str, float]:
        """Window means averaged over ranks; throughput summed over ranks; ``step_time_s`` the
        wall time per step, measured to after this synchronisation (the host queues steps ahead
        of the GPU); skipped steps cost a forward and backward too, and are counted in
        ``skipped``, never hidden. ``grad_norm`` is absent when no step of the window applied
        its update."""
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k].float() for k in keys]).double() / self.count
        images = torch.tensor([float(self.images)], dtype=torch.float64, device=local.device)
        totals = D.all_reduce_sum(torch.cat([local, images])).tolist()
        world = D.get_world_size()
        means = {k: v / world for k, v in zip(keys, totals[:-1], strict=True)}
        applied = means.pop("applied")
        if applied > 0:
            means["grad_norm"] /= applied
        else:
            del means["grad_norm"]
        elapsed = max(time.perf_counter() - (self.started or 0.0), 1e-9)
        means["images_per_s"] = totals[-1] / elapsed
        means["data_wait_fraction"] = self.waited / elapsed
        means["step_time_s"] = elapsed / self.count
        return means
