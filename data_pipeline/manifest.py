"""On-disk format of a shard folder: ``manifest.json`` and the DALI index next to each shard."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from jicd.errors import UserError
from jicd.files import write_text_atomic

MANIFEST_NAME = "manifest.json"
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
        """The member's stored bytes (possibly fewer than ``size`` when the tar is truncated)."""
        with open(self.tar_path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.size)

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


def load_split(shards_dir: str, split: str) -> SplitFiles:
    """Shards of ``split`` ("train" or "val") listed in ``shards_dir/manifest.json``.

    Raises:
        ValueError: no manifest (the folder was not written by ``jicd prepare-shards``).
    """
    path = os.path.join(shards_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise UserError(f"no {MANIFEST_NAME} in '{shards_dir}' (write shards with prepare-shards)")
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    shards = manifest["splits"][split]["shards"]
    return SplitFiles(
        tar_paths=[os.path.join(shards_dir, s["name"]) for s in shards],
        index_paths=[os.path.join(shards_dir, s["index"]) for s in shards],
        num_samples=int(manifest["splits"][split]["num_samples"]),
        min_side=int(manifest["settings"]["min_side"]),
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


def read_index(tar_path: str, index_path: str) -> list[SampleLocation]:
    """Parse a DALI webdataset index (v1.2: one sample a line, ``ext offset size name`` per
    member). A single-image sample's location is its (only) image; a paired sample's is its
    noisy member with the clean one as ``pair``."""
    with open(index_path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines or not lines[0].startswith("v1.2 "):
        raise UserError(f"{index_path}: not a DALI webdataset index (v1.2)")
    found = []
    for line in lines[1:]:
        fields = line.split()
        members = {}  # role ("noisy", "clean", "json", or the image's extension) -> location
        for start in range(0, len(fields) - 3, 4):
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
        with open(index_path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()[1:]
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
