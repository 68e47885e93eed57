"""NT-Xent over a real 2-process gloo group equals one process on the concatenated batch.

Each rank scores its own 2n anchors against all 2N candidates, so: the mean of the rank losses is
the single-process loss; each rank's gradient on its own projections is W times the
single-process gradient of those rows (W = world size: every rank's loss reaches them through
the gather, and DDP's averaging divides by W); the DDP-averaged weight gradient is the
single-process one. The "local-gradient trick" must fail this test, so that nobody simplifies
the gather later.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nt_xent_worker import BATCH_PER_RANK, single_process_reference

WORLD_SIZE = 2
WORKER = Path(__file__).with_name("nt_xent_worker.py")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("nt_xent")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={WORLD_SIZE}",
        "--standalone", str(WORKER), str(out_dir),
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def rows_of(rank: int) -> slice:
    return slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)


@pytest.mark.distributed
@pytest.mark.slow
def test_global_gather_matches_single_process(rank_results):
    reference = single_process_reference(WORLD_SIZE)
    ranks = [result["global"] for result in rank_results]
    mean_loss = sum(r["loss"] for r in ranks) / WORLD_SIZE
    torch.testing.assert_close(mean_loss, reference["loss"], atol=1e-6, rtol=0)
    for rank, result in enumerate(ranks):
        for key in ("grad_noisy", "grad_augmented"):
            torch.testing.assert_close(
                result[key] / WORLD_SIZE, reference[key][rows_of(rank)], atol=1e-6, rtol=1e-5
            )
        torch.testing.assert_close(
            result["grad_weight"], reference["grad_weight"], atol=1e-6, rtol=1e-5
        )


@pytest.mark.distributed
@pytest.mark.slow
def test_local_gradient_trick_gives_wrong_gradients(rank_results):
    reference = single_process_reference(WORLD_SIZE)
    for rank, result in enumerate(rank_results):
        trick = result["local_trick"]
        error = (trick["grad_noisy"] / WORLD_SIZE - reference["grad_noisy"][rows_of(rank)]).abs()
        assert error.max() > 1e-2
        assert (trick["grad_weight"] - reference["grad_weight"]).abs().max() > 1e-2
