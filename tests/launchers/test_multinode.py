"""launch/train_multinode.sh: two "nodes" (two torchrun agents, one worker each) on loopback.

Both agents meet at one c10d rendezvous, exactly as two machines would; the run must finish and
the two nodes must have read disjoint samples (the trainer logs every consumed key when
``train.log_sample_keys=true``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_harness import SMOKE, child_env

from jicd.distributed import free_port
from trainer.testing import make_shards

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NODES = 2
STEPS = 4
TIMEOUT_S = 240


def start_node(node_rank: int, port: int, run_dir: Path, shards: Path) -> subprocess.Popen:
    """One node's launcher, in its own process group so a hang can be killed as a whole."""
    env = {
        **child_env(),
        "NNODES": str(NODES),
        "NODE_RANK": str(node_rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NPROC_PER_NODE": "1",
        "RDZV_ID": f"test-{port}",
        "TORCHRUN": str(Path(sys.executable).parent / "torchrun"),
    }
    overrides = [f"train.run_dir={run_dir}", f"data.shards={shards}", f"train.steps={STEPS}"]
    command = [str(REPO / "launch" / "train_multinode.sh"), "--config", str(SMOKE), *overrides]
    command.append("train.log_sample_keys=true")
    return subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def wait_all(nodes: list[subprocess.Popen]) -> list[str]:
    """Outputs of all nodes; kills every group and fails if one of them is not done in time."""
    try:
        return [node.communicate(timeout=TIMEOUT_S)[0] for node in nodes]
    except subprocess.TimeoutExpired:
        for node in nodes:
            os.killpg(node.pid, signal.SIGKILL)
        outputs = [node.communicate()[0][-3000:] for node in nodes]
        raise AssertionError("multi-node run hung:\n" + "\n---\n".join(outputs)) from None


PORT_CLASH = ("EADDRINUSE", "address already in use")


def run_two_nodes(root: Path, shards: Path, attempts: int = 3) -> tuple[Path, list, list[str]]:
    """Start both nodes on a port found free; another process may take that port before the
    rendezvous binds it (two nodes need a port known in advance), so retry on a clash."""
    for attempt in range(attempts):
        run_dir = root / f"run{attempt}"
        port = free_port()
        nodes = [start_node(rank, port, run_dir, shards) for rank in range(NODES)]
        outputs = wait_all(nodes)
        if not any(marker in out for out in outputs for marker in PORT_CLASH):
            return run_dir, nodes, outputs
    raise AssertionError(f"port clash in {attempts} attempts")


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("multinode")
    shards = make_shards(root)
    run_dir, nodes, outputs = run_two_nodes(root, shards)
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    manifest = json.loads((shards / "manifest.json").read_text())
    return {"run_dir": run_dir, "train_samples": manifest["splits"]["train"]["num_samples"]}


def consumed_keys(run_dir: Path, rank: int) -> list[str]:
    """Keys rank ``rank`` trained on, one per sample (lines are ``step<TAB>key``)."""
    lines = (run_dir / "keys" / f"rank{rank}.txt").read_text().splitlines()
    return [line.split("\t")[1] for line in lines]


def test_run_completes_as_one_two_process_job(two_node_run: dict) -> None:
    run_dir = two_node_run["run_dir"]
    assert json.loads((run_dir / "meta.json").read_text())["world_size"] == NODES
    assert (run_dir / "checkpoints" / f"step_{STEPS:08d}").is_dir()
    assert (run_dir / "export" / "model.pt").is_file()


def test_nodes_read_disjoint_samples(two_node_run: dict) -> None:
    run_dir = two_node_run["run_dir"]
    per_rank = [consumed_keys(run_dir, rank) for rank in range(NODES)]
    batch = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size_per_gpu"]
    # Within one epoch every sample is read once in total, so any overlap is a sharding bug.
    assert STEPS * batch * NODES <= two_node_run["train_samples"], "run spans several epochs"
    assert [len(keys) for keys in per_rank] == [STEPS * batch] * NODES
    assert all(len(set(keys)) == len(keys) for keys in per_rank)
    assert not set(per_rank[0]) & set(per_rank[1])
