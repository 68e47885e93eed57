"""Text that came from a file, made safe to use as a file name or to print.

Results JSONs, manifests, ``.jicd`` headers and checkpoints come from other people: a field such
as ``set`` may hold ``../../x`` and a header may hold terminal escape codes. Every writer that
builds a file name from such text goes through :func:`safe_name`; every message that shows it
goes through :func:`printable` (:func:`jicd.command_line.run_guarded` applies it to every error
line).
"""

from __future__ import annotations

import re

MAX_NAME = 100
"""Longest file-name part :func:`safe_name` returns (characters)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,\[\]-]")


def safe_name(text: object) -> str:
    """One file-name part from untrusted ``text``: never a path, never hidden, never empty.

    Characters other than letters, digits and ``._+=,[]-`` become ``_`` (so ``/`` and ``\\`` cannot
    reach another folder), leading dots become ``_`` (no ``..``, no hidden files) and the result
    is cut to :data:`MAX_NAME` characters. The names jicd itself writes (``kodak``,
    ``jicd[-contrastive]``, ``nlm+avif``) pass unchanged; equal inputs give equal names.
    """
    name = _UNSAFE.sub("_", str(text))[:MAX_NAME]
    if name.startswith("."):
        name = "_" + name[1:]
    return name or "_"


def printable(text: object, limit: int = 300) -> str:
    """``text`` with control characters (escape codes, newlines) shown as ``\\x1b``-style escapes,
    cut to ``limit`` characters: safe to print on a terminal as one line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
