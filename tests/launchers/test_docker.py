"""The Dockerfile lints clean with hadolint and installs exactly the CPU-verified lock file.

No image is built here (no Docker engine in CI); hadolint parses the Dockerfile and applies its
best-practice rules. Every finding, of any severity, fails the test: a rule may only be silenced
by an inline ``# hadolint ignore=DLxxxx`` comment that explains why.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from dev_tools import dev_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# Packages of the lock file the image must contain (with torch and DALI).
ADDED_PACKAGES = ("compressai", "deepspeed", "webdataset")


def lint(path: Path) -> list[dict]:
    """hadolint's findings for ``path`` (all severities) as JSON records."""
    done = subprocess.run(
        [dev_tool("hadolint"), "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout or "[]")


def test_dockerfile_has_no_hadolint_findings() -> None:
    findings = lint(DOCKERFILE)
    described = [f"line {f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings]
    assert not findings, "hadolint findings:\n" + "\n".join(described)


def test_hadolint_really_checks(tmp_path: Path) -> None:
    """Guard against a linter that silently passes everything (wrong binary, wrong flags)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN pip install requests\n")
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3006", "DL3013", "DL3042"} <= codes


def test_every_hadolint_ignore_is_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and "hadolint" not in previous, (
                f"line {number + 1}: explain the ignored rule in a comment just above it"
            )


def pinned_versions(text: str, names: tuple[str, ...]) -> dict[str, str]:
    """``name==version`` pins of ``names`` found in ``text``."""
    pins = {}
    for name in names:
        match = re.search(rf"\b{re.escape(name)}==([0-9][^\s;\\]*)", text)
        if match:
            pins[name] = match.group(1)
    return pins


def test_image_installs_exactly_the_lock_file() -> None:
    """One set of pins: the image installs requirements-lock.txt and pins nothing of its own."""
    text = DOCKERFILE.read_text()
    assert "pip install --no-cache-dir -r requirements-lock.txt" in text
    assert "-c requirements-lock.txt -e ." in text
    lock = (ROOT / "requirements-lock.txt").read_text()
    locked = tuple(re.findall(r"^([A-Za-z0-9_.-]+)==", lock, flags=re.MULTILINE))
    assert {"torch", "nvidia-dali-cuda130", *ADDED_PACKAGES} <= set(locked)
    assert pinned_versions(text, locked) == {}, "a second pin in the Dockerfile would drift"


def test_base_image_cuda_major_matches_the_locked_wheels() -> None:
    """The base's CUDA (its NVIDIA_REQUIRE_CUDA driver check) = the wheels' CUDA major."""
    tag = re.search(r"^ARG CUDA_TAG=(\d+)\.\d+\.\d+-", DOCKERFILE.read_text(), re.MULTILINE)
    assert tag is not None, "the Dockerfile must build FROM nvidia/cuda:${CUDA_TAG}"
    lock = (ROOT / "requirements-lock.txt").read_text()
    dali = re.search(r"nvidia-dali-cuda(\d+)0==", lock)
    assert dali is not None and dali.group(1) == tag.group(1)
    import torch  # the locked wheel, as installed here

    assert torch.version.cuda is None or torch.version.cuda.split(".")[0] == tag.group(1)


def test_build_context_excludes_local_state() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", "runs"} <= ignored
