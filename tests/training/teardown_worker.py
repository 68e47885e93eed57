"""One rank of the teardown check (launched by tests/training/test_teardown.py).

    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        tests/training/teardown_worker.py OUT_DIR --config CONFIG key=value ...

Runs ``jicd train`` in this process, then records what is still alive once it returned: the
native threads of the process (``/proc/self/task``) and its child processes. A thread still
running here runs into the interpreter's exit and the process's static destructors, where it
aborted ranks of clean runs at random.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def native_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:
            continue  # ended meanwhile
    return sorted(names)


def children() -> list[int]:
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


if __name__ == "__main__":
    from trainer.train import main

    out, argv = Path(sys.argv[1]), sys.argv[2:]
    code = main(argv)
    main_thread = Path("/proc/self/comm").read_text().strip()
    record = {"code": code, "main": main_thread, "threads": native_threads()}
    record["children"] = children()
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
