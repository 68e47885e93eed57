"""On-disk format of a shard folder: ``manifest.json`` and the DALI index next to each shard.

A shard folder may come from someone else, so both files are checked as they are read: the
manifest's structure and types (:func:`read_manifest`; shard and index names must stay inside
the folder), and every index line (:func:`read_index`). Problems are one-line
:class:`~jicd.errors.UserError` naming the file and the field or line.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from jicd.errors import UserError
from jicd.files import open_regular, path_inside, read_capped, read_json, write_text_atomic

MANIFEST_NAME = "manifest.json"
MAX_INDEX_BYTES = 256 * 2**20
"""Largest DALI index read (~4 million samples)."""
STORED_EXTENSIONS = ("jpg", "png", "jp2")
"""Image formats a shard member can hold (one image per sample, or per role of a pair)."""


@dataclass
class SampleLocation:
    """Where one sample's image bytes lie inside its shard."""

    key: str
    tar_path: str
    offset: int
    size: int
    member: str = ""
    """Tar member name (``<key>.<ext>``)."""
    pair: SampleLocation | None = None
    """Paired shards: this location is the noisy image and ``pair`` its clean twin."""

    def read_bytes(self) -> bytes:
        """The member's stored bytes: fewer than ``size`` when the tar ends first (truncated, or
        an index or tar header that claims more than the file holds), never more than exist."""
        with open_regular(self.tar_path, "shard") as handle:
            present = os.fstat(handle.fileno()).st_size - self.offset
            handle.seek(self.offset)
            return handle.read(max(0, min(self.size, present)))

    def images(self) -> list[SampleLocation]:
        """The image members of the sample: itself, and its clean twin when paired."""
        return [self] if self.pair is None else [self, self.pair]


@dataclass
class SplitFiles:
    """The shards of one split, in order."""

    tar_paths: list[str]
    index_paths: list[str]
    num_samples: int
    min_side: int
    paired: bool = False
    """Samples are noisy/clean pairs (``prepare-shards --pairs``)."""

    def locations(self) -> list[SampleLocation]:
        """Every sample of the split in shard order (= the split's ``index`` order)."""
        found = []
        for tar_path, index_path in zip(self.tar_paths, self.index_paths, strict=True):
            found += read_index(tar_path, index_path)
        return found

    def same_shards(self, tar_paths: list[str], index_paths: list[str], num: int) -> SplitFiles:
        """These shards' settings with other indexes (a subset of the samples)."""
        return SplitFiles(tar_paths, index_paths, num, self.min_side, self.paired)


def _count(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where} must be a non-negative integer, got {str(value)[:40]!r}")
    return value


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _check_shard_record(record, shards_dir: str, where: str) -> None:
    record = _mapping(record, where)
    for key in ("name", "index"):
        if not isinstance(record.get(key), str):
            raise UserError(f"{where}.{key} must be a file name, got {record.get(key)!r:.40}")
        path_inside(shards_dir, record[key], f"{where}.{key}")
    _count(record.get("num_samples"), f"{where}.num_samples")
    if "size" in record:
        _count(record["size"], f"{where}.size")
    if "sha256" in record and not isinstance(record["sha256"], str):
        raise UserError(f"{where}.sha256 must be a string")


def read_manifest(shards_dir: str | os.PathLike) -> dict:
    """``shards_dir/manifest.json``, checked: splits of shard records (``name``, ``index``,
    ``num_samples``[, ``size``, ``sha256``]) whose files lie inside ``shards_dir``, counts that
    are non-negative integers, ``settings.min_side`` >= 1.

    Raises:
        UserError: no manifest (the folder was not written by ``jicd prepare-shards``), or one
            line naming the first field that is wrong.
    """
    path = os.path.join(shards_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        raise UserError(f"no {MANIFEST_NAME} in '{shards_dir}' (write shards with prepare-shards)")
    manifest = _mapping(read_json(path, what="shard manifest"), path)
    for split, entry in _mapping(manifest.get("splits"), f"{path}: splits").items():
        where = f"{path}: splits.{split}"
        entry = _mapping(entry, where)
        _count(entry.get("num_samples"), f"{where}.num_samples")
        if not isinstance(entry.get("shards"), list):
            raise UserError(f"{where}.shards must be a list of shard records")
        for number, record in enumerate(entry["shards"]):
            _check_shard_record(record, str(shards_dir), f"{where}.shards[{number}]")
    min_side = _mapping(manifest.get("settings"), f"{path}: settings").get("min_side")
    if _count(min_side, f"{path}: settings.min_side") < 1:
        raise UserError(f"{path}: settings.min_side must be >= 1")
    return manifest


def load_split(shards_dir: str, split: str) -> SplitFiles:
    """Shards of ``split`` ("train" or "val") listed in ``shards_dir/manifest.json``.

    Raises:
        UserError: no manifest, a malformed one (:func:`read_manifest`), or no such split.
    """
    manifest = read_manifest(shards_dir)
    if split not in manifest["splits"]:
        raise UserError(f"{shards_dir}/{MANIFEST_NAME} has no '{split}' split")
    entry = manifest["splits"][split]
    return SplitFiles(
        tar_paths=[os.path.join(shards_dir, s["name"]) for s in entry["shards"]],
        index_paths=[os.path.join(shards_dir, s["index"]) for s in entry["shards"]],
        num_samples=entry["num_samples"],
        min_side=manifest["settings"]["min_side"],
        paired=bool(manifest.get("pairs")),
    )


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/key.ext.more"`` → ``("dir/key", "ext.more")``: WebDataset's rule, which DALI shares.

    The sample key is everything before the first dot of the file name (dots in folder names do
    not count); the rest is the member's extension.
    """
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def write_dali_index(tar_path: str, idx_path: str) -> int:
    """Write the DALI ``fn.readers.webdataset`` index (format v1.2) of ``tar_path``.

    Same format as the ``wds2idx`` tool of the DALI wheel, computed with :mod:`tarfile` so it
    needs neither DALI nor GNU tar: a header ``v1.2 <samples>`` then one line per sample with
    ``<ext> <data offset> <size> <member name>`` for each of its members.

    Returns:
        The number of samples in the shard.
    """
    samples: list[list[str]] = []
    last_key = None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            key, ext = split_member_name(name)
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append(f"{ext} {member.offset_data} {member.size} {name}")
    lines = [f"v1.2 {len(samples)}"] + [" ".join(parts) for parts in samples]
    with open(idx_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return len(samples)


PAIR_ROLES = ("noisy", "clean")
"""Member roles of a paired sample: ``<key>.noisy.<ext>`` and ``<key>.clean.<ext>``."""


def index_lines(index_path: str) -> list[str]:
    """The sample lines of a DALI webdataset index (v1.2), each checked: groups of
    ``ext offset size name`` with non-negative integer offset and size, as many lines as the
    header announces.

    Raises:
        UserError: one line naming the file and the line.
    """
    data = read_capped(index_path, MAX_INDEX_BYTES, "index")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{index_path}: not a DALI webdataset index (not UTF-8)") from None
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != "v1.2" or not header[1].isdigit():
        raise UserError(f"{index_path}: not a DALI webdataset index (v1.2)")
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise UserError(
                f"{index_path} line {number}: expected 'ext offset size name' per member, "
                f"got {len(fields)} fields"
            )
        numbers = [fields[i] for start in range(0, len(fields), 4) for i in (start + 1, start + 2)]
        if not all(value.isdigit() and value.isascii() for value in numbers):
            raise UserError(f"{index_path} line {number}: offsets and sizes must be integers")
    if int(header[1]) != len(lines) - 1:
        raise UserError(
            f"{index_path}: its header announces {header[1]} samples, it lists {len(lines) - 1}"
        )
    return lines[1:]


def read_index(tar_path: str, index_path: str) -> list[SampleLocation]:
    """Parse a DALI webdataset index (v1.2: one sample a line, ``ext offset size name`` per
    member; checked by :func:`index_lines`). A single-image sample's location is its (only)
    image; a paired sample's is its noisy member with the clean one as ``pair``."""
    found = []
    for line in index_lines(index_path):
        fields = line.split()
        members = {}  # role ("noisy", "clean", "json", or the image's extension) -> location
        for start in range(0, len(fields), 4):
            ext, offset, size, name = fields[start : start + 4]
            key = split_member_name(name)[0]
            members[ext.split(".")[0]] = SampleLocation(key, tar_path, int(offset), int(size), name)
        if all(role in members for role in PAIR_ROLES):
            members["noisy"].pair = members["clean"]
            found.append(members["noisy"])
        else:  # one image member per sample: the first
            found.append(next(iter(members.values())))
    return found


def check_split(files: SplitFiles, split: str, patch_size: int, min_samples: int) -> None:
    """Refuse a split that cannot give ``patch_size`` crops or ``min_samples`` samples."""
    if patch_size > files.min_side:
        raise UserError(
            f"data.patch_size {patch_size} exceeds the shards' min_side {files.min_side}"
        )
    if files.num_samples < min_samples:
        raise UserError(
            f"{split} split has {files.num_samples} images, needs at least {min_samples} "
            "(batch size x world size)"
        )


def filtered_split(
    files: SplitFiles, keep: Callable[[str], bool], directory: str | os.PathLike
) -> SplitFiles:
    """The same shards with DALI indexes that list only the samples whose key ``keep`` accepts.

    The tars are not touched; the new ``.idx`` files are written into ``directory`` (a shard
    that keeps no sample is left out).
    """
    tar_paths, index_paths, total = [], [], 0
    for number, (tar_path, index_path) in enumerate(
        zip(files.tar_paths, files.index_paths, strict=True)
    ):
        lines = index_lines(index_path)
        kept = [line for line in lines if keep(split_member_name(line.split()[3])[0])]
        if not kept:
            continue
        if len(kept) == len(lines):
            tar_paths.append(tar_path)
            index_paths.append(index_path)
        else:
            path = os.path.join(directory, f"{number:06d}-{os.path.basename(index_path)}")
            write_text_atomic(path, "\n".join([f"v1.2 {len(kept)}", *kept]) + "\n")
            tar_paths.append(tar_path)
            index_paths.append(path)
        total += len(kept)
    return files.same_shards(tar_paths, index_paths, total)
