"""DALI loader facts the GPU path relies on, checked with the CPU decoder.

* Batches are zero-copy views of DALI's buffers (dynamic executor): a batch the trainer still
  holds must not be overwritten by the following ones.
* The loader state records the decoder ("cpu" / "mixed"): a state saved by one cannot drive the
  other's pipeline, so restoring it into a pipeline with another decoder is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import HAS_DALI, PATCH, make_mixed_shards

from data_pipeline import DataConfig, build_train_loader
from jicd.errors import UserError

pytestmark = pytest.mark.skipif(not HAS_DALI, reason="needs nvidia-dali")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    shards: Path = make_mixed_shards(tmp_path_factory.mktemp("dali_state"))[0]
    return DataConfig(
        shards=str(shards), backend="dali", patch_size=PATCH, batch_size_per_gpu=2,
        num_threads=1, seed=0,
    )  # fmt: skip


def test_a_held_batch_survives_the_next_ones(config: DataConfig) -> None:
    loader = build_train_loader(config, 0, 1, "cpu")
    first = next(loader)
    copies = {k: first[k].clone() for k in ("clean", "augmented")}
    later = [next(loader) for _ in range(2 * loader.batches_per_epoch)]  # two epochs
    assert all(first[k].equal(copies[k]) for k in copies)
    assert not later[0]["clean"].equal(first["clean"])  # the check could see a change


def test_state_records_the_decoder_and_refuses_another(config: DataConfig) -> None:
    loader = build_train_loader(config, 0, 1, "cpu")
    next(loader)
    state = loader.state_dict()
    assert state["decoder"] == "cpu"
    build_train_loader(config, 0, 1, "cpu").load_state_dict(state)  # same decoder: fine
    with pytest.raises(UserError, match="saved with the 'mixed' JPEG decoder"):
        build_train_loader(config, 0, 1, "cpu").load_state_dict(state | {"decoder": "mixed"})
    legacy = {k: v for k, v in state.items() if k != "decoder"}  # states of CPU-only runs
    build_train_loader(config, 0, 1, "cpu").load_state_dict(legacy)
