"""Hostile inputs shared by the safety tests: a pickle that runs code, ``.jicd`` header surgery,
a PNG that claims a huge size, and a subprocess runner with a memory limit."""

from __future__ import annotations

import builtins
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import torch

from jicd.codec import format as jicd_format

REPO = Path(__file__).resolve().parents[1]


class Exploit:
    """Unpickling this calls ``exec``, which creates the file ``marker``: what a crafted
    ``__reduce__`` in a checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",))


def write_exploit(path: Path, marker: Path, payload: object = None) -> None:
    """``torch.save`` of ``{"data": payload, "hook": Exploit(marker)}`` to ``path``."""
    torch.save({"data": payload, "hook": Exploit(marker)}, path)


def with_header(data: bytes, **fields) -> bytes:
    """A ``.jicd`` file with header ``fields`` replaced (``original_size=(H, W)``, …) and its
    CRC32 recomputed, written with the project's own :func:`jicd.codec.format.encode`."""
    import dataclasses

    coded = dataclasses.replace(jicd_format.decode(data), **fields)
    return jicd_format.encode(coded)


def patch_body(data: bytes, offset: int, new: bytes) -> bytes:
    """``data`` with bytes at ``offset`` replaced and the trailing CRC32 fixed."""
    body = bytearray(data[:-4])
    body[offset : offset + len(new)] = new
    return bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def run_limited(
    argv: list[str], timeout: float = 120, memory_gib: float = 6.0, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """``python -m jicd ARGV`` in a subprocess with an address-space limit and a timeout
    (so that the old behaviour, a hang or an unbounded allocation, fails the test, not the
    machine)."""
    limit = int(memory_gib * 2**30)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "jicd", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
    )


def one_error_line(stderr: str, prog: str) -> str:
    """The single ``PROG: error:`` line of ``stderr`` (asserting there is exactly one and no
    traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]
