"""A run folder from someone else (issue 21, defects 1 and 9): resuming never runs code from a
checkpoint file, DeepSpeed's included, even with ``checksums.json`` rewritten to match; a
refused ``train.init_from`` leaves no run folder behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hostile import write_exploit
from train_harness import run_failing, run_training

from jicd.errors import UserError
from trainer.checkpoint_integrity import verify, write_manifest
from trainer.checkpointer import CheckpointConfig, Checkpointer
from trainer.reproduce.runner import StudyPaths, export_backbone
from trainer.testing import make_shards


class FileEngine:
    """The engine surface the checkpointer uses (one plain tensor file per tag)."""

    def save(self, directory: Path, tag: str) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        torch.save(torch.zeros(3), directory / tag / "weights.pt")

    def load(self, directory: Path, tag: str) -> None:
        torch.load(directory / tag / "weights.pt", weights_only=True)


def test_the_exploit_runs_code_when_unpickled_unsafely(tmp_path) -> None:
    """The pickle used below really runs code: ``weights_only=False`` creates the marker."""
    write_exploit(tmp_path / "x.pt", tmp_path / "marker")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert (tmp_path / "marker").read_text() == "ran"


@pytest.mark.parametrize("name", ["trainer.pt", "rank_00000.pt"])
def test_a_trainer_file_that_runs_code_is_refused_naming_it(tmp_path, name) -> None:
    checkpointer = Checkpointer(CheckpointConfig(), tmp_path / "run")
    checkpointer.save(3, FileEngine(), {"step": 3}, {"loader": {"position": 3}})
    directory = tmp_path / "run" / "checkpoints" / "step_00000003"
    write_exploit(directory / name, tmp_path / "marker")
    write_manifest(directory, 1)  # checksums rewritten to match: they prove nothing
    assert verify(directory) is None
    tag = checkpointer.latest()
    with pytest.raises(UserError, match=f"{name} is not plain data .*refused") as err:
        checkpointer.load(tag, FileEngine())
    assert "\n" not in str(err.value) and not (tmp_path / "marker").exists()


def test_the_reproduce_backbone_export_that_runs_code_is_refused(tmp_path) -> None:
    paths = StudyPaths(tmp_path / "study")
    paths.export("backbone").parent.mkdir(parents=True)
    write_exploit(paths.export("backbone"), tmp_path / "marker", {"state_dict": {}})
    with pytest.raises(UserError, match="backbone export .* is not plain data"):
        export_backbone(paths)
    assert not (tmp_path / "marker").exists()


def test_a_checksum_list_naming_a_file_outside_the_checkpoint_sets_it_aside(tmp_path) -> None:
    directory = tmp_path / "step_00000001"
    directory.mkdir()
    (directory / "checksums.json").write_text(
        '{"version": 1, "world_size": 1, "files": {"../../../etc/passwd": '
        '{"size": 1, "sha256": "00"}}}'
    )
    assert "is not a path inside" in verify(directory)


# ------------------------------------------------------------ real relaunches (DeepSpeed)
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """Shards and a run folder with one DeepSpeed ZeRO-2 checkpoint (step 3, one process)."""
    root = tmp_path_factory.mktemp("hostile_run")
    shards = make_shards(root, count=10)
    run_dir = root / "run"
    overrides = ["train.steps=3", "checkpoint.every=3", "train.val_every=0"]
    run_training(0, run_dir, shards, [*overrides, "engine.zero_stage=2", "data.backend=torch"])
    return shards, run_dir


ENGINE_FILES = [
    "trainer.pt",
    "mp_rank_00_model_states.pt",  # DeepSpeed's model (and, below ZeRO-1, optimizer) file
    "zero_pp_rank_0_mp_rank_00_optim_states.pt",  # DeepSpeed's ZeRO optimizer partition
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINE_FILES)
def test_a_relaunch_never_runs_code_from_the_run_folder(trained, tmp_path, name) -> None:
    shards, original = trained
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    directory = run_dir / "checkpoints" / "step_00000003"
    marker = tmp_path / "marker"
    write_exploit(directory / name, marker)
    write_manifest(directory, 1)
    overrides = ["train.steps=4", "engine.zero_stage=2", "data.backend=torch"]
    proc, errors = run_failing(0, run_dir, shards, [*overrides, "train.val_every=0"])
    assert not marker.exists(), "the checkpoint's code ran"
    assert len(errors) == 1, proc.stderr[-3000:]
    assert f"{name} is not plain data (it asks for exec)" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_refused_init_from_leaves_no_run_folder(trained, tmp_path) -> None:
    shards, _ = trained
    write_exploit(tmp_path / "init.pt", tmp_path / "marker")
    run_dir = tmp_path / "fresh-run"
    overrides = [f"train.init_from={tmp_path / 'init.pt'}", "data.backend=torch"]
    proc, errors = run_failing(0, run_dir, shards, overrides)
    assert len(errors) == 1 and "init.pt is not plain data" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "marker").exists()
    assert not run_dir.exists()  # no config.yaml / meta.json of a run that never started
