"""What a checkpoint directory holds and whether it is intact: ``checksums.json``.

Written by rank 0 after every rank finished writing (before the directory is published)::

    {"version": 1, "world_size": 2,
     "files": {"trainer.pt": {"size": 1234, "sha256": "…"}, "step_…/mp_rank_00_…": {…}, …}}

:func:`verify` re-reads every listed file. A checkpoint from before this file existed has no
``checksums.json``; it is accepted as it is (nothing to compare against).
"""

from __future__ import annotations

from pathlib import Path

from jicd.errors import UserError
from jicd.files import path_inside, read_json, sha256_file, write_json_atomic

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
    """The manifest of ``directory``, or None when it has none (older checkpoints).

    Raises:
        UserError: unreadable, or not ``{"world_size": int >= 1, "files": {name: {"size": int,
            "sha256": str}}}`` with every name inside ``directory``.
    """
    path = directory / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path, what="checkpoint manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    world = manifest.get("world_size", 1) if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not _positive_int(world):
        raise UserError(f"{path}: not a checkpoint manifest")
    for name, expected in files.items():
        path_inside(directory, name, f"{MANIFEST} entry")
        if not (isinstance(expected, dict) and _positive_int(expected.get("size"), zero=True)):
            raise UserError(f"{path}: entry {name[:80]!r} has no size")
        if not isinstance(expected.get("sha256"), str):
            raise UserError(f"{path}: entry {name[:80]!r} has no sha256")
    return manifest


def _positive_int(value, zero: bool = False) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= (0 if zero else 1)


def verify(directory: Path) -> str | None:
    """None when every listed file has its size and checksum, else what is wrong (one line)."""
    try:
        manifest = read_manifest(directory)
    except UserError as exc:
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
