"""Checkpoint bookkeeping: keep-last-k, atomic publication, recovery from a crash mid-write,
verification before use, and a full disk during a save."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from jicd.errors import UserError
from trainer import checkpointer as checkpoint_module
from trainer.checkpointer import CheckpointConfig, Checkpointer, rng_state, set_rng_state


class FileEngine:
    """The engine surface the checkpointer uses (save/load of one file per tag)."""

    def __init__(self) -> None:
        self.weights = torch.zeros(3)

    def save(self, directory: Path, tag: str) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        torch.save(self.weights.clone(), directory / tag / "weights.pt")

    def load(self, directory: Path, tag: str) -> None:
        self.weights = torch.load(directory / tag / "weights.pt")


def save_steps(ckpt: Checkpointer, engine: FileEngine, steps: range) -> None:
    for step in steps:
        engine.weights = torch.full((3,), float(step))
        ckpt.save(step, engine, {"step": step}, {"loader": {"position": step}})


def test_keeps_the_last_k_and_points_latest_at_the_newest(tmp_path: Path) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=2), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 5))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_00000003", "step_00000004"]
    assert ckpt.latest() == "step_00000004"
    engine = FileEngine()
    trainer_state, rank_state = ckpt.load("step_00000004", engine)
    assert trainer_state["step"] == 4 and rank_state["loader"]["position"] == 4
    assert torch.equal(engine.weights, torch.full((3,), 4.0))


def test_a_crash_while_writing_leaves_the_previous_checkpoint_usable(tmp_path: Path) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=3), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 3))
    half_written = tmp_path / "checkpoints" / ".staging" / "step_00000003"
    half_written.mkdir(parents=True)
    (half_written / "weights.pt").write_bytes(b"truncated")
    assert ckpt.latest() == "step_00000002"
    engine = FileEngine()
    ckpt.load(ckpt.latest(), engine)
    assert torch.equal(engine.weights, torch.full((3,), 2.0))
    save_steps(ckpt, FileEngine(), range(3, 4))  # the next save replaces the stale staging dir
    assert ckpt.latest() == "step_00000003"


def test_latest_marker_of_a_deleted_checkpoint_falls_back(tmp_path: Path) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=3), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 3))
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009\n")
    assert ckpt.latest() == "step_00000002"
    assert Checkpointer(CheckpointConfig(), tmp_path / "empty").latest() is None


def test_rng_state_round_trip() -> None:
    state = rng_state()
    first = torch.rand(4)
    set_rng_state(state)
    assert torch.equal(torch.rand(4), first)


def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(
    tmp_path: Path, caplog
) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=3), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 4))
    weights = tmp_path / "checkpoints" / "step_00000003" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with caplog.at_level("WARNING"):
        assert ckpt.latest() == "step_00000002"
    assert "step_00000003 is damaged (weights.pt has" in caplog.text
    assert (tmp_path / "checkpoints" / "step_00000003.invalid").is_dir()
    # A flipped byte (same size) is caught by the checksum.
    weights = tmp_path / "checkpoints" / "step_00000002" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert ckpt.latest() == "step_00000001"
    engine = FileEngine()
    ckpt.load(ckpt.latest(), engine)
    assert torch.equal(engine.weights, torch.full((3,), 1.0))


class FullDiskEngine(FileEngine):
    """Writes part of its file, then fails as a full disk does."""

    def save(self, directory: Path, tag: str) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        (directory / tag / "weights.pt").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / tag / "weights.pt"))


def test_a_save_failing_with_enospc_leaves_latest_valid(tmp_path: Path) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=3), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 3))
    with pytest.raises(UserError, match="step_00000003 could not be written .No space left"):
        ckpt.save(3, FullDiskEngine(), {"step": 3}, {"loader": {}})
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert ckpt.latest() == "step_00000002"
    assert not (tmp_path / "checkpoints" / ".staging" / "step_00000003").exists()
    engine = FileEngine()
    ckpt.load(ckpt.latest(), engine)
    assert torch.equal(engine.weights, torch.full((3,), 2.0))


def test_a_failing_manifest_write_also_leaves_latest_valid(tmp_path: Path, monkeypatch) -> None:
    ckpt = Checkpointer(CheckpointConfig(every=1, keep_last=3), tmp_path)
    save_steps(ckpt, FileEngine(), range(1, 2))

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checksums.json")

    monkeypatch.setattr(checkpoint_module, "write_manifest", full_disk)
    with pytest.raises(UserError, match="previous checkpoint .step_00000001. is intact"):
        save_steps(ckpt, FileEngine(), range(2, 3))
    assert ckpt.latest() == "step_00000001"
