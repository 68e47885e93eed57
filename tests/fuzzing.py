"""A fork-per-case fuzz harness for the commands that read files from others.

The parent imports torch and jicd once and builds valid inputs (``.jicd`` files of both coders,
a shard folder, a results folder); every case mutates one of them (seeded), then a forked child
runs the real command entry point (``jicd.__main__.main(argv)``) under an address-space limit
(``RLIMIT_AS``) and a wall-clock timeout, with its stdout/stderr in files. A case passes when the
child exits 0, or 1 (``check-shards``: problems found), or 2 with exactly one ``PROG: error:``
line — never a traceback, a signal, a timeout, or an output left behind by a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jicd.codec import format as jicd_format

INTERESTING = [0, 1, 2, 3, 7, 63, 64, 65, 127, 255, 256, 1023, 2048, 4095, 4096, 65535, 65536]
INTERESTING += [2**24, 2**31 - 1, 2**31, 2**32 - 1]
HOSTILE_STRINGS = ["", "../x", "../../etc/passwd", "/etc/passwd", "a/b", ".", "..", "\x1b[2J", "é"]


@dataclass
class Case:
    """One fuzz input: the command line, what it may write, and how it was made."""

    kind: str
    argv: list[str]
    outputs: list[Path]
    note: str
    ok_codes: tuple[int, ...] = (0, 2)

    @property
    def prog(self) -> str:
        return f"jicd {self.argv[0]}"


@dataclass
class Outcome:
    """What the child did."""

    code: int | None  # exit status, None when killed by a signal or the timeout
    signal: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Stats:
    cases: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- running a case
def run_forked(argv: list[str], scratch: Path, timeout: float, memory_bytes: int) -> Outcome:
    """``jicd.__main__.main(argv)`` in a forked child with a memory limit and a timeout."""
    out, err = scratch / "stdout", scratch / "stderr"
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(argv, out, err, memory_bytes)
    deadline = start + timeout
    status, timed_out = None, False
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
        else:
            time.sleep(0.005)
    signaled = os.WIFSIGNALED(status) and not timed_out
    return Outcome(
        code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        signal=os.WTERMSIG(status) if signaled else None,
        timed_out=timed_out,
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
        seconds=time.monotonic() - start,
    )


def _child(argv: list[str], out: Path, err: Path, memory_bytes: int) -> None:
    code = 70
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        for fd, path in ((1, out), (2, err)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        # pytest's capture replaces sys.stdout/err with objects that do not write to fd 1/2
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        import torch

        torch.set_num_threads(1)
        from jicd.__main__ import main

        code = int(main(argv) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def judge(case: Case, outcome: Outcome) -> str | None:
    """Why ``outcome`` breaks the contract (module docstring), or None."""
    if outcome.timed_out:
        return f"timed out after {outcome.seconds:.0f} s"
    if outcome.signal is not None:
        return f"killed by signal {outcome.signal}"
    if "Traceback" in outcome.stderr:
        return "traceback: " + outcome.stderr.strip().splitlines()[-1][:200]
    if outcome.code not in case.ok_codes:
        return f"exit status {outcome.code}"
    errors = [line for line in outcome.stderr.splitlines() if line.startswith(f"{case.prog}:")]
    if outcome.code == 2 and len(errors) != 1:
        return f"{len(errors)} error lines on exit 2"
    if outcome.code == 2:
        left = [str(p) for p in case.outputs if p.exists()]
        if left:
            return f"output left behind on failure: {left}"
    return None


# ----------------------------------------------------------------------------- mutations
def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Flip bits, overwrite with interesting bytes, insert, delete, truncate or duplicate."""
    data = bytearray(data)
    op = rng.choice(["flip", "set", "insert", "delete", "truncate", "duplicate"])
    at = rng.randrange(max(1, len(data)))
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "set" and data:
        value = rng.choice(INTERESTING)
        size = rng.choice([1, 2, 4])
        data[at : at + size] = (value % 256**size).to_bytes(size, "big")
    elif op == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == "delete":
        del data[at : at + rng.randint(1, 16)]
    elif op == "truncate":
        del data[at:]
    else:
        data[at:at] = data[at : at + rng.randint(1, 64)]
    return bytes(data), op


def fix_crc(data: bytes) -> bytes:
    """``data`` with its last four bytes replaced by the CRC32 of the rest (a ``.jicd`` CRC)."""
    if len(data) < 4:
        return data
    return data[:-4] + struct.pack(">I", zlib.crc32(data[:-4]))


def mutate_jicd(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A ``.jicd`` mutation: raw bytes (CRC fixed or not), or a header field / stream rewritten
    through the project's own encoder (so the CRC and layout stay valid)."""
    if rng.random() < 0.25:
        mutated, op = mutate_bytes(rng, data)
        return (fix_crc(mutated), f"bytes {op} + crc") if rng.random() < 0.7 else (mutated, op)
    coded, note = _mutated_header(rng, jicd_format.decode(data))
    return jicd_format.encode(coded), note


def _mutated_header(rng: random.Random, coded):
    """``coded`` with one header field or its streams changed, and what was changed."""
    name = rng.choice(
        ["geometry", "geometry", "original_size", "padded_size", "latent_shape", "streams"]
        + ["streams", "streams", "coder", "arch", "index_check", "quality"]
    )
    if name == "geometry":  # a consistent claim of another size
        height, width = rng.randint(1, 6000), rng.randint(1, 6000)
        pad = (-(-height // 64) * 64, -(-width // 64) * 64)
        value = {"original_size": (height, width), "padded_size": pad}
        value["latent_shape"] = (pad[0] // 64, pad[1] // 64)
        return dataclasses.replace(coded, **value), f"geometry {height}x{width}"
    if name in ("original_size", "padded_size", "latent_shape"):
        value = (rng.choice(INTERESTING), rng.choice(INTERESTING))
    elif name == "streams":
        value = tuple(_mutate_stream(rng, s) for s in coded.streams)
    elif name == "coder":
        value = rng.choice(["serial", "wavefront", "other", ""])
    elif name == "arch":
        value = rng.choice(HOSTILE_STRINGS)
    elif name == "index_check":
        value = rng.choice([None, 0, 2**32 - 1, rng.randrange(2**32)])
    else:
        value = rng.randrange(256)
    return dataclasses.replace(coded, **{name: value}), f"field {name}"


def _mutate_stream(rng: random.Random, stream: bytes) -> bytes:
    op = rng.random()
    if op < 0.3:
        return mutate_bytes(rng, stream)[0]
    if op < 0.5:
        return bytes([rng.choice([0x00, 0xFF, 0xF0, 0x0F])]) * rng.randint(0, 8 * len(stream) + 8)
    if op < 0.7:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 4 * len(stream) + 8)))
    return stream


def mutate_json(rng: random.Random, value):
    """A random edit at a random place of a JSON value (delete, retype, hostile string…)."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        if rng.random() < 0.15:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: mutate_json(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        copy = list(value)
        if rng.random() < 0.15:
            del copy[index]
        else:
            copy[index] = mutate_json(rng, copy[index])
        return copy
    return rng.choice(
        [
            None,
            True,
            -1,
            0,
            10**12,
            -(10**12),
            1.5,
            float("inf"),
            float("nan"),
            rng.choice(HOSTILE_STRINGS),
            [],
            {},
            [value],
            {"x": value},
            str(value),
        ]
    )


def rewrite(path: Path, mutate: Callable[[bytes], bytes]) -> None:
    """Replace ``path``'s contents (a new inode: a hard-linked original is never touched)."""
    data = mutate(path.read_bytes())
    path.unlink()
    path.write_bytes(data)


def mutate_text_lines(rng: random.Random, text: str) -> tuple[str, str]:
    """Edit an index: drop, duplicate, blank or shuffle a line, or change a field."""
    lines = text.splitlines()
    if not lines:
        return text, "empty"
    at = rng.randrange(len(lines))
    op = rng.choice(["drop", "dup", "blank", "field", "field", "fields", "swap"])
    if op == "drop":
        del lines[at]
    elif op == "dup":
        lines.insert(at, lines[at])
    elif op == "blank":
        lines.insert(at, rng.choice(["", " ", "\t"]))
    elif op == "swap":
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
    else:
        fields = lines[at].split()
        if fields and op == "field":
            index = rng.randrange(len(fields))
            fields[index] = str(rng.choice([*INTERESTING, -1, 10**12, "x", "1e3", "../../a"]))
        elif op == "fields":
            fields = fields[: rng.randrange(len(fields) + 1)] + ["x"] * rng.randint(0, 3)
        lines[at] = " ".join(fields)
    return "\n".join(lines) + "\n", f"index {op}"


def dump_json(value) -> bytes:
    return json.dumps(value).encode()


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
