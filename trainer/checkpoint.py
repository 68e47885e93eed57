"""Checkpoints: atomic, on every rank, keep the last k, auto-resume, inference export.

Layout under ``<run_dir>/checkpoints``::

    step_00000100/            one complete checkpoint (engine files + per-rank state)
        <engine files>        DeepSpeed: model + one optimizer partition per rank; DDP: one file
        trainer.pt            step, skipped steps, LR schedule (global, written by rank 0)
        rank_00000.pt …       per-rank state: loader position and RNG streams
    latest                    text file naming the newest complete checkpoint
    .staging/                 where a checkpoint is written before it is renamed into place

A checkpoint becomes visible only by ``os.replace`` of its finished directory and then of
``latest``, so a crash (even SIGKILL) while writing leaves the previous checkpoint usable.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jicd import distributed as D
from jicd.errors import UserError
from jicd.files import torch_save_atomic, write_text_atomic
from trainer.engine import TrainEngine

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class CheckpointConfig:
    """When and how checkpoints are written."""

    every: int = 5000
    """Steps between checkpoints (one is also written at the end and on SIGTERM/SIGUSR1)."""
    keep_last: int = 3
    """How many complete checkpoints to keep (older ones are deleted)."""
    export: bool = True
    """Also write ``<run_dir>/export/model.pt``, an inference state dict loadable without
    DeepSpeed (``jicd.models.checkpoints.load_for_inference``)."""

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep_last < 1:
            raise UserError("checkpoint.every and checkpoint.keep_last must be >= 1")


def rng_state() -> dict[str, Any]:
    """Every RNG stream this process draws from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """Saves and restores the engine, the global trainer state and every rank's own state."""

    def __init__(self, cfg: CheckpointConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.root = run_dir / "checkpoints"
        self.staging = self.root / ".staging"
        self.export_dir = run_dir / "export"

    def latest(self) -> str | None:
        """Tag of the newest complete checkpoint, or None."""
        marker = self.root / "latest"
        if marker.is_file():
            tag = marker.read_text().strip()
            if (self.root / tag).is_dir():
                return tag
        tags = sorted(p.name for p in self.root.glob("step_*") if STEP_DIR.match(p.name))
        return tags[-1] if tags else None

    def save(self, step: int, engine: TrainEngine, trainer_state: dict, rank_state: dict) -> Path:
        """Write checkpoint ``step`` (call on every rank, at the same step)."""
        tag = f"step_{step:08d}"
        if D.is_main():
            shutil.rmtree(self.staging / tag, ignore_errors=True)
        D.barrier()
        engine.save(self.staging, tag)
        (self.staging / tag).mkdir(parents=True, exist_ok=True)
        torch_save_atomic(rank_state, self.staging / tag / f"rank_{D.get_rank():05d}.pt")
        if D.is_main():
            torch_save_atomic(trainer_state, self.staging / tag / "trainer.pt")
        D.barrier()
        if D.is_main():
            self._publish(tag)
        D.barrier()
        return self.root / tag

    def _publish(self, tag: str) -> None:
        target = self.root / tag
        shutil.rmtree(target, ignore_errors=True)
        os.replace(self.staging / tag, target)
        write_text_atomic(self.root / "latest", tag + "\n")
        kept = sorted(p.name for p in self.root.glob("step_*") if STEP_DIR.match(p.name))
        for old in kept[: -self.cfg.keep_last]:
            shutil.rmtree(self.root / old, ignore_errors=True)
        log.info("checkpoint %s written", target)

    def load(self, tag: str, engine: TrainEngine) -> tuple[dict, dict]:
        """Restore the engine from ``tag``; returns (trainer_state, this rank's state)."""
        engine.load(self.root, tag)
        directory = self.root / tag
        trainer_state = torch.load(directory / "trainer.pt", weights_only=False)
        rank_file = directory / f"rank_{D.get_rank():05d}.pt"
        if not rank_file.is_file():
            raise RuntimeError(
                f"{rank_file} missing: was this checkpoint written with a different world size?"
            )
        return trainer_state, torch.load(rank_file, weights_only=False)

    def export(self, model: nn.Module, model_cfg: Any, step: int) -> Path | None:
        """Write the inference export (rank 0 only): ``update(force=True)`` + plain state dict."""
        if not (self.cfg.export and D.is_main()):
            return None
        from jicd.models.checkpoints import save_export

        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / "model.pt"
        save_export(path, model, model_cfg)  # copies the weights; the training model is untouched
        log.info("inference export (step %d) written to %s", step, path)
        return path
