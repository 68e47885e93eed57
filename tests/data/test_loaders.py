"""Training / validation loaders of both backends on CPU: contract, crops, views, exact resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import BACKENDS, HAS_DALI, PATCH, make_mixed_shards
from numpy.lib.stride_tricks import sliding_window_view

from data_pipeline import AugmentConfig, DataConfig, build_train_loader, build_val_loader
from data_pipeline.manifest import load_split
from data_pipeline.torch_loader import read_image

BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mixed_shards(tmp_path_factory.mktemp("loaders"))[0]


def _config(shards: Path, backend: str, **overrides) -> DataConfig:
    cfg = DataConfig(
        shards=str(shards),
        backend=backend,
        patch_size=PATCH,
        batch_size_per_gpu=BATCH,
        val_batch_size=3,
        num_threads=1,
        num_workers=0,
    )
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return cfg


def _is_exact_crop(crop: torch.Tensor, source: np.ndarray) -> bool:
    """Whether ``crop (3, P, P)`` in [0, 1] equals some ``P x P`` window of ``source (H, W, 3)``."""
    target = (crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    rows = sliding_window_view(source, (PATCH, 3), axis=(1, 2))[:, :, 0]  # (H, W-P+1, P, 3)
    candidates = np.argwhere((rows == target[0]).all(axis=(2, 3)))  # first row matches
    return any(np.array_equal(source[y : y + PATCH, x : x + PATCH], target) for y, x in candidates)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample correlation of the grey levels of ``(B, 3, P, P)`` batches."""
    a, b = a.mean(1).flatten(1), b.mean(1).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_contract_and_one_epoch_covers_each_sample_once(shards: Path, backend: str) -> None:
    loader = build_train_loader(replace(_config(shards, backend), seed=0), 0, 1, "cpu")
    train = {loc.key for loc in load_split(str(shards), "train").locations()}
    assert loader.batches_per_epoch == len(train) // BATCH
    keys = []
    for _ in range(loader.batches_per_epoch):
        batch = next(loader)
        for name in ("clean", "augmented"):
            assert batch[name].shape == (BATCH, 3, PATCH, PATCH)
            assert batch[name].dtype == torch.float32 and batch[name].device.type == "cpu"
            assert batch[name].min() >= 0.0 and batch[name].max() <= 1.0
        keys += batch["keys"]
    assert len(set(keys)) == len(keys) and set(keys) <= train
    assert len(next(loader)["keys"]) == BATCH  # the iteration continues into the next epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_clean_is_an_exact_crop_of_the_source(shards: Path, backend: str) -> None:
    locations = {loc.key: loc for loc in load_split(str(shards), "train").locations()}
    batch = next(build_train_loader(replace(_config(shards, backend), seed=3), 0, 1, "cpu"))
    for crop, key in zip(batch["clean"], batch["keys"], strict=True):
        source = np.array(read_image(locations[key]))
        assert _is_exact_crop(crop, source)  # pixel-exact (DALI decodes JPEG as PIL does)


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmented_view_differs_but_shares_content(shards: Path, backend: str) -> None:
    loader = build_train_loader(
        replace(_config(shards, backend, batch_size_per_gpu=8), seed=0), 0, 1, "cpu"
    )
    batch = next(loader)
    differences = (batch["augmented"] - batch["clean"]).abs().flatten(1).mean(1)
    assert (differences > 0.02).all()
    mild = AugmentConfig(crop_scale=[0.7, 1.0], flip_probability=0.0, hue=0.0)
    cfg = _config(shards, backend, batch_size_per_gpu=8, augment=mild)
    loader = build_train_loader(replace(cfg, seed=0), 0, 1, "cpu")
    first, second = next(loader), next(loader)
    own = _pearson(first["augmented"], first["clean"])
    unrelated = _pearson(first["augmented"], second["clean"])
    assert own.min() > 0.4 and own.mean() > unrelated.abs().mean() + 0.3


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_only_view_is_the_mirrored_clean_crop(shards: Path, backend: str) -> None:
    identity = AugmentConfig(
        flip_probability=1.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        crop_scale=[1.0, 1.0],
        crop_ratio=[1.0, 1.0],
    )
    batch = next(
        build_train_loader(replace(_config(shards, backend, augment=identity), seed=0), 0, 1, "cpu")
    )
    assert torch.allclose(batch["augmented"], batch["clean"].flip(-1), atol=1.5 / 255)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_gives_the_same_next_batches(shards: Path, backend: str) -> None:
    cfg = _config(shards, backend)
    loader = build_train_loader(replace(cfg, seed=5), 0, 1, "cpu")
    for _ in range(loader.batches_per_epoch - 2):  # stop near the end of epoch 0
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(5)]  # runs across the epoch boundary
    resumed = build_train_loader(replace(cfg, seed=5), 0, 1, "cpu")
    resumed.load_state_dict(state)
    for want, got in zip(expected, (next(resumed) for _ in range(5)), strict=True):
        assert got["keys"] == want["keys"]
        assert torch.equal(got["clean"], want["clean"])
        assert torch.equal(got["augmented"], want["augmented"])
    other = "torch" if backend == "dali" else "dali"
    with pytest.raises(ValueError, match="loader state is for backend"):
        resumed.load_state_dict({**state, "backend": other})
    with pytest.raises(ValueError, match="loader state is for rank 1"):
        resumed.load_state_dict({**state, "rank": 1})


def test_torch_loader_is_independent_of_worker_count(shards: Path) -> None:
    serial = build_train_loader(replace(_config(shards, "torch"), seed=1), 0, 1, "cpu")
    parallel = build_train_loader(
        replace(_config(shards, "torch", num_workers=2), seed=1), 0, 1, "cpu"
    )
    for _ in range(2):
        a, b = next(serial), next(parallel)
        assert a["keys"] == b["keys"] and torch.equal(a["augmented"], b["augmented"])


def test_val_loader_center_crops_with_strided_positions(shards: Path) -> None:
    val = load_split(str(shards), "val").locations()
    seen = {}
    for rank in range(2):
        for batch in build_val_loader(_config(shards, "auto"), rank, 2, "cpu"):
            assert batch["clean"].shape[1:] == (3, PATCH, PATCH)
            indices = batch["index"].tolist()
            for crop, key, index in zip(batch["clean"], batch["keys"], indices, strict=True):
                assert index % 2 == rank and key == val[index].key
                seen[index] = crop
    assert sorted(seen) == list(range(len(val)))
    source = np.array(read_image(val[0]))
    top, left = round((source.shape[0] - PATCH) / 2), round((source.shape[1] - PATCH) / 2)
    expected = torch.from_numpy(source[top : top + PATCH, left : left + PATCH]).permute(2, 0, 1)
    assert torch.equal(seen[0], expected.float() / 255)


def test_config_errors(shards: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        DataConfig(shards=str(shards), backend="jax")
    with pytest.raises(ValueError, match="exceeds the shards' min_side"):
        build_train_loader(_config(shards, "torch", patch_size=128), 0, 1, "cpu")
    with pytest.raises(ValueError, match="needs at least"):
        build_train_loader(_config(shards, "torch", batch_size_per_gpu=20), 0, 2, "cpu")
    with pytest.raises(ValueError, match="no manifest.json"):
        build_train_loader(_config(shards.parent, "torch"), 0, 1, "cpu")


def test_torch_state_of_two_ranks_continues_on_one_with_the_same_global_batches(shards) -> None:
    two = [
        build_train_loader(_config(shards, "torch", batch_size_per_gpu=2), r, 2, "cpu")
        for r in (0, 1)
    ]
    for _ in range(3):
        for loader in two:
            next(loader)
    state = two[0].state_dict()
    expected = [[next(loader) for loader in two] for _ in range(4)]  # crosses an epoch end
    one = build_train_loader(_config(shards, "torch", batch_size_per_gpu=4), 0, 1, "cpu")
    one.load_state_dict(state)
    for pair in expected:
        got = next(one)
        want = {key: crop for b in pair for key, crop in zip(b["keys"], b["clean"], strict=True)}
        assert sorted(got["keys"]) == sorted(want)  # the same samples...
        for key, crop in zip(got["keys"], got["clean"], strict=True):
            assert torch.equal(crop, want[key])  # ...with the same crops


@pytest.mark.skipif(not HAS_DALI, reason="DALI not installed")
def test_dali_state_of_two_ranks_continues_on_one_at_the_same_epoch_and_fraction(shards) -> None:
    cfg = _config(shards, "dali", batch_size_per_gpu=2)
    rank0 = build_train_loader(cfg, 0, 2, "cpu")
    for _ in range(2):
        next(rank0)
    state = rank0.state_dict()
    fraction = state["batch"] / state["batches_per_epoch"]
    one = build_train_loader(_config(shards, "dali", batch_size_per_gpu=4), 0, 1, "cpu")
    one.load_state_dict(state)
    resumed = one.state_dict()
    assert resumed["epoch"] == state["epoch"] and resumed["remainder"]["fraction"] == fraction
    seen = []
    while True:
        batch = next(one)
        if one.state_dict()["epoch"] != state["epoch"]:
            break  # this batch already opened the next epoch
        assert len(batch["keys"]) == 4
        seen += batch["keys"]
    train = load_split(str(shards), "train").num_samples
    assert abs(len(seen) - (1 - fraction) * train) <= 4  # the rest of the epoch, by size
    assert one.state_dict()["remainder"] is None  # then full epochs again


def test_per_batch_augmentation_draws_one_parameter_set_per_batch(shards: Path) -> None:
    """The authors' variant: one brightness factor (and flip) for every view of a batch."""
    brightness_only = AugmentConfig(
        brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0, flip_probability=0.0,
        crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0],
    )  # fmt: skip

    def factors(per_batch: bool) -> torch.Tensor:
        augment = replace(brightness_only, per_batch=per_batch)
        batch = next(build_train_loader(_config(shards, "torch", augment=augment), 0, 1, "cpu"))
        # brightness scales every pixel; dark pixels (no clipping at 1) give the factor
        clean, view = batch["clean"], batch["augmented"]
        mask = clean < 0.5
        pairs = zip(clean, view, mask, strict=True)
        return torch.stack([v[m].sum() / c[m].sum() for c, v, m in pairs])

    shared, separate = factors(True), factors(False)
    assert float(shared.max() - shared.min()) < 0.02
    assert float(separate.max() - separate.min()) > 0.05
    per_batch = replace(brightness_only, per_batch=True)
    with pytest.raises(ValueError, match="needs data.backend=torch"):
        build_train_loader(_config(shards, "dali", augment=per_batch), 0, 1, "cpu")
