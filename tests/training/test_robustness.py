"""What clusters do to a long run, with real torchrun/gloo runs: a corrupted sample, shards that
are mostly broken, a damaged newest checkpoint, a full disk, another number of ranks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from data_fixtures import corrupt_in_place
from train_harness import (
    exported_state,
    max_param_difference,
    metrics,
    run_failing,
    run_training,
)

from data_pipeline.manifest import load_split
from trainer.checkpoint_integrity import verify
from trainer.testing import make_shards

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
BASE = ["train.steps=9", "checkpoint.every=3", "checkpoint.keep_last=5", "train.val_every=3"]
BASE += ["train.log_sample_keys=true", "data.max_bad_fraction=0.1"]


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"))


def _damaged_copy(sound: Path, target: Path, count: int) -> list[str]:
    """Copy the shards and corrupt ``count`` training members in place; returns their keys."""
    shutil.copytree(sound, target)
    locations = load_split(str(target), "train").locations()
    victims = locations[7 : 7 + count] if count == 1 else locations[:count]
    for location in victims:
        corrupt_in_place(location, start=100)
    return [location.key for location in victims]


def _keys_read(run_dir: Path) -> list[list[str]]:
    return [
        [line.split("\t")[1] for line in (run_dir / "keys" / f"rank{r}.txt").read_text().split("\n")
         if line]
        for r in range(2)
    ]  # fmt: skip


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_corrupted_member_is_skipped_logged_once_and_never_read_again(
    sound: Path, tmp_path: Path, backend: str
) -> None:
    shards = tmp_path / "shards"
    (bad_key,) = _damaged_copy(sound, shards, 1)
    run_dir = tmp_path / "run"
    overrides = [*BASE, f"data.backend={backend}", "engine.kind=ddp"]
    first = run_training(2, run_dir, shards, overrides)
    warnings = [line for line in first.stderr.splitlines() if "undecodable train sample" in line]
    assert len(warnings) == 1 and f"{bad_key}.png" in warnings[0] and "train-0000" in warnings[0]
    listed = json.loads((run_dir / "bad_samples.json").read_text())["samples"]
    assert [(s["key"], s["split"]) for s in listed] == [(bad_key, "train")]
    (counted,) = metrics(run_dir, "data")
    assert counted["bad_samples_train"] == 1.0 and counted["dropped_batches"] == 1.0
    assert [row["step"] for row in metrics(run_dir)] == list(range(1, 10))  # training went on
    keys = _keys_read(run_dir)
    assert len(keys[0]) == len(keys[1]) == 9 * 2  # equal, full batches on both ranks
    assert bad_key not in keys[0] + keys[1]

    # Relaunch from the checkpoint *before* the exclusion (as after a crash that lost the later
    # ones): the sample is known from bad_samples.json and never read again.
    excluded_at = counted["step"]
    reference = exported_state(run_dir)
    for checkpoint in (run_dir / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) >= excluded_at:
            shutil.rmtree(checkpoint)
    second = run_training(2, run_dir, shards, overrides)
    assert "undecodable train sample" not in second.stderr
    assert "1 undecodable samples excluded by earlier launches" in second.stderr
    assert len(json.loads((run_dir / "bad_samples.json").read_text())["samples"]) == 1
    assert bad_key not in sum(_keys_read(run_dir), [])
    if backend == "torch":  # the same batch is dropped again: the resume is exact
        assert max_param_difference(exported_state(run_dir), reference) <= 1e-6


def test_shards_that_are_mostly_corrupt_stop_with_the_threshold_error(sound, tmp_path) -> None:
    shards = tmp_path / "shards"
    _damaged_copy(sound, shards, 15)  # 15 of 21 training samples
    overrides = ["data.backend=torch", "train.steps=9"]
    proc, errors = run_failing(0, tmp_path / "run", shards, overrides)
    assert proc.returncode == 2
    assert len(errors) == 1 and "of 21 training samples are undecodable" in errors[0]
    assert "data.max_bad_fraction=0.01" in errors[0] and "check-shards" in errors[0]
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------- another number of ranks
def _universal(directory: Path, out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Per-parameter fp32 weights and Adam state of a DeepSpeed ZeRO checkpoint."""
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    args = argparse.Namespace(
        input_folder=str(directory), output_folder=str(out), num_extract_workers=1,
        num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True,
    )  # fmt: skip
    ds_to_universal(args)
    state = {}
    for param in sorted(p for p in (out / "zero").iterdir() if p.is_dir()):
        state[param.name] = {}
        for path in sorted(param.glob("*.pt")):  # fp32, exp_avg, exp_avg_sq, step
            value = torch.load(path, weights_only=False)
            state[param.name][path.stem] = value["param"] if isinstance(value, dict) else value
    return state


def _training_state(directory: Path, tmp: Path) -> dict[str, torch.Tensor]:
    """Model + optimizer + schedule of a checkpoint as flat named tensors (any engine)."""
    flat: dict[str, torch.Tensor] = {}
    whole = directory / "ddp_state.pt"  # DDP; ZeRO-0 keeps the whole optimizer in mp_rank_00
    if not whole.is_file() and not list(directory.glob("zero_pp_rank_*")):
        whole = directory / "mp_rank_00_model_states.pt"
    if whole.is_file():
        saved = torch.load(whole, weights_only=False)
        flat |= {f"module.{k}": v for k, v in saved["module"].items()}
        for index, state in saved["optimizer"]["state"].items():
            flat |= {f"optim.{index}.{k}": torch.as_tensor(v) for k, v in state.items()}
    else:
        universal = _universal(directory, tmp / f"universal-{directory.parent.parent.name}")
        flat |= {f"{p}.{k}": torch.as_tensor(v) for p, s in universal.items() for k, v in s.items()}
    trainer = torch.load(directory / "trainer.pt", weights_only=False)
    flat["trainer.step"] = torch.tensor(trainer["step"])
    flat["scheduler.last_epoch"] = torch.tensor(trainer["scheduler"]["last_epoch"])
    return flat


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert torch.equal(a[name].float(), b[name].float()), name


ENGINES = {
    "zero2-dali": ["engine.kind=deepspeed", "engine.zero_stage=2", "data.backend=dali"],
    "ddp-torch": ["engine.kind=ddp", "data.backend=torch"],
    "zero0-torch": ["engine.kind=deepspeed", "engine.zero_stage=0", "data.backend=torch"],
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_resume_on_another_world_size_continues_the_same_state(sound, tmp_path, engine) -> None:
    run_dir = tmp_path / "run"
    overrides = [*ENGINES[engine], "train.global_batch_size=4", "checkpoint.every=3"]
    overrides += ["checkpoint.keep_last=5", "train.log_sample_keys=true", "train.val_every=0"]
    step3 = run_dir / "checkpoints" / "step_00000003"
    states = []
    for nproc in (2, 1, 2):  # 2 ranks write step 3; 1 rank resumes it and saves; 2 again
        run = run_training(nproc, run_dir, sound, [*overrides, "train.steps=3"])
        if states:
            assert "was written by" in run.stderr and "resumed from step_00000003" in run.stderr
        states.append(_training_state(step3, tmp_path / str(len(states))))
        assert json.loads((step3 / "checksums.json").read_text())["world_size"] == nproc
    _assert_same_state(states[0], states[1])  # 2 -> 1
    _assert_same_state(states[1], states[2])  # 1 -> 2

    # It trains on: 1 rank from step 3 to 5 with the global batch of 4.
    (run_dir / "keys").rename(tmp_path / "keys-before")
    run_training(1, run_dir, sound, [*overrides, "train.steps=5"])
    assert [r["step"] for r in metrics(run_dir)][-2:] == [4, 5]
    lines = (run_dir / "keys" / "rank0.txt").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] == [3] * 4 + [4] * 4
    if engine.endswith("-torch"):  # the very global batches of an uninterrupted 2-rank run
        reference = tmp_path / "reference"
        run_training(2, reference, sound, [*overrides, "train.steps=5"])
        files = [reference / "keys" / f"rank{r}.txt" for r in range(2)]
        ref = [line.split("\t") for path in files for line in path.read_text().splitlines()]
        for step in (3, 4):
            assert sorted(k for s, k in ref if int(s) == step) == sorted(
                line.split("\t")[1] for line in lines if int(line.split("\t")[0]) == step
            )
        return

    # A damaged newest checkpoint: the relaunch names it and resumes from the previous one.
    newest = run_dir / "checkpoints" / "step_00000005"
    biggest = max((p for p in newest.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    resumed = run_training(2, run_dir, sound, [*overrides, "train.steps=6"])
    assert f"step_00000005 is damaged ({biggest.name} has" in resumed.stderr
    assert "resumed from step_00000003" in resumed.stderr
    assert (run_dir / "checkpoints" / "step_00000005.invalid").is_dir()
    assert verify(run_dir / "checkpoints" / "step_00000006") is None


def test_a_full_disk_during_a_save_leaves_latest_valid(sound: Path, tmp_path: Path) -> None:
    """The checkpoint folder on a 5 MB tmpfs: step 3 fits (3 MB), step 6 does not."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(run_dir / "checkpoints")]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        overrides = ["engine.kind=deepspeed", "engine.zero_stage=0", "data.backend=torch"]
        overrides += ["train.steps=9", "checkpoint.every=3", "checkpoint.export=false"]
        proc, errors = run_failing(2, run_dir, sound, overrides)
        assert errors, proc.stderr[-3000:]
        assert "checkpoint step_00000006 could not be written (" in errors[0]
        assert " MiB free there" in errors[0] and len(set(errors)) == 1  # one message, all ranks
        assert "the previous checkpoint (step_00000003) is intact" in errors[0]
        root = run_dir / "checkpoints"
        assert (root / "latest").read_text().strip() == "step_00000003"
        assert verify(root / "step_00000003") is None
        assert not (root / ".staging" / "step_00000006").exists()
    finally:
        subprocess.run(["umount", str(run_dir / "checkpoints")], check=False)
