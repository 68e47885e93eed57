"""Training on real-noise pairs: ``noise.kind: paired`` takes the noisy image from the shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sidd_fixtures import make_sidd
from train_harness import run_training

from data_pipeline.paired_shards import prepare_paired_shards
from data_pipeline.shards import ShardConfig
from trainer.testing import make_shards

pytestmark = pytest.mark.slow


@pytest.mark.distributed
def test_two_ranks_train_on_paired_shards_and_validate_on_the_real_noise(tmp_path: Path) -> None:
    shards = tmp_path / "pairs"
    prepare_paired_shards(
        make_sidd(tmp_path / "sidd"), shards, ShardConfig(min_side=64, val_fraction=0.34, workers=1)
    )
    run_dir = tmp_path / "run"
    for backend in ("torch", "dali"):
        proc = run_training(
            2,
            run_dir / backend,
            shards,
            ["noise.kind=paired", f"data.backend={backend}", "train.global_batch_size=2",
             "train.steps=4", "train.val_every=4", "logging.log_every=2"],
        )  # fmt: skip
        assert "skipped (mismatched)" not in proc.stderr  # the shards hold only good pairs
        rows = [json.loads(line) for line in (run_dir / backend / "metrics.jsonl").open()]
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        assert train[-1]["step"] == 4 and all(r["loss"] == r["loss"] for r in train)
        assert val and "psnr_real" in val[-1] and "psnr_level1" not in val[-1]


def test_paired_noise_on_single_image_shards_is_refused_in_one_line(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, count=8)
    with pytest.raises(AssertionError) as failed:
        run_training(0, tmp_path / "run", shards, ["noise.kind=paired", "train.steps=1"])
    assert "noise.kind=paired needs paired shards" in str(failed.value)
    assert "Traceback" not in str(failed.value)
