"""Training runs: a paper recipe started from scratch on purpose, best.pt, init from an export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_harness import REPO, child_env, exported_state, metrics, run_training

from jicd.models.released import CDF_BUFFERS
from jicd.models.weights import load_for_inference
from trainer.testing import make_export, make_shards

pytestmark = pytest.mark.slow

# configs/q3.yaml shrunk to a smoke-sized single-process run (N=16, 64-px patches, 3 steps).
SMALL_Q3 = [
    "model.channels=16",
    "data.patch_size=64",
    "train.global_batch_size=2",
    "data.val_batch_size=2",
    "data.num_threads=1",
    "data.num_workers=0",
    "data.shuffle_buffer=16",
    "engine.kind=ddp",
    "optim.warmup_steps=0",
    "optim.milestones=[]",
    "train.steps=3",
    "train.val_every=1",
    "train.timeout_s=120",
    "checkpoint.every=100",
    "logging.log_every=1",
    "logging.progress_bar=false",
    "logging.num_val_images=0",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"))


def q3_command(run_dir: Path, shards: Path, extra: list[str]) -> list[str]:
    config = REPO / "configs" / "q3.yaml"
    args = [f"train.run_dir={run_dir}", f"data.shards={shards}", *SMALL_Q3, *extra]
    return [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(config), *args]


def test_q3_recipe_refuses_without_init_from_and_trains_with_none(tmp_path, shards) -> None:
    refused = subprocess.run(
        q3_command(tmp_path / "refused", shards, []),
        env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "train.init_from=none" in error[0]
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "refused" / "checkpoints").exists()

    run_dir = tmp_path / "scratch"
    proc = subprocess.run(
        q3_command(run_dir, shards, ["train.init_from=none"]),
        env=child_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    # export/best.pt: the lowest validation rd-loss, with its step, beside the latest export.
    val = metrics(run_dir, "val")
    best = min(val, key=lambda row: row["rd_loss"])
    payload = torch.load(run_dir / "export" / "best.pt", weights_only=False)
    assert payload["step"] == best["step"]
    assert payload["val_rd_loss"] == pytest.approx(best["rd_loss"], rel=1e-6)
    latest = torch.load(run_dir / "export" / "model.pt", weights_only=False)
    assert latest["step"] == 3
    model, identity = load_for_inference(run_dir / "export" / "best.pt")
    assert identity["quality"] == 3 and model.N == 16


def test_init_from_an_export_fills_every_tensor(tmp_path: Path, shards: Path) -> None:
    export = make_export(tmp_path / "pretrained.pt", seed=9)
    run_dir = tmp_path / "run"
    run_training(0, run_dir, shards, [f"train.init_from={export}", "train.steps=0"])
    source = torch.load(export, weights_only=False)["state_dict"]
    state = exported_state(run_dir)
    for key, value in source.items():
        if key not in CDF_BUFFERS:
            assert torch.equal(state[key], value), key
