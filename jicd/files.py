"""The one way jicd writes files: atomically (temp file in the same folder + ``os.replace``).

An interrupted run, a full disk or a signal never leaves a half-written output behind: readers
see either the previous file or the complete new one. Everything the project writes for a user
(exports, checkpoints, results, bitstreams, configs) goes through these functions.

Also the one place that knows which files are images (:data:`IMAGE_SUFFIXES`,
:func:`find_images`), shared by shard writing, evaluation and the codec CLI.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".jp2")
"""Image files jicd reads (prepare-shards, evaluation datasets, codec inputs)."""


def find_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (its sub-folders too when ``recursive``)."""
    root = Path(folder)
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (shards, checkpoints, exports)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    The temp file is flushed and fsynced before the rename, so a crash right after the rename
    cannot leave an empty file under the final name. On any error (ENOSPC included) the temp
    file is removed and the previous ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 ``text``."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON (NaN is written as ``null``)."""
    write_text_atomic(path, json.dumps(_nan_to_none(payload), indent=2) + "\n")


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to memory, then :func:`write_bytes_atomic`."""
    import torch  # deferred: the CLI's argument checks must not pay for importing torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _nan_to_none(value: Any) -> Any:
    # Strict JSON has no NaN; readers such as CompressAI's plotter would choke on it.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
