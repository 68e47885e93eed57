"""Paired (noisy/clean) shards: SIDD folder → shards → both loaders keep the pairs aligned."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sidd_fixtures import SCENES, make_sidd

from data_pipeline.data_config import DataConfig
from data_pipeline.loaders import build_train_loader, build_val_loader
from data_pipeline.paired_shards import prepare_paired_shards, split_by_instance
from data_pipeline.shards import ShardConfig
from data_pipeline.verify import verify_shards

REPO = Path(__file__).resolve().parents[2]
PATCH = 64


@pytest.fixture(scope="module")
def sidd(tmp_path_factory) -> Path:
    return make_sidd(tmp_path_factory.mktemp("sidd"))


@pytest.fixture(scope="module")
def shards(sidd: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paired") / "shards"
    prepare_paired_shards(sidd, out, ShardConfig(min_side=PATCH, val_fraction=0.34, workers=1))
    return out


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_pairs_are_written_with_metadata_and_the_bad_ones_reported(shards: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["pairs"] == "sidd"
    skipped = manifest["skipped"]
    # scene 2 entry 010 has no GT, scene 1 entry 011 has a noisy image 8 rows shorter
    assert [e["path"].split("/")[-2:] for e in skipped["incomplete"]] == [
        [SCENES[2], "NOISY_SRGB_010.PNG: no matching GT_SRGB_010.PNG"]
    ]
    assert skipped["mismatched"][0]["path"] == f"{SCENES[1]}/NOISY_SRGB_011.PNG"
    assert skipped["mismatched"][0]["error"] == "noisy 176x152, clean 176x160"
    # 4 usable pairs; the middle scene instance (0002) is held out whole for validation
    assert manifest["splits"]["train"]["num_samples"] == 3
    assert manifest["splits"]["val"]["num_samples"] == 1
    assert {s["meta"]["instance"] for s in manifest["samples"] if s["split"] == "val"} == {"0002"}
    with tarfile.open(shards / manifest["splits"]["train"]["shards"][0]["name"]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(f"{SCENES[0]}_010.json").read())
    assert names[:3] == [f"{SCENES[0]}_010.{m}" for m in ("clean.png", "json", "noisy.png")]
    assert meta["camera"] == "S6" and meta["iso"] == 100 and meta["entry"] == "010"
    assert verify_shards(shards, workers=1)["problems"] == []


def test_instances_go_to_val_whole_and_evenly_spread() -> None:
    class S:  # the fields split_by_instance reads
        def __init__(self, instance: str) -> None:
            self.meta, self.split = {"instance": instance}, ""

    samples = [S(f"{i:04d}") for i in range(10) for _ in range(2)]
    splits = split_by_instance(samples, 0.2)
    assert sorted({s.meta["instance"] for s in splits["val"]}) == ["0002", "0007"]
    assert len(splits["val"]) == 4 and len(splits["train"]) == 16
    assert split_by_instance(samples, 0.0)["val"] == []


def test_prepare_shards_cli_takes_the_data_folder_and_reports_the_skipped(
    sidd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    run = subprocess.run(
        [sys.executable, "-m", "jicd", "prepare-shards", "--pairs", "sidd", str(sidd / "Data"),
         str(out), "--min-side", "64", "--val-fraction", "0", "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "skipped (mismatched): " in run.stdout and "[noisy 176x152, clean 176x160]" in run.stdout
    assert "wrote " in run.stdout and "train 4 pairs" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "jicd", "prepare-shards", "--pairs", "sidd", str(tmp_path),
         str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "no SIDD scene folders" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


def _full_pair(sidd: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    scene, entry = key.rsplit("_", 1)
    folder = sidd / "Data" / scene
    return _pixels(folder / f"NOISY_SRGB_{entry}.PNG"), _pixels(folder / f"GT_SRGB_{entry}.PNG")


def _window(full: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Where ``crop`` (P, P, 3) lies in ``full`` (found by exhaustive search: it is unique)."""
    found = [
        (top, left)
        for top in range(full.shape[0] - PATCH + 1)
        for left in range(full.shape[1] - PATCH + 1)
        if np.array_equal(full[top : top + PATCH, left : left + PATCH], crop)
    ]
    assert len(found) == 1, f"crop found {len(found)} times"
    return found[0]


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    return (image.cpu() * 255).round().to(torch.int16).permute(1, 2, 0).numpy()


def _assert_aligned(batch: dict, sidd: Path) -> None:
    for clean, noisy, key in zip(batch["clean"], batch["noisy"], batch["keys"], strict=True):
        full_noisy, full_clean = _full_pair(sidd, key)
        top, left = _window(full_clean, _as_hwc(clean))
        stored = (full_noisy - full_clean)[top : top + PATCH, left : left + PATCH]
        assert np.array_equal(_as_hwc(noisy) - _as_hwc(clean), stored), key


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_both_loaders_crop_noisy_and_clean_pixel_aligned(
    backend: str, shards: Path, sidd: Path
) -> None:
    cfg = DataConfig(shards=str(shards), backend=backend, patch_size=PATCH, batch_size_per_gpu=3,
                     num_workers=0, num_threads=1, shuffle_buffer=4, seed=5)  # fmt: skip
    first = build_train_loader(cfg, 0, 1, "cpu")
    batches = [next(first) for _ in range(3)]
    again = build_train_loader(cfg, 0, 1, "cpu")  # the same seed: the same crops and noise
    for batch, repeat in zip(batches, [next(again) for _ in range(3)], strict=True):
        assert batch["bad_samples"] == [] and batch["noisy"].shape == batch["clean"].shape
        _assert_aligned(batch, sidd)
        for name in ("clean", "noisy", "augmented"):
            assert torch.equal(batch[name], repeat[name]), name
    assert len({tuple(b["clean"].flatten()[:64].tolist()) for b in batches}) > 1  # random crops
    val = next(iter(build_val_loader(cfg, 0, 1, "cpu")))
    assert val["keys"] == [f"{SCENES[1]}_010"]
    _assert_aligned(val, sidd)


def test_a_damaged_clean_member_is_reported_not_fatal(sidd: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    prepare_paired_shards(sidd, out, ShardConfig(min_side=PATCH, val_fraction=0.0, workers=1))
    manifest = json.loads((out / "manifest.json").read_text())
    shard = out / manifest["splits"]["train"]["shards"][0]["name"]
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{SCENES[0]}_011.clean.png")
    data = bytearray(shard.read_bytes())
    start = member.offset_data + 40
    data[start : start + 200] = bytes(200)  # zeroes inside the PNG's image data
    shard.write_bytes(bytes(data))
    problems = verify_shards(out, workers=1)["problems"]
    assert any(p["member"] == f"{SCENES[0]}_011.clean.png" for p in problems)
    for backend in ("torch", "dali"):
        cfg = DataConfig(shards=str(out), backend=backend, patch_size=PATCH, batch_size_per_gpu=1,
                         num_workers=0, num_threads=1, shuffle_buffer=4, seed=0)  # fmt: skip
        loader = build_train_loader(cfg, 0, 1, "cpu")
        reports = []
        for _ in range(4):  # one epoch: every sample once
            batch = next(loader)
            reports += batch["bad_samples"]
            loader.exclude([bad.key for bad in batch["bad_samples"]])  # as the trainer does
        assert [(b.key, b.member) for b in reports] == [
            (f"{SCENES[0]}_011", f"{SCENES[0]}_011.clean.png")
        ], backend
