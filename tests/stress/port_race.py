"""Single-process jobs started together on one node never collide on a port.

ROUNDS rounds of 4 concurrent processes, each initialising jicd's process group as a plain
process (``init_distributed``: an in-process store, no TCP port), running an all-reduce and
tearing down — while a hog thread binds and releases ephemeral loopback ports as fast as it can,
as other jobs on a busy node do. Before the fix (a port found free, then bound by the store) this
failed with EADDRINUSE. Usage: ``python tests/stress/port_race.py [ROUNDS]`` (make stress).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import torch, torch.distributed as dist
from jicd import distributed as D
D.init_distributed(device="cpu")
t = torch.ones(1); dist.all_reduce(t); assert t.item() == 1.0
D.cleanup()
print("ok")
"""


def hog(stop: threading.Event) -> None:
    held: list[socket.socket] = []
    while not stop.is_set():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        held.append(sock)
        if len(held) > 64:
            held.pop(0).close()
    for sock in held:
        sock.close()


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    stop, failures, started = threading.Event(), 0, time.time()
    threading.Thread(target=hog, args=(stop,), daemon=True).start()
    for r in range(rounds):
        jobs = [
            subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(4)
        ]  # fmt: skip
        for job in jobs:
            out, _ = job.communicate(timeout=300)
            if job.returncode != 0 or "ok" not in out:
                failures += 1
                print(f"round {r + 1}: exit {job.returncode}\n{out[-800:]}", flush=True)
    stop.set()
    print(f"RESULT: {rounds} rounds x 4 jobs, {failures} failed, {time.time() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
