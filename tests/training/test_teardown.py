"""A run that ends exits 0 on every rank: nothing that owns a thread outlives ``jicd train``.

Threads left running into interpreter exit (gloo's worker and TCP-loop threads of a process
group that something still references, DALI's executor and prefetch threads) race the process's
static destructors: a rank that had finished cleanly could die there with SIGABRT ("Fatal
Python error: Aborted"), at random and mostly under load. So the test does not wait for that
race: it counts, in each rank, the native threads and child processes still alive once the
training command has returned — only the main thread may remain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_harness import SMOKE, child_env

from trainer.testing import make_shards

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

WORKER = Path(__file__).with_name("teardown_worker.py")


@pytest.mark.parametrize(
    "overrides",
    [
        ["engine.kind=deepspeed", "data.backend=dali"],
        ["engine.kind=ddp", "data.backend=torch", "data.num_workers=1"],
    ],
    ids=["deepspeed-dali", "ddp-torch-workers"],
)
def test_nothing_outlives_the_training_command(tmp_path: Path, overrides: list[str]) -> None:
    shards = make_shards(tmp_path)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(WORKER), str(tmp_path), "--config", str(SMOKE), f"data.shards={shards}",
        f"train.run_dir={tmp_path / 'run'}", "train.steps=2", "train.val_every=2", *overrides,
    ]  # fmt: skip
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["code"] == 0
        assert record["threads"] == [record["main"]], (rank, record["threads"])
        assert record["children"] == [], (rank, record["children"])
