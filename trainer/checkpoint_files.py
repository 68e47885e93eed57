"""What a checkpoint directory holds and whether it is intact: ``checksums.json``.

Written by rank 0 after every rank finished writing (before the directory is published)::

    {"version": 1, "world_size": 2,
     "files": {"trainer.pt": {"size": 1234, "sha256": "…"}, "step_…/mp_rank_00_…": {…}, …}}

:func:`verify` re-reads every listed file. A checkpoint from before this file existed has no
``checksums.json``; it is accepted as it is (nothing to compare against).
"""

from __future__ import annotations

import json
from pathlib import Path

from jicd.files import sha256_file, write_json_atomic

MANIFEST = "checksums.json"


def write_manifest(directory: Path, world_size: int) -> None:
    """List every file under ``directory`` with its size and sha256."""
    files = {
        path.relative_to(directory).as_posix(): {
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
        }
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    payload = {"version": 1, "world_size": world_size, "files": files}
    write_json_atomic(directory / MANIFEST, payload)


def read_manifest(directory: Path) -> dict | None:
    """The manifest of ``directory``, or None when it has none (older checkpoints)."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def verify(directory: Path) -> str | None:
    """None when every listed file has its size and checksum, else what is wrong (one line)."""
    try:
        manifest = read_manifest(directory)
    except ValueError as exc:
        return f"{MANIFEST} unreadable ({exc})"
    if manifest is None:
        return None
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            return f"{name} missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, {expected['size']} were written"
        if sha256_file(path) != expected["sha256"]:
            return f"{name} checksum differs from the one written"
    return None


def saved_world_size(directory: Path) -> int:
    """The number of ranks that wrote the checkpoint (older ones: its ``rank_*.pt`` files)."""
    manifest = read_manifest(directory)
    if manifest is not None and "world_size" in manifest:
        return int(manifest["world_size"])
    return max(1, len(list(directory.glob("rank_*.pt"))))
