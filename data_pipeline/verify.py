"""Verify a shard folder against its ``manifest.json``: what ``jicd check-shards`` and the end of
``prepare-shards`` run.

Per shard (one process each, in parallel): the tar exists and has the recorded size and sha256
(manifests from before sizes were recorded skip the size); the tar's headers read to the end
(a truncated tar fails here); every line of the DALI index names a member of the tar at its
true data offset and size, and the index lists the recorded number of samples; every sample
decodes completely (PIL) and is at least ``min_side`` on each side; the two images of a
paired sample have the same size.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import asdict, dataclass

from PIL import Image

from data_pipeline.manifest import SampleLocation, read_index, read_manifest
from data_pipeline.parallel import parallel_map
from data_pipeline.undecodable import error_line
from jicd.errors import UserError
from jicd.files import sha256_file
from jicd.names import printable


@dataclass
class Problem:
    """One thing wrong with a shard (``member`` empty when it is the whole shard)."""

    shard: str
    member: str
    problem: str

    def __str__(self) -> str:
        where = f"{self.shard}:{self.member}" if self.member else self.shard
        return printable(f"{where}: {self.problem}", 500)  # names come from the files


@dataclass
class _ShardTask:
    shards_dir: str
    record: dict
    min_side: int


class _FileEnd:
    """A file whose reads stop at its end however many bytes are asked for: ``tarfile`` reads
    a pax header of the size its header claims (a crafted 10^12 would be allocated first)."""

    def __init__(self, handle) -> None:
        self.handle, self.size = handle, os.fstat(handle.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        left = max(0, self.size - self.handle.tell())
        return self.handle.read(left if size is None or size < 0 else min(size, left))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


def _tar_members(path: str) -> dict[str, tuple[int, int]]:
    """``{member name: (data offset, size)}`` from the tar's own headers."""
    with (
        open(path, "rb") as handle,
        # typeshed's protocol for ``fileobj`` also asks for write() and close(), which reading
        # a tar given its file object never calls
        tarfile.open(fileobj=_FileEnd(handle), mode="r:") as tar,  # type: ignore[call-overload]
    ):
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def check_shard(task: _ShardTask) -> tuple[list[Problem], int]:
    """All problems of one shard, and how many samples were decoded."""
    record, name = task.record, task.record["name"]
    path = os.path.join(task.shards_dir, name)
    if not os.path.isfile(path):
        return [Problem(name, "", "shard file missing (or not a regular file)")], 0
    problems = []
    size = os.path.getsize(path)
    if "size" in record and size != record["size"]:
        problems.append(Problem(name, "", f"{size} bytes, the manifest records {record['size']}"))
    elif "sha256" in record and sha256_file(path) != record["sha256"]:
        problems.append(Problem(name, "", "sha256 differs from the manifest"))
    try:
        members = _tar_members(path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(Problem(name, "", f"not a complete tar ({error_line(exc)})"))
        members = None
    index_path = os.path.join(task.shards_dir, record["index"])
    try:
        locations = read_index(path, index_path)
    except (UserError, OSError, ValueError) as exc:
        return [*problems, Problem(name, "", f"index {record['index']}: {exc}")], 0
    # tarfile stops quietly when the file ends at a header boundary or inside a member's data
    ends = [o + n for o, n in (members or {}).values()] + [
        loc.offset + loc.size for loc in locations
    ]
    if max(ends, default=0) > size:
        where = f"data up to byte {max(ends)}, {size} present"
        problems.append(Problem(name, "", f"not a complete tar ({where})"))
    if len(locations) != record["num_samples"]:
        counts = f"index lists {len(locations)} samples, manifest {record['num_samples']}"
        problems.append(Problem(name, "", counts))
    decoded = 0
    with open(path, "rb") as handle:
        for loc in locations:
            sizes: set[tuple[int, int]] = set()
            good = True
            for image in loc.images():
                problem, image_size = _member_problem(handle, image, members, task.min_side)
                if problem:
                    problems.append(Problem(name, image.member, problem))
                    good = False
                if image_size is not None:  # None exactly when there is a problem
                    sizes.add(image_size)
            if good and len(sizes) > 1:
                shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
                why = f"noisy and clean differ in size ({shown})"
                problems.append(Problem(name, loc.member, why))
                good = False
            decoded += good
    return problems, decoded


def _member_problem(
    handle, loc: SampleLocation, members: dict | None, min_side: int
) -> tuple[str, tuple[int, int] | None]:
    """Why the member at ``loc`` is not a usable image ("" when it is), and its size."""
    truth = members.get(loc.member) if members is not None else (loc.offset, loc.size)
    if truth != (loc.offset, loc.size):
        found = f"the tar {truth[0]}/{truth[1]}" if truth else "no such member in the tar"
        return f"index offset/size {loc.offset}/{loc.size}, {found}", None
    handle.seek(loc.offset)
    present = os.fstat(handle.fileno()).st_size - loc.offset
    payload = handle.read(max(0, min(loc.size, present)))  # a header may claim 10^12 bytes
    problem = decode_problem(payload, loc.size, min_side)
    if problem:
        return problem, None
    with Image.open(io.BytesIO(payload)) as image:
        return "", image.size


def decode_problem(payload: bytes, size: int, min_side: int) -> str:
    """Why ``payload`` is not a usable sample, or "" when it decodes completely."""
    if len(payload) != size:
        return f"only {len(payload)} of {size} bytes present"
    try:
        with Image.open(io.BytesIO(payload)) as image:
            image.load()
            if min(image.size) < min_side:
                return f"{image.size[0]}x{image.size[1]} is smaller than min_side {min_side}"
    except Exception as exc:  # PIL raises many unrelated types for bad data
        return f"does not decode ({error_line(exc)})"
    return ""


def _location_problem(location: SampleLocation) -> str:
    return decode_problem(location.read_bytes(), location.size, 1)


def find_undecodable(
    locations: list[SampleLocation], workers: int
) -> list[tuple[SampleLocation, str]]:
    """The images among ``locations`` that do not decode, with why (a full PIL decode each;
    a paired sample's noisy and clean image are checked apart, so the report names the one)."""
    images = [image for location in locations for image in location.images()]
    problems = parallel_map(_location_problem, images, workers, "scan", "img")
    return [(image, problem) for image, problem in zip(images, problems, strict=True) if problem]


def verify_shards(shards_dir: str | os.PathLike, workers: int = 0) -> dict:
    """Check every shard of ``shards_dir``; returns the report (``problems`` empty when sound).

    Raises:
        UserError: no readable manifest, or a malformed one (one line naming the field).
    """
    manifest = read_manifest(shards_dir)
    records = [shard for split in manifest["splits"].values() for shard in split["shards"]]
    min_side = manifest["settings"]["min_side"]
    tasks = [_ShardTask(str(shards_dir), record, min_side) for record in records]
    problems: list[Problem] = []
    decoded = 0
    for found, count in parallel_map(check_shard, tasks, workers, "verify", "shard"):
        problems += found
        decoded += count
    expected = sum(r["num_samples"] for r in records)
    return {
        "shards_dir": os.path.abspath(shards_dir),
        "shards": len(records),
        "samples": expected,
        "decoded": decoded,
        "checked": ["size", "sha256", "tar headers", "index offsets", "decode", "min_side"],
        "problems": [asdict(p) for p in problems],
    }
