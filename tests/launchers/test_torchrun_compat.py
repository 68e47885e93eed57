"""train_multinode.sh passes only the flags the installed torchrun knows, and keeps SIGUSR1.

The flag choice is tested against ``torchrun --help`` texts of older releases (fixtures/) and the
installed one; the fallback for a torchrun without ``--signals-to-handle`` runs for real: a fake
torchrun that prints the 2.6 help, rejects the new flags like argparse does, and starts one
worker process; SIGUSR1 sent to the launcher must reach that worker, which exits 0.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
COMPAT = ROOT / "launch" / "torchrun_compat.sh"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def flags_for(help_text: str) -> list[str]:
    done = subprocess.run(
        ["bash", "-c", f'source "{COMPAT}"; torchrun_flags "$(cat)" 45'],
        input=help_text, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_torch_2_6_gets_no_signal_flags() -> None:
    assert flags_for((FIXTURES / "torchrun_help_2.6.txt").read_text()) == []


def test_torch_2_9_gets_signals_but_no_shutdown_timeout() -> None:
    assert flags_for((FIXTURES / "torchrun_help_2.9.txt").read_text()) == [
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    ]


def test_installed_torchrun_gets_both_and_accepts_them() -> None:
    help_text = subprocess.run(
        [str(TORCHRUN), "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    flags = flags_for(help_text)
    assert flags == [
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--shutdown-timeout=45",
    ]


FAKE_TORCHRUN = """#!/usr/bin/env bash
# torch 2.6's torchrun, as far as the launcher can tell: its help, its argparse refusal.
if [[ "$1" == "--help" ]]; then cat "{help}"; exit 0; fi
for arg in "$@"; do
    case "$arg" in
        --signals-to-handle*|--shutdown-timeout*)
            echo "torchrun: error: unrecognized arguments: $arg" >&2; exit 2;;
    esac
done
echo "$@" > "{out}/args"
"{python}" "{out}/worker.py" &
wait $!
"""

WORKER = """import os, signal, sys, time
def stop(signum, frame):
    open(os.path.join({out!r}, "got_usr1"), "w").write("checkpointed")
    sys.exit(0)
signal.signal(signal.SIGUSR1, stop)
open(os.path.join({out!r}, "ready"), "w").write(str(os.getpid()))
time.sleep(60)
sys.exit(3)
"""


@pytest.mark.slow
def test_old_torchrun_gets_usr1_forwarded_by_the_launcher(tmp_path: Path) -> None:
    fake = tmp_path / "torchrun"
    fake.write_text(
        FAKE_TORCHRUN.format(
            help=FIXTURES / "torchrun_help_2.6.txt", out=tmp_path, python=sys.executable
        )
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "worker.py").write_text(WORKER.format(out=str(tmp_path)))
    env = dict(os.environ, TORCHRUN=str(fake), NPROC_PER_NODE="1")
    launcher = subprocess.Popen(
        ["bash", str(ROOT / "launch" / "train_multinode.sh"), "--config", "x.yaml"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert launcher.poll() is None, launcher.stderr.read()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        launcher.send_signal(signal.SIGUSR1)
        assert launcher.wait(timeout=30) == 0, launcher.stderr.read()
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert (tmp_path / "got_usr1").read_text() == "checkpointed"
    args = (tmp_path / "args").read_text()
    assert "--rdzv-backend=c10d" in args and "--signals-to-handle" not in args
    assert "forwarding SIGUSR1 itself" in launcher.stderr.read()


# --------------------------------------------------------------- the launcher's exit status
@pytest.mark.slow
@pytest.mark.distributed
def test_a_stop_signal_with_this_torchrun_checkpoints_and_exits_0(tmp_path: Path) -> None:
    # torchrun >= 2.9 forwards SIGUSR1 to the workers, which checkpoint and exit 0, and then
    # exits 1 itself (SignalException): the launcher must report the clean stop as 0.
    from train_harness import SMOKE, child_env, metrics

    from trainer.testing import make_shards

    shards, run_dir = make_shards(tmp_path), tmp_path / "run"
    env = {**child_env(), "NPROC_PER_NODE": "1", "TORCHRUN": str(TORCHRUN)}
    env["MASTER_PORT"] = "0"  # one node: the rendezvous binds a port of the kernel's choosing
    launcher = subprocess.Popen(
        ["bash", str(ROOT / "launch" / "train_multinode.sh"), "--config", str(SMOKE),
         f"data.shards={shards}", f"train.run_dir={run_dir}", "train.steps=100000",
         "train.val_every=0", "checkpoint.every=100000", "logging.tensorboard=false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ((run_dir / "metrics.jsonl").is_file() and metrics(run_dir)):
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no training step was logged"
            time.sleep(0.5)
        launcher.send_signal(signal.SIGUSR1)
        status = launcher.wait(timeout=180)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    stderr = launcher.stderr.read()
    assert status == 0, stderr[-3000:]
    assert "all 1 worker(s) of this node checkpointed and exited 0" in stderr
    step = metrics(run_dir)[-1]["step"]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{step:08d}"


NEW_TORCHRUN = """#!/usr/bin/env bash
# torch >= 2.9's torchrun, as far as the launcher can tell: it forwards SIGUSR1 to its worker and
# then exits 1 (SignalException), whatever the worker did.
if [[ "$1" == "--help" ]]; then cat "{help}"; exit 0; fi
"{python}" "{out}/worker.py" &
worker=$!
trap 'kill -USR1 $worker; wait $worker; exit 1' USR1
wait $worker
"""

CRASHING_WORKER = """import os, signal, sys, time
def stop(signum, frame):
    os._exit(1)  # dies before its checkpoint: no exit report
signal.signal(signal.SIGUSR1, stop)
open(os.path.join({out!r}, "ready"), "w").write(str(os.getpid()))
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["clean", "crashing"])
def test_the_exit_status_after_a_stop_follows_the_workers(tmp_path: Path, worker: str) -> None:
    fake = tmp_path / "torchrun"
    fake.write_text(
        NEW_TORCHRUN.format(help=FIXTURES / "torchrun_help_2.9.txt", out=tmp_path,
                            python=sys.executable)
    )  # fmt: skip
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    # The clean worker reports as launch/train.py does after its checkpoint.
    clean = WORKER.replace(
        'open(os.path.join({out!r}, "got_usr1"), "w").write("checkpointed")',
        "from jicd.distributed import report_clean_exit; report_clean_exit(7)",
    )
    (tmp_path / "worker.py").write_text((clean if worker == "clean" else CRASHING_WORKER).format(
        out=str(tmp_path)
    ))  # fmt: skip
    env = dict(os.environ, TORCHRUN=str(fake), NPROC_PER_NODE="1", PYTHONPATH=str(ROOT))
    launcher = subprocess.Popen(
        ["bash", str(ROOT / "launch" / "train_multinode.sh"), "--config", "x.yaml"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert launcher.poll() is None, launcher.stderr.read()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        launcher.send_signal(signal.SIGUSR1)
        status = launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    stderr = launcher.stderr.read()
    if worker == "clean":
        assert status == 0, stderr
    else:
        assert status == 1 and "only 0 of 1 worker(s) checkpointed" in stderr, (status, stderr)
