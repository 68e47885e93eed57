"""A real, throw-away Slurm cluster on this machine for tests.

`SlurmCluster(workdir, nodes=N)` writes a minimal ``slurm.conf`` into ``workdir`` (no munge:
``auth/none`` and ``cred/none``; its own ports; state, spool, pid and log files all inside
``workdir``), starts ``slurmctld`` and one ``slurmd`` per virtual node (``node1``...) in the
foreground as child processes, and waits until ``sinfo`` reports every node idle. ``stop()``
cancels every job and terminates the daemons by their pid.

Slurm itself comes from Debian's ``slurm-wlm`` package; `ensure_slurm_installed()` installs it with
apt when we are root (as in CI) and skips the calling test with a clear message otherwise.

Example:
    with SlurmCluster(tmp_path, nodes=2) as cluster:
        job_id = cluster.submit(["launch/slurm/train.sbatch"], env=extra_env)
        state = cluster.wait_for_job(job_id, timeout=120)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

APT_TIMEOUT_S = 300
# Jobs reach one of these and never leave it; REQUEUED/PENDING/RUNNING are transient.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def ensure_slurm_installed() -> None:
    """Install Debian's ``slurm-wlm`` if ``slurmctld`` is missing, or skip the test.

    The test cluster runs its daemons as root (``SlurmUser=root``) and installing needs apt-get,
    both true in CI; anywhere else the test is skipped with what would make it runnable.
    """
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs slurmctld/slurmd as root: run the tests as root")
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch"):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get: install slurm-wlm (22.05+)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def free_port() -> int:
    """Return a TCP port that is free on this machine right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_hostname() -> str:
    """This machine's short name (``hostname -s``), where every virtual node really runs."""
    return socket.gethostname().split(".")[0]


def node_lines(names: list[str], cpus: int) -> list[str]:
    """One NodeName line per virtual node: same host and address, each slurmd its own port."""
    host = short_hostname()
    return [
        f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} "
        f"CPUs={cpus} State=UNKNOWN"
        for name in names
    ]


def slurm_conf_text(workdir: Path, names: list[str], cpus: int) -> str:
    """Render a minimal slurm.conf whose every path lives under ``workdir``.

    ``auth/none`` + ``cred/none`` remove the need for a munge daemon (both still exist in
    Slurm 22.05). Slurm holds a requeued job until its old credential expires: ``cred_expire=5``
    (2 is rejected as invalid) makes that ~5 s instead of 120 s. ``proctrack/linuxproc`` +
    ``task/none`` avoid cgroups, which containers rarely delegate. ``MinJobAge`` keeps finished
    jobs visible to ``scontrol show job`` for the test; ``sched_interval=1`` starts them at once.
    Several nodes on one host work because Debian builds slurmd with multiple-slurmd support
    (``%n`` in the slurmd paths = the node name).
    """
    nodes = "\n".join(node_lines(names, cpus))
    return f"""\
ClusterName=jicdtest
SlurmctldHost={short_hostname()}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
AuthInfo=cred_expire=5
CredType=cred/none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
SlurmctldPort={free_port()}
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool/%n
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd-%n.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd-%n.log
ReturnToService=2
MinJobAge=3600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=10
{nodes}
PartitionName=debug Nodes={",".join(names)} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """One slurmctld + ``nodes`` slurmd (virtual nodes) on this machine, owned by a test.

    Args:
        workdir: Empty folder for slurm.conf, state, spool, pid and log files.
        nodes: Number of virtual nodes, named ``node1``, ``node2``, ...; the machine's cores are
            shared out between them.
        start_timeout: Seconds to wait for the nodes to come up idle.
    """

    def __init__(self, workdir: Path, nodes: int = 1, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.cpus_per_node = max(1, (os.cpu_count() or 1) // nodes)
        self.conf = self.workdir / "slurm.conf"
        self.start_timeout = start_timeout
        self._daemons: list[subprocess.Popen] = []
        self._daemon_logs: list = []

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (and, through sbatch, for the jobs)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write slurm.conf, start the daemons and wait until every node is idle."""
        (self.workdir / "state").mkdir(parents=True, exist_ok=True)
        for name in self.nodes:
            (self.workdir / "spool" / name).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf_text(self.workdir, self.nodes, self.cpus_per_node))
        # -D keeps each daemon in the foreground so that we own its pid; -c starts slurmctld clean.
        self._spawn(["slurmctld", "-D", "-c", "-f", str(self.conf)], "slurmctld.out")
        self._wait_until(self._controller_up, "slurmctld to answer")
        for name in self.nodes:
            self._spawn(["slurmd", "-D", "-f", str(self.conf), "-N", name], f"slurmd-{name}.out")
        self._wait_until(self._nodes_idle, f"nodes {', '.join(self.nodes)} to be idle")

    def stop(self) -> None:
        """Cancel every job, then terminate both daemons (slurmd first) by pid."""
        if self._daemons:
            self.run(["scancel", "--full", "--user", "root"], check=False)
        for proc in reversed(self._daemons):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for handle in self._daemon_logs:
            handle.close()
        self._daemons.clear()
        self._daemon_logs.clear()

    def run(self, cmd: list[str], check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster and return its stdout."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def submit(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> str:
        """``sbatch --parsable ARGS`` with extra environment; returns the job id."""
        full_env = {**self.env, **(env or {})}
        done = subprocess.run(
            ["sbatch", "--parsable", *args],
            env=full_env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...)."""
        line = self.run(["scontrol", "show", "job", "-o", job_id]).strip()
        pairs = (item.split("=", 1) for item in line.split() if "=" in item)
        return dict(pairs)

    def wait_for_job(self, job_id: str, timeout: float, restarts: int = 0) -> dict[str, str]:
        """Wait until the job is final and has been restarted at least ``restarts`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") in FINAL_STATES and int(info.get("Restarts", 0)) >= restarts:
                return info
            time.sleep(1)
        raise TimeoutError(
            f"job {job_id} not finished after {timeout}s: {self.job_info(job_id)}\n{self.logs()}"
        )

    def wait_for_state(self, job_id: str, state: str, timeout: float) -> dict[str, str]:
        """Wait until the job is in ``state`` (e.g. RUNNING)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") == state:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} never reached {state}: {self.job_info(job_id)}")

    def logs(self) -> str:
        """The tail of both daemon logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", *(f"slurmd-{node}.log" for node in self.nodes)):
            path = self.workdir / name
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def _spawn(self, cmd: list[str], out_name: str) -> None:
        out = open(self.workdir / out_name, "wb")  # noqa: SIM115 - closed in stop()
        self._daemon_logs.append(out)
        proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self._daemons.append(proc)

    def _controller_up(self) -> bool:
        ping = subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True, timeout=10)
        return ping.returncode == 0

    def _nodes_idle(self) -> bool:
        states = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).split()
        return len(states) == len(self.nodes) and all(s.rstrip("*") == "idle" for s in states)

    def _wait_until(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for proc in self._daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode})\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}\n{self.logs()}")
