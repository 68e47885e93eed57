"""What every ``jicd`` command shares: one-line user errors and the guarded runner.

Every ``main(argv)`` of an entry point wraps its body with :func:`run_guarded`, so a bad file,
key or value ends as ``jicd <command>: error: <one line>`` on stderr and exit status 2, never
a traceback. Output files go through :mod:`jicd.files` (atomic writes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, Protocol

from jicd.errors import UserError
from jicd.names import printable

USER_ERROR_EXIT = 2


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors raise :class:`UserError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def run_guarded(prog: str, body: Callable[[], int]) -> int:
    """Run ``body`` and turn user errors into a one-line message and exit status 2.

    :class:`~jicd.errors.UserError` (bad file contents, option or config value; every loader
    and config check raises it), ``OSError`` (missing/unreadable file, full disk) and running
    out of memory (a file asking for more than this machine has) are the user's errors; anything
    else is a bug and keeps its traceback. Control characters in the message (which may quote
    a file's contents) are printed escaped.
    """
    try:
        return body()
    except (UserError, OSError) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        print(f"{prog}: error: out of memory ({one_line(exc)})", file=sys.stderr)
        return USER_ERROR_EXIT


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty), printable."""
    text = str(exc).strip()
    return printable(text.splitlines()[0] if text else type(exc).__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError``, or torch's allocator failing (CPU or GPU), without importing torch."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


class CommandMain(Protocol):
    """A command's entry point: ``main(argv=None) -> exit status`` (None: ``sys.argv[1:]``)."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


def guarded_main(
    prog: str, build_parser: Callable[[], argparse.ArgumentParser], run: Callable[..., int]
) -> CommandMain:
    """A command's ``main(argv)``: parse with ``build_parser()``, then ``run(args)``, guarded."""

    def main(argv: list[str] | None = None) -> int:
        return run_guarded(prog, lambda: run(build_parser().parse_args(argv)))

    main.__doc__ = f"Entry point of ``{prog}``."
    return main


__all__ = [
    "USER_ERROR_EXIT",
    "OneLineParser",
    "CommandMain",
    "UserError",
    "guarded_main",
    "is_out_of_memory",
    "one_line",
    "run_guarded",
]
