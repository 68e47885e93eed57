"""User-facing I/O shared by the command-line tools: one-line errors and atomic writes.

Every ``main(argv)`` of an entry point wraps its body with :func:`run_guarded`, so a bad file,
key or value ends as ``jicd <command>: error: <one line>`` on stderr and exit status 2, never
a traceback; every output file goes through :func:`write_bytes_atomic`, so an interrupted run
never leaves a half-written file behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A problem with the user's input (file, option value); printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors raise :class:`UserError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def run_guarded(prog: str, body: Callable[[], int]) -> int:
    """Run ``body`` and turn user errors into a one-line message and exit status 2.

    ``ValueError`` (bad file contents) and ``OSError`` (missing/unreadable file) count as user
    errors because every loader in the project reports bad inputs that way.
    """
    try:
        return body()
    except (UserError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON (NaN is written as ``null``)."""
    text = json.dumps(_nan_to_none(payload), indent=2) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def _nan_to_none(value: Any) -> Any:
    # Strict JSON has no NaN; readers such as CompressAI's plotter would choke on it.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
