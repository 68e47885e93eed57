"""Undecodable samples in the loaders (both backends): reported, excluded, never read again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from data_fixtures import BACKENDS, PATCH, corrupt_in_place, make_mixed_shards

from data_pipeline import DataConfig, build_train_loader, build_val_loader
from data_pipeline.manifest import SampleLocation, filtered_split, load_split
from data_pipeline.undecodable import BadSample, BadSampleLog, check_limits, parse_dali_error
from jicd.errors import UserError

BATCH = 3


@pytest.fixture(scope="module")
def damaged(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, SampleLocation, SampleLocation]:
    """Shards with one corrupted PNG member in train and one in val."""
    shards, _ = make_mixed_shards(tmp_path_factory.mktemp("bad"))
    train = [
        loc for loc in load_split(str(shards), "train").locations() if loc.member.endswith(".png")
    ]
    val = [loc for loc in load_split(str(shards), "val").locations() if loc.member.endswith(".png")]
    corrupt_in_place(train[len(train) // 2])
    corrupt_in_place(val[0])
    return shards, train[len(train) // 2], val[0]


def _config(shards: Path, backend: str) -> DataConfig:
    return DataConfig(
        shards=str(shards), backend=backend, patch_size=PATCH, batch_size_per_gpu=BATCH,
        val_batch_size=4, num_threads=1, num_workers=0, seed=3,
    )  # fmt: skip


def _epochs_until_reported(loader, epochs: int) -> tuple[list[BadSample], list[str]]:
    """Read ``epochs`` epochs; exclude what is reported, as the trainer does on every rank."""
    reported, keys = [], []
    for _ in range(epochs * loader.batches_per_epoch + 2):
        batch = next(loader)
        if batch["bad_samples"]:
            reported += batch["bad_samples"]
            loader.exclude([bad.key for bad in batch["bad_samples"]])
            continue
        assert batch["clean"].shape == (BATCH, 3, PATCH, PATCH)
        keys += batch["keys"]
    return reported, keys


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_corrupted_member_is_reported_once_and_excluded(damaged, backend: str) -> None:
    shards, bad, _ = damaged
    loader = build_train_loader(_config(shards, backend), 0, 1, "cpu")
    reported, keys = _epochs_until_reported(loader, epochs=3)
    assert [(r.key, r.shard, r.member, r.offset) for r in reported] == [
        (bad.key, Path(bad.tar_path).name, bad.member, bad.offset)
    ]
    assert bad.key not in keys
    if backend == "torch":
        assert "broken data stream" in reported[0].error or "decod" in reported[0].error.lower()
    else:
        assert reported[0].error.startswith("DALI: ")  # its own words (+ PIL's when it named none)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loader_built_with_the_exclusions_never_reads_the_sample(damaged, backend) -> None:
    shards, bad, _ = damaged
    loader = build_train_loader(_config(shards, backend), 0, 1, "cpu", excluded=[bad.key])
    for _ in range(3 * loader.batches_per_epoch):
        batch = next(loader)
        assert not batch["bad_samples"] and bad.key not in batch["keys"]


def test_torch_resume_after_an_exclusion_is_exact(damaged) -> None:
    shards, bad, _ = damaged
    cfg = _config(shards, "torch")
    loader = build_train_loader(cfg, 0, 1, "cpu")
    _epochs_until_reported(loader, epochs=1)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(6)]
    resumed = build_train_loader(cfg, 0, 1, "cpu", excluded=[bad.key])
    resumed.load_state_dict(state)
    for want, got in zip(expected, (next(resumed) for _ in range(6)), strict=True):
        assert got["keys"] == want["keys"] and torch.equal(got["clean"], want["clean"])


def test_torch_resume_from_before_the_exclusion_marks_the_sample_unread(damaged) -> None:
    """A checkpoint older than the exclusion: the same batch is dropped, the file not read."""
    shards, bad, _ = damaged
    cfg = _config(shards, "torch")
    first = build_train_loader(cfg, 0, 1, "cpu")
    state = first.state_dict()
    reported, _ = _epochs_until_reported(first, epochs=1)
    # The file is still damaged: had the sample been read, the error would be a decode failure.
    resumed = build_train_loader(cfg, 0, 1, "cpu", excluded=[bad.key])
    resumed.load_state_dict(state)
    again = [b for _ in range(resumed.batches_per_epoch) for b in next(resumed)["bad_samples"]]
    assert [b.key for b in again] == [bad.key] == [r.key for r in reported]
    assert again[0].error == "excluded earlier in this run"


def test_the_val_loader_leaves_an_undecodable_sample_out(damaged) -> None:
    shards, _, bad = damaged
    cfg = _config(shards, "torch")
    loader = build_val_loader(cfg, 0, 1, "cpu")
    keys = [key for batch in loader for key in batch["keys"]]
    assert bad.key not in keys and len(keys) == load_split(str(shards), "val").num_samples - 1
    assert [b.key for b in loader.bad_samples] == [bad.key]
    loader.bad_samples = []
    loader.exclude([bad.key])
    assert [key for batch in loader for key in batch["keys"]] == keys
    assert loader.bad_samples == []


def test_the_bad_sample_log_persists_each_sample_once(tmp_path: Path) -> None:
    path = tmp_path / "bad_samples.json"
    log = BadSampleLog(path)
    one = BadSample("train", "k1", "train-000001.tar", "k1.png", 1536, "OSError: broken")
    assert log.add([one, one]) == [one] and log.add([one]) == []
    log.save()
    again = BadSampleLog(path)
    assert (
        again.samples == [one] and again.excluded("train") == {"k1"} and not again.excluded("val")
    )
    path.write_text("{not json")
    with pytest.raises(UserError, match="unreadable bad-sample list"):
        BadSampleLog(path)


def test_the_limits_stop_with_one_line(tmp_path: Path) -> None:
    log = BadSampleLog(tmp_path / "bad.json")
    log.add([BadSample("train", f"k{i}", "s.tar", f"k{i}.png", i, "e") for i in range(3)])
    check_limits(log, num_train=300, in_a_row=2, max_fraction=0.01, max_in_a_row=10)
    with pytest.raises(UserError, match="3 of 200 training samples are undecodable"):
        check_limits(log, num_train=200, in_a_row=2, max_fraction=0.01, max_in_a_row=10)
    with pytest.raises(UserError, match="11 training batches in a row"):
        check_limits(log, num_train=300, in_a_row=11, max_fraction=0.01, max_in_a_row=10)


def test_dali_error_parsing_and_filtered_indexes(damaged, tmp_path: Path) -> None:
    message = (
        "Critical error in pipeline:\nError in CPU operator `nvidia.dali.fn.decoders.image_crop`"
        "\nencountered:\n\nFailed to decode sample #1 : /x/y/train-000001.tar:25088:img_007.png"
        "\nCurrent pipeline object is no longer valid."
    )
    assert parse_dali_error(message) == ("/x/y/train-000001.tar", 25088, "img_007.png")
    assert parse_dali_error("Critical error: out of memory") is None
    shards, bad, _ = damaged
    files = load_split(str(shards), "train")
    kept = filtered_split(files, lambda key: key != bad.key, tmp_path)
    assert kept.num_samples == files.num_samples - 1
    assert bad.key not in {loc.key for loc in kept.locations()}
    assert sum(p.startswith(str(tmp_path)) for p in kept.index_paths) == 1  # one index rewritten
    assert replace(files, index_paths=files.index_paths) == files  # the source is untouched
