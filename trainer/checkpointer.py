"""Checkpoints: atomic, on every rank, keep the last k, auto-resume, inference export.

Layout under ``<run_dir>/checkpoints``::

    step_00000100/            one complete checkpoint (engine files + per-rank state)
        <engine files>        DeepSpeed: model + one optimizer partition per rank; DDP: one file
        trainer.pt            step, skipped steps, LR schedule (global, written by rank 0)
        rank_00000.pt …       per-rank state: loader position and RNG streams
        checksums.json        world size, size + sha256 of every file (trainer.checkpoint_integrity)
    latest                    text file naming the newest complete checkpoint
    step_00000200.invalid/    a checkpoint that failed verification on resume (never loaded)
    .staging/                 where a checkpoint is written before it is renamed into place

A checkpoint becomes visible only by ``os.replace`` of its finished directory and then of
``latest``, so a crash (even SIGKILL) while writing leaves the previous checkpoint usable, and a
failed write (ENOSPC) stops every rank with one line. On resume the newest checkpoint whose
files match its ``checksums.json`` is used (damaged ones are reported and set aside), on any
world size (:mod:`trainer.reshard`). Every file is loaded as plain data
(:mod:`trainer.safe_load`): a file that would run code on unpickling is refused in one line
naming it, whatever ``checksums.json`` says.
"""

from __future__ import annotations

import hashlib
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
from trainer.checkpoint_integrity import saved_world_size, verify, write_manifest
from trainer.engine import TrainEngine
from trainer.reshard import load_engine
from trainer.safe_load import load_plain

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
    DeepSpeed (``jicd.models.weights.load_for_inference``)."""

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


def reseeded_rank_state(rank_state: dict, tag: str) -> dict:
    """``rank_state`` with fresh RNG streams for this rank at this world size (after a resume
    on another world size, where the saved streams cannot be mapped onto the new ranks)."""
    text = f"{tag}:{D.get_rank()}:{D.get_world_size()}".encode()
    seed = int.from_bytes(hashlib.sha256(text).digest()[:4], "little")
    D.seed_all(seed)
    generator = torch.Generator(device=D.device())
    generator.manual_seed(seed + 1)
    return {**rank_state, "rng": rng_state(), "noise_generator": generator.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# torch.save reports a full disk as a RuntimeError from its C++ writer, not as an OSError.
WRITE_ERRORS = (OSError, RuntimeError)


def _write_failure(error: Exception, folder: Path) -> str:
    """One line saying why a write failed, with the free space left where it was written."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    try:
        free = shutil.disk_usage(folder).free / 2**20
    except OSError:
        return text
    return f"{text}; {free:.1f} MiB free there"


class Checkpointer:
    """Saves and restores the engine, the global trainer state and every rank's own state."""

    def __init__(self, cfg: CheckpointConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.root = run_dir / "checkpoints"
        self.staging = self.root / ".staging"
        self.export_dir = run_dir / "export"

    def latest(self) -> str | None:
        """Tag of the newest checkpoint that passes verification, or None (collective).

        Rank 0 checks the newest checkpoint's files against its ``checksums.json``; a damaged
        one is reported, renamed ``<tag>.invalid`` (kept for inspection, never loaded again) and
        the next older one is checked. Every rank gets rank 0's answer.
        """
        tag = self._newest_valid() if D.is_main() else None
        if D.get_world_size() > 1:
            import torch.distributed as dist

            answer = [tag]
            dist.broadcast_object_list(answer, src=0)
            tag = answer[0]
        return tag

    def _newest_valid(self) -> str | None:
        tags = sorted(p.name for p in self.root.glob("step_*") if STEP_DIR.match(p.name))
        for tag in reversed(tags):
            problem = verify(self.root / tag)
            if problem is None:
                return tag
            moved = self.root / f"{tag}.invalid"
            shutil.rmtree(moved, ignore_errors=True)
            os.replace(self.root / tag, moved)
            log.warning(
                "checkpoint %s is damaged (%s): moved to %s, trying the previous one",
                tag,
                problem,
                moved.name,
            )
        return None

    def save(self, step: int, engine: TrainEngine, trainer_state: dict, rank_state: dict) -> Path:
        """Write checkpoint ``step`` (call on every rank, at the same step).

        A failed write on any rank (a full disk: ENOSPC) is noticed by every rank together:
        the half-written checkpoint is removed, ``latest`` still names the previous complete
        one, and every rank raises the same one-line :class:`UserError`.
        """
        tag = f"step_{step:08d}"
        error: Exception | None = None
        try:
            if D.is_main():
                shutil.rmtree(self.staging / tag, ignore_errors=True)
                (self.staging / tag).mkdir(parents=True)
        except WRITE_ERRORS as exc:
            error = exc
        if not self._failed_anywhere(error, tag):
            try:
                engine.save(self.staging, tag)
                torch_save_atomic(rank_state, self.staging / tag / f"rank_{D.get_rank():05d}.pt")
                if D.is_main():
                    torch_save_atomic(trainer_state, self.staging / tag / "trainer.pt")
            except WRITE_ERRORS as exc:
                error = exc
        if not self._failed_anywhere(error, tag):
            try:
                if D.is_main():
                    write_manifest(self.staging / tag, D.get_world_size())
                    self._publish(tag)
            except WRITE_ERRORS as exc:
                error = exc
            self._failed_anywhere(error, tag)
        return self.root / tag

    def _failed_anywhere(self, error: Exception | None, tag: str) -> bool:
        """All-reduce "did a write fail"; on a failure clean up and raise on every rank."""
        (failed,) = D.any_rank(error is not None)
        if not failed:
            return False
        reason = _write_failure(error, self.staging) if error is not None else ""
        if D.get_world_size() > 1:  # every rank reports the first failing rank's reason
            import torch.distributed as dist

            reasons: list[str] = [""] * D.get_world_size()
            dist.all_gather_object(reasons, reason)
            reason = next(r for r in reasons if r)
        if D.is_main():
            shutil.rmtree(self.staging / tag, ignore_errors=True)
        D.barrier()
        marker = self.root / "latest"
        previous = marker.read_text().strip() if marker.is_file() else "none"
        raise UserError(
            f"checkpoint {tag} could not be written ({reason}); the previous checkpoint "
            f"({previous}) is intact: free space in {self.root} and relaunch to resume from it"
        )

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
        """Restore the engine from ``tag``; returns (trainer_state, this rank's state).

        A checkpoint written by another number of ranks is resharded (:mod:`trainer.reshard`);
        each rank then takes the loader state of rank ``min(rank, saved - 1)`` (loader states
        carry global positions) and fresh RNG streams.
        """
        directory = self.root / tag
        saved_world, world = saved_world_size(directory), D.get_world_size()
        if saved_world == world:
            engine.load(self.root, tag)
        else:
            log.warning(
                "%s was written by %d ranks, resuming on %d: model, optimizer and LR schedule "
                "continue exactly; the data continues at the same epoch and fraction; the "
                "noise and quantisation RNG streams are reseeded",
                tag,
                saved_world,
                world,
            )
            load_engine(engine, self.root, tag, saved_world)
        trainer_state = load_plain(directory / "trainer.pt")
        rank_file = directory / f"rank_{min(D.get_rank(), saved_world - 1):05d}.pt"
        rank_state = load_plain(rank_file)
        if saved_world != world:
            rank_state = reseeded_rank_state(rank_state, tag)
        return trainer_state, rank_state

    def export(
        self, model: nn.Module, model_cfg: Any, step: int, name: str = "model.pt", **extra: Any
    ) -> Path | None:
        """Write the inference export (rank 0 only): ``update(force=True)`` + plain state dict.

        ``name`` is ``model.pt`` (the latest) or ``best.pt`` (lowest validation rd-loss); the
        payload records ``step`` and any ``extra`` fields (``val_rd_loss``).
        """
        if not (self.cfg.export and D.is_main()):
            return None
        from jicd.models.weights import save_export

        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / name
        # save_export copies the weights; the training model is untouched.
        save_export(path, model, model_cfg, extra={"step": step, **extra})
        log.info("inference export (step %d) written to %s", step, path)
        return path
