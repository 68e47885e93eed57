"""Training runs beyond resume: skipped steps, single-process runs, fine-tuning, user errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from compressai.models import Cheng2020Anchor
from train_harness import (
    child_env,
    exported_state,
    make_shards,
    metrics,
    run_training,
    train_command,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"))


@pytest.mark.distributed
@pytest.mark.parametrize(
    "engine", [["engine.kind=deepspeed", "engine.zero_stage=2"], ["engine.kind=ddp"]], ids=str
)
def test_non_finite_loss_on_one_rank_skips_the_step_on_all(tmp_path, shards, engine) -> None:
    run_dir = tmp_path / "run"
    overrides = ["train.inject_nan_at_step=1", "train.steps=4", *engine]
    run_training(2, run_dir, shards, overrides)
    rows = metrics(run_dir)
    assert [r["skipped"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert rows[-1]["skipped_total"] == 1.0 and rows[-1]["step"] == 4
    assert "grad_norm" not in rows[1]  # no optimizer step, so no norm, on the skipped step
    assert all(r["replica_divergence"] == 0.0 for r in metrics(run_dir, "checks"))


def test_single_process_training_reduces_the_validation_loss(tmp_path: Path, shards: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = ["optim.lr=2e-3", "optim.warmup_steps=0", "optim.milestones=[]"]
    overrides += ["train.steps=12", "train.val_every=4", "checkpoint.every=100", "engine.kind=ddp"]
    run_training(0, run_dir, shards, overrides)
    val = metrics(run_dir, "val")
    assert [v["step"] for v in val] == [4, 8, 12]
    assert val[-1]["rd_loss"] < 0.8 * val[0]["rd_loss"]
    assert val[-1]["psnr"] > val[0]["psnr"]


def test_init_from_a_compressai_checkpoint(tmp_path: Path, shards: Path) -> None:
    torch.manual_seed(3)
    anchor = Cheng2020Anchor(N=16).state_dict()
    torch.save(anchor, tmp_path / "anchor.pth")
    run_dir = tmp_path / "run"
    run_training(
        0, run_dir, shards, [f"train.init_from={tmp_path / 'anchor.pth'}", "train.steps=0"]
    )
    state = exported_state(run_dir)
    for name, value in anchor.items():
        if name.startswith("g_a."):
            index, rest = name.split(".", 2)[1:]
            target = f"ga0.{index}.{rest}" if int(index) < 3 else f"ga1.{int(index) - 3}.{rest}"
            assert torch.equal(state[target], value), target
        elif name.startswith(("g_s.", "h_a.", "h_s.", "context_prediction.", "entropy_param")):
            assert torch.equal(state[name], value), name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.qualty=3", "unknown config key 'model.qualty'"),
        ("engine.kind=horovod", "engine.kind: invalid value 'horovod'"),
        ("data.shards=/nonexistent/shards", "/nonexistent/shards"),
    ],
)
def test_user_errors_give_one_line_and_exit_2(tmp_path: Path, shards: Path, override, message):
    command = train_command(0, tmp_path / "run", shards, [override])
    proc = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
