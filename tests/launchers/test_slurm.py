"""launch/slurm/*.sbatch on a real Slurm: slurmctld + two slurmd ("nodes") started by the test.

One training job runs the smoke config on 2 nodes x 1 CPU worker. While it trains, the test
sends the pre-emption warning exactly as ``--signal=B:USR1@120`` would (SIGUSR1 to the batch
shell only); the script must forward it to the workers on both nodes, which checkpoint and exit,
then requeue the job, and the requeued job must resume from that checkpoint and finish. The
exported model is then evaluated with launch/slurm/evaluate.sbatch.

Needs root (to install Debian's slurm-wlm with apt when missing); skipped otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, ensure_slurm_installed
from train_harness import SMOKE, child_env, metrics

from trainer.testing import make_image, make_shards

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
NODES = 2
STEPS = 20
# The periodic checkpoint never fires before the signal, so the resume point can only come from
# the checkpoint written on SIGUSR1.
OVERRIDES = [f"train.steps={STEPS}", "checkpoint.every=100", "train.val_every=100"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    ensure_slurm_installed()
    with SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=NODES) as running:
        yield running


@pytest.fixture(scope="module")
def preempted_job(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Submit train.sbatch, pre-empt it once mid-run, and follow it to completion."""
    root = tmp_path_factory.mktemp("train")
    run_dir, log = root / "run", root / "slurm-%j.out"
    env = {
        **child_env(),
        "CONFIG": str(SMOKE),
        "RUN_DIR": str(run_dir),
        "GPUS_PER_NODE": "1",
        "TORCHRUN": str(VENV_BIN / "torchrun"),
    }
    args = [f"--nodes={NODES}", f"--cpus-per-task={cluster.cpus_per_node}", f"--output={log}"]
    args.append("launch/slurm/train.sbatch")
    job_id = cluster.submit([*args, f"data.shards={make_shards(root)}", *OVERRIDES], env, REPO)
    wait_until(lambda: len(metrics(run_dir)) >= 2, 180, "the first training steps", cluster)
    cluster.run(["scancel", "--signal=USR1", "--batch", job_id])
    # The second run needs 10+ s of imports before it writes anything: time enough to see what
    # the first run left.
    wait_until(lambda: requeued(cluster, job_id), 120, "the job to requeue itself", cluster)
    first_run = {"rows": len(metrics(run_dir)), "latest": latest_checkpoint(run_dir)}
    info = cluster.wait_for_job(job_id, timeout=240, restarts=1)
    output = Path(str(log).replace("%j", job_id)).read_text()
    return {"id": job_id, "info": info, "run_dir": run_dir, "first_run": first_run, "log": output}


def wait_until(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")
        time.sleep(0.2)


def requeued(cluster: SlurmCluster, job_id: str) -> bool:
    return int(cluster.job_info(job_id).get("Restarts", 0)) >= 1


def latest_checkpoint(run_dir: Path) -> str | None:
    latest = run_dir / "checkpoints" / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def test_job_completes_after_one_requeue(preempted_job: dict) -> None:
    info = preempted_job["info"]
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), (
        preempted_job["log"][-4000:]
    )
    assert f"{NODES} node(s) x 1 worker(s) on node[1-{NODES}]" in preempted_job["log"]
    assert "SIGUSR1: asking the workers to checkpoint" in preempted_job["log"]
    assert f"requeueing job {preempted_job['id']}" in preempted_job["log"]


def test_run_directory_is_complete(preempted_job: dict) -> None:
    run_dir = preempted_job["run_dir"]
    assert latest_checkpoint(run_dir) is not None
    assert (run_dir / "checkpoints" / f"step_{STEPS:08d}").is_dir()
    assert (run_dir / "export" / "model.pt").is_file()
    assert metrics(run_dir)[-1]["step"] == STEPS
    assert json.loads((run_dir / "meta.json").read_text())["world_size"] == NODES


def test_requeued_job_resumes_from_the_signal_checkpoint(preempted_job: dict) -> None:
    first = preempted_job["first_run"]
    assert first["latest"] is not None, "no checkpoint was written on SIGUSR1"
    checkpointed_step = int(first["latest"].rsplit("_", 1)[-1])
    assert 0 < checkpointed_step < STEPS, "the signal arrived after training had finished"
    rows = metrics(preempted_job["run_dir"])
    before, after = rows[: first["rows"]], rows[first["rows"] :]
    assert before[-1]["step"] == checkpointed_step
    assert [row["step"] for row in after] == list(range(checkpointed_step + 1, STEPS + 1))


def test_evaluate_sbatch_scores_the_export(cluster, preempted_job, tmp_path: Path) -> None:
    images, results = tmp_path / "images", tmp_path / "results"
    images.mkdir()
    for seed in range(2):
        make_image(images / f"img{seed}.png", 64, 64, seed=seed)
    env = {**child_env(), "NPROC": "1", "TORCHRUN": str(VENV_BIN / "torchrun")}
    export = preempted_job["run_dir"] / "export" / "model.pt"
    args = [f"--output={tmp_path}/eval-%j.out", "--cpus-per-task=1", "launch/slurm/evaluate.sbatch"]
    args += ["--checkpoint", str(export), "--dataset", f"gen={images}", "--levels", "1"]
    job_id = cluster.submit([*args, "--output", str(results)], env, REPO)
    info = cluster.wait_for_job(job_id, timeout=180)
    log = (tmp_path / f"eval-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED", log[-4000:]
    written = sorted(path.name for path in results.glob("*level1.json"))
    assert written, f"no results in {results}: {log[-2000:]}"
