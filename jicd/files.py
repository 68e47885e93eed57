"""The one way jicd writes files: atomically (temp file in the same folder + ``os.replace``).

An interrupted run, a full disk or a signal never leaves a half-written output behind: readers
see either the previous file or the complete new one. Everything the project writes for a user
(exports, checkpoints, results, bitstreams, configs) goes through these functions, so they also
hold the one rule for careless commands: **an output never replaces an input**. A command names
its inputs with :func:`protect_inputs`; a write whose target is one of them (the same file, by
device and inode, so through symlinks, hard links and other spellings) is refused in one line.

Reading files from others: :func:`open_regular` (regular files only, so a FIFO or a device never
blocks or streams for ever), :func:`read_capped` (a size limit checked before reading) and
:func:`torch_load_plain` (``weights_only`` unpickling: plain data, never code).

Also the one place that knows which files are images (:data:`IMAGE_SUFFIXES`,
:func:`find_images`), shared by shard writing, evaluation and the codec CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from jicd.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".jp2")
"""Image files jicd reads (prepare-shards, evaluation datasets, codec inputs)."""


def find_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (its sub-folders too when ``recursive``)."""
    root = Path(folder)
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (shards, checkpoints, exports)."""
    digest = hashlib.sha256()  # hashlib.file_digest would need Python 3.11; we support 3.10
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# (st_dev, st_ino) -> how the command named the input; filled by protect_inputs.
_PROTECTED: dict[tuple[int, int], str] = {}


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@contextlib.contextmanager
def protect_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """While active, every write through this module refuses to replace one of ``paths``.

    Folders and missing paths are ignored (only existing files can be destroyed).
    """
    added = {}
    for path in paths:
        key = _file_id(path)
        if key is not None and os.path.isfile(path) and key not in _PROTECTED:
            added[key] = str(path)
    _PROTECTED.update(added)
    try:
        yield
    finally:
        for key in added:
            _PROTECTED.pop(key, None)


def check_not_input(path: str | os.PathLike, option: str = "output") -> None:
    """Refuse ``path`` as an output when it is one of the protected inputs (see module doc).

    Raises:
        UserError: ``path`` resolves to an input of the running command.
    """
    key = _file_id(path)
    if key is not None and key in _PROTECTED:
        raise UserError(
            f"{option} {path} is the input {_PROTECTED[key]}: refusing to overwrite an input"
        )


def open_regular(path: str | os.PathLike, what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    Opened non-blocking first, so a FIFO without a writer cannot hang the open itself; a FIFO,
    device or socket is refused before a byte is read.

    Raises:
        UserError: ``path`` is not a regular file.
        OSError: it cannot be opened (missing, permissions).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{what} {path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def path_inside(folder: str | os.PathLike, name: str, what: str = "file name") -> str:
    """``folder/name`` for a ``name`` read from a file (a manifest, a checksum list), refusing
    one that leaves ``folder``: absolute, with ``..``, or through a symlink pointing outside.

    Raises:
        UserError: one line naming ``name``.
    """
    parts = Path(name).parts if isinstance(name, str) else ()
    if not parts or os.path.isabs(name) or ".." in parts or "\0" in name:
        raise UserError(f"{what} {str(name)[:80]!r} is not a path inside {folder}")
    path = os.path.join(folder, name)
    root = os.path.realpath(folder)
    if not os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep):
        raise UserError(f"{what} {name[:80]!r} leads outside {folder}")
    return path


def read_capped(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, refusing files larger than ``limit`` before reading.

    Raises:
        UserError: missing or unreadable, not a regular file, or larger than ``limit`` bytes.
    """
    try:
        return _read_capped(path, limit, what)
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None


def _read_capped(path: str | os.PathLike, limit: int, what: str) -> bytes:
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise UserError(f"{what} {path} has {size} bytes, more than the {limit} allowed")
        data = handle.read(size)  # read(n) allocates n bytes first: never the limit itself
        if handle.read(1):
            raise UserError(f"{what} {path} grew while being read")
    return data


def read_json(path: str | os.PathLike, limit: int = 64 * 2**20, what: str = "JSON file") -> Any:
    """Parse a JSON file from anyone: regular file, at most ``limit`` bytes, one-line errors.

    Raises:
        UserError: unreadable, too large, not UTF-8 or not valid JSON.
    """
    data = read_capped(path, limit, what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{path} is not valid JSON (nested too deeply)") from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    The temp file is flushed and fsynced before the rename, so a crash right after the rename
    cannot leave an empty file under the final name. On any error (ENOSPC included) the temp
    file is removed and the previous ``path`` is untouched.

    Raises:
        UserError: ``path`` is an input of the running command (:func:`protect_inputs`).
    """
    check_not_input(path)
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


def torch_load_plain(source: str | os.PathLike | IO[bytes], what: str) -> Any:
    """``torch.load`` of a file from anyone: plain data only (tensors, containers, numbers,
    strings; ``weights_only=True``), on the CPU, never code.

    A pickle that names any other class or function (a ``__reduce__`` that would run code) is
    refused without calling it.

    Raises:
        UserError: one line naming ``what``: missing, not a regular file, not a torch file, or
            not plain data.
    """
    import pickle

    import torch

    try:
        if isinstance(source, str | os.PathLike):
            with open_regular(source, what) as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} does not exist") from None
    except UserError:
        raise
    except pickle.UnpicklingError as err:
        # The weights-only unpickler names what it refused on the last line of its message.
        detail = _refused_global(str(err))
        raise UserError(f"{what} is not plain data{detail}: refused to load it") from None
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"{what} is not a readable torch file ({type(err).__name__})") from None


def _refused_global(message: str) -> str:
    """`` (it asks for os.system)`` from a weights-only unpickler message, else ""."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f" (it asks for {found.group(1)[:80]})" if found else ""


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
