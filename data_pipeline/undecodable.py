"""Undecodable samples: how loaders report them, where a run remembers them, when to give up.

A loader that cannot decode a sample never raises: the batch that held it comes back with
``batch["bad_samples"]`` (a list of :class:`BadSample`, the sample named by shard and member)
and the caller — the trainer, on every rank together — drops that batch on all ranks, merges
the reports of all ranks and calls ``loader.exclude(keys)`` everywhere. The merged list is kept
in ``<run_dir>/bad_samples.json`` (:class:`BadSampleLog`), which a resumed or requeued run
reads first, so it never reads those samples again. Too many of them means the shards, not the
trainer, are broken: :func:`check_limits` stops the run with one line saying so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from data_pipeline.manifest import SampleLocation
from jicd.errors import UserError
from jicd.files import write_json_atomic

LOG_NAME = "bad_samples.json"
# DALI names the sample it failed on: "Failed to decode sample #3 : /x/train-000001.tar:25088:k.png"
_DALI_SOURCE = re.compile(
    r"Failed to decode sample #\d+ : (?P<tar>.+?):(?P<offset>\d+):(?P<member>\S+)"
)


@dataclass(frozen=True)
class BadSample:
    """One sample that could not be decoded, and where it lies."""

    split: str
    """"train" or "val"."""
    key: str
    """Sample key (unique in the shard folder)."""
    shard: str
    """File name of its tar shard."""
    member: str
    """Tar member name (``<key>.<ext>``)."""
    offset: int
    """Byte offset of the member's data in the shard."""
    error: str
    """First line of the decoder's error."""

    def describe(self) -> str:
        """``train-000001.tar:img_007.png (OSError: ...)`` — for logs."""
        return f"{self.shard}:{self.member} @{self.offset} ({self.error})"


def bad_sample(split: str, location: SampleLocation, error: str) -> BadSample:
    """The report of an undecodable sample at ``location``."""
    name = os.path.basename(location.tar_path)
    return BadSample(split, location.key, name, location.member, location.offset, error)


def error_line(exc: BaseException) -> str:
    """``"Type: first line"`` of an exception (decoder messages can span many lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def parse_dali_error(message: str) -> tuple[str, int, str] | None:
    """``(tar path, offset, member)`` named by a DALI decoder error, or None."""
    match = _DALI_SOURCE.search(message)
    if match is None:
        return None
    return match["tar"], int(match["offset"]), match["member"]


class BadSampleLog:
    """The run's list of excluded samples (``<run_dir>/bad_samples.json``).

    Every rank loads it; only the caller on rank 0 saves it (after the reports of all ranks
    were merged, so every rank holds the same list).
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.samples: list[BadSample] = []
        if self.path is not None and self.path.is_file():
            try:
                rows = json.loads(self.path.read_text(encoding="utf-8"))["samples"]
                self.samples = [BadSample(**row) for row in rows]
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{self.path}: unreadable bad-sample list ({exc})") from None

    def excluded(self, split: str) -> set[str]:
        """Keys of ``split`` that must not be read."""
        return {s.key for s in self.samples if s.split == split}

    def add(self, reports: Iterable[BadSample]) -> list[BadSample]:
        """Record ``reports``; returns those not known before (each sample once, in order)."""
        known = {(s.split, s.key) for s in self.samples}
        new = []
        for report in reports:
            if (report.split, report.key) not in known:
                known.add((report.split, report.key))
                new.append(report)
        self.samples += new
        return new

    def count(self, split: str) -> int:
        return sum(s.split == split for s in self.samples)

    def save(self) -> None:
        """Write the list atomically (call on rank 0 only)."""
        if self.path is not None:
            rows = [asdict(s) for s in self.samples]
            write_json_atomic(self.path, {"version": 1, "samples": rows})


def check_limits(
    log: BadSampleLog, num_train: int, in_a_row: int, max_fraction: float, max_in_a_row: int
) -> None:
    """Stop when the shards are broken rather than unlucky.

    Args:
        log: the run's excluded samples.
        num_train: training samples in the manifest.
        in_a_row: consecutive training batches that had to be dropped.
        max_fraction: the largest tolerated fraction of excluded training samples.
        max_in_a_row: the largest tolerated number of dropped batches in a row.

    Raises:
        UserError: one line naming the count, the limit and what to do.
    """
    bad = log.count("train")
    if bad > max_fraction * num_train:
        raise UserError(
            f"{bad} of {num_train} training samples are undecodable (more than "
            f"data.max_bad_fraction={max_fraction:g}); the shards are damaged: run "
            f"'jicd check-shards' on them (list: {log.path})"
        )
    if in_a_row > max_in_a_row:
        raise UserError(
            f"{in_a_row} training batches in a row held undecodable samples (more than "
            f"data.max_bad_in_a_row={max_in_a_row}); the shards are damaged: run "
            f"'jicd check-shards' on them (list: {log.path})"
        )
