"""Both training backends under a real 2-rank torchrun (gloo) with uneven shards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import make_mixed_shards

WORKER = Path(__file__).with_name("data_dist_worker.py")
HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    # 27 training samples in shards of 7/7/7/6: DALI splits them 14 + 13 between two ranks,
    # so with batch 7 the short rank only reaches two batches through DALI's padding.
    return make_mixed_shards(tmp_path_factory.mktemp("dist"), val_fraction=0.15)


def _run_two_ranks(shards: Path, backend: str, out: Path) -> list[dict]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--standalone", str(WORKER), str(shards), backend, str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [pytest.param("dali", marks=pytest.mark.skipif(not HAS_DALI, reason="no DALI")), "torch"],
)
def test_two_ranks_disjoint_equal_batches(
    uneven_shards: tuple[Path, dict], backend: str, tmp_path: Path
) -> None:
    shards, manifest = uneven_shards
    assert manifest["splits"]["train"]["num_samples"] == 27
    ranks = _run_two_ranks(shards, backend, tmp_path)
    assert ranks[0]["batches_per_epoch"] == ranks[1]["batches_per_epoch"] >= 1
    for epoch in range(2):
        seen = [{key for batch in r["epochs"][epoch] for key in batch} for r in ranks]
        assert all(len(batch) == 7 for r in ranks for batch in r["epochs"][epoch])
        assert not seen[0] & seen[1]  # disjoint samples within an epoch
    val = [r["val_indices"] for r in ranks]
    assert not set(val[0]) & set(val[1])
    assert sorted(val[0] + val[1]) == list(range(manifest["splits"]["val"]["num_samples"]))
