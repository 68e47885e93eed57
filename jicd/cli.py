"""What every ``jicd`` command shares: one-line user errors and the guarded runner.

Every ``main(argv)`` of an entry point wraps its body with :func:`run_guarded`, so a bad file,
key or value ends as ``jicd <command>: error: <one line>`` on stderr and exit status 2, never
a traceback. Output files go through :mod:`jicd.files` (atomic writes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from jicd.errors import UserError

USER_ERROR_EXIT = 2


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors raise :class:`UserError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def run_guarded(prog: str, body: Callable[[], int]) -> int:
    """Run ``body`` and turn user errors into a one-line message and exit status 2.

    :class:`~jicd.errors.UserError` (bad file contents, option or config value; every loader
    and config check raises it) and ``OSError`` (missing/unreadable file, full disk) are the
    user's errors; anything else is a bug and keeps its traceback.
    """
    try:
        return body()
    except (UserError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


def guarded_main(
    prog: str, build_parser: Callable[[], argparse.ArgumentParser], run: Callable[..., int]
) -> Callable[[list[str] | None], int]:
    """A command's ``main(argv)``: parse with ``build_parser()``, then ``run(args)``, guarded."""

    def main(argv: list[str] | None = None) -> int:
        return run_guarded(prog, lambda: run(build_parser().parse_args(argv)))

    main.__doc__ = f"Entry point of ``{prog}``."
    return main


__all__ = ["USER_ERROR_EXIT", "OneLineParser", "UserError", "guarded_main", "run_guarded"]
