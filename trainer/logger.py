"""Metric sinks: TensorBoard + JSON lines on rank 0, a no-op everywhere else.

Tags are ``train/<name>`` and ``val/<name>``; every loss term the criterion returns is logged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from jicd.errors import UserError


@dataclass
class LoggingConfig:
    """Observability settings."""

    log_every: int = 10
    """Steps between two logged training points (loss terms are averaged over ranks there)."""
    tensorboard: bool = True
    """Write TensorBoard event files to ``<run_dir>/tb`` (rank 0 only)."""
    progress_bar: bool = True
    """Show a tqdm bar with loss / bpp / PSNR on rank 0."""
    num_val_images: int = 4
    """Validation images shown as clean | noisy | reconstruction grids."""
    utilisation: bool = True
    """Log ``flop_utilisation``: FLOPs of a step (counted once at start) / step time / the
    device's matrix-product rate (measured once at start, ``trainer.perf``)."""

    def __post_init__(self) -> None:
        if self.log_every < 1:
            raise UserError(f"logging.log_every must be >= 1, got {self.log_every}")


class MetricsLogger(Protocol):
    """What the training loop needs from a metrics sink."""

    def log_scalars(self, step: int, split: str, values: dict[str, float]) -> None: ...

    def log_images(self, step: int, tag: str, images: torch.Tensor) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """The logger of every rank but 0."""

    def log_scalars(self, step: int, split: str, values: dict[str, float]) -> None:
        del step, split, values

    def log_images(self, step: int, tag: str, images: torch.Tensor) -> None:
        del step, tag, images

    def close(self) -> None:
        pass


class RunLogger:
    """Rank 0's logger: ``metrics.jsonl`` (appended across resumes) and TensorBoard."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self._tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log_scalars(self, step: int, split: str, values: dict[str, float]) -> None:
        record = {"step": step, "split": split}
        record.update({k: _json_number(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, step)

    def log_images(self, step: int, tag: str, images: torch.Tensor) -> None:
        """Log a batch of images ``(B, 3, H, W)`` in [0, 1]."""
        if self._tb is not None:
            self._tb.add_images(tag, images.clamp(0, 1).cpu(), step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _json_number(value: float) -> float | str:
    # JSON has no NaN/inf; keep them readable instead of emitting invalid JSON.
    value = float(value)
    return value if math.isfinite(value) else str(value)


def build_logger(run_dir: Path, cfg: LoggingConfig, main_rank: bool) -> MetricsLogger:
    """A ``RunLogger`` on the main rank, a ``NullLogger`` elsewhere."""
    return RunLogger(run_dir, cfg) if main_rank else NullLogger()
