"""Shard folders from someone else (issue 21, defects 5, 8 and 9): a malformed manifest or index
is one line naming the field or line, shard names stay inside the folder, a tar header claiming
10^12 bytes is reported without allocating them, a FIFO never blocks, and ``--report`` never
replaces an input."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from hostile import one_error_line, run_limited

from data_pipeline.check_shards import main as check_shards
from data_pipeline.manifest import load_split
from jicd.errors import UserError
from trainer.testing import make_shards


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("hostile_shards"), count=10)


def _copy(sound: Path, tmp_path: Path) -> Path:
    shutil.copytree(sound, tmp_path / "shards")
    return tmp_path / "shards"


def _edit_manifest(shards: Path, edit) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    edit(manifest)
    (shards / "manifest.json").write_text(json.dumps(manifest))


def _first_shard(manifest: dict) -> dict:
    return manifest["splits"]["train"]["shards"][0]


MANIFESTS = {
    "missing name": (lambda m: _first_shard(m).pop("name"), "shards[0].name"),
    "null name": (lambda m: _first_shard(m).update(name=None), "shards[0].name"),
    "count not an integer": (lambda m: _first_shard(m).update(num_samples="5"), "num_samples"),
    "count missing": (lambda m: m["splits"]["train"].pop("num_samples"), "num_samples"),
    "splits a list": (lambda m: m.update(splits=[m["splits"]["train"]]), "splits must be"),
    "absolute shard name": (lambda m: _first_shard(m).update(name="/etc/passwd"), "not a path"),
    "shard name upwards": (lambda m: _first_shard(m).update(index="../x.idx"), "not a path"),
    "min_side a string": (lambda m: m["settings"].update(min_side="64"), "min_side"),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_a_malformed_manifest_is_one_line_naming_the_field(sound, tmp_path, capsys, case):
    shards = _copy(sound, tmp_path)
    edit, message = MANIFESTS[case]
    _edit_manifest(shards, edit)
    assert check_shards([str(shards), "--workers", "1"]) == 2
    assert message in one_error_line(capsys.readouterr().err, "jicd check-shards")
    with pytest.raises(UserError, match="manifest.json"):
        load_split(str(shards), "train")
    assert not (shards / "check-report.json").exists()


def test_a_shard_symlinked_outside_the_folder_is_never_read(sound, tmp_path, capsys) -> None:
    shards = _copy(sound, tmp_path)
    name = _first_shard(json.loads((shards / "manifest.json").read_text()))["name"]
    outside = tmp_path / "elsewhere.tar"
    (shards / name).rename(outside)
    (shards / name).symlink_to(outside)
    assert check_shards([str(shards), "--workers", "1"]) == 2
    assert "leads outside" in one_error_line(capsys.readouterr().err, "jicd check-shards")


def _index_of_first_shard(shards: Path) -> Path:
    return shards / _first_shard(json.loads((shards / "manifest.json").read_text()))["index"]


INDEXES = {
    "blank line": (lambda lines: [*lines[:2], "", *lines[2:]], "got 0 fields"),
    "three fields": (lambda lines: [lines[0], " ".join(lines[1].split()[:3]), *lines[2:]], "got 3"),
    "offset not a number": (
        lambda lines: [lines[0], lines[1].replace(lines[1].split()[1], "x1", 1), *lines[2:]],
        "must be integers",
    ),
    "count differs": (lambda lines: [lines[0] + "0", *lines[1:]], "announces"),
}


@pytest.mark.parametrize("case", sorted(INDEXES))
def test_a_malformed_index_line_is_reported_not_a_traceback(sound, tmp_path, capsys, case):
    shards = _copy(sound, tmp_path)
    index = _index_of_first_shard(shards)
    edit, message = INDEXES[case]
    index.write_text("\n".join(edit(index.read_text().splitlines())) + "\n")
    assert check_shards([str(shards), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert message in captured.out and "Traceback" not in captured.err
    with pytest.raises(UserError, match=message):
        load_split(str(shards), "train").locations()


def _claim_huge_member(shards: Path, size: int) -> None:
    """Make the first member's tar header (and its index line) claim ``size`` bytes: the size
    field in GNU base-256, the header checksum recomputed."""
    index = _index_of_first_shard(shards)
    lines = index.read_text().splitlines()
    ext, offset, old, name = lines[1].split()[:4]
    tar = shards / index.name.replace(".idx", ".tar")
    data = bytearray(tar.read_bytes())
    header = int(offset) - 512
    data[header + 124 : header + 136] = b"\x80" + size.to_bytes(11, "big")
    data[header + 148 : header + 156] = b" " * 8
    checksum = sum(data[header : header + 512])
    data[header + 148 : header + 156] = b"%06o\0 " % checksum
    tar.write_bytes(bytes(data))
    lines[1] = lines[1].replace(f"{ext} {offset} {old} ", f"{ext} {offset} {size} ", 1)
    index.write_text("\n".join(lines) + "\n")
    assert struct.unpack(">Q", bytes(data[header + 128 : header + 136]))[0] == size


def test_a_member_claiming_a_terabyte_is_reported_without_allocating_it(sound, tmp_path):
    shards = _copy(sound, tmp_path)
    _claim_huge_member(shards, 10**12)
    proc = run_limited(["check-shards", str(shards), "--workers", "1"], timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "of 1000000000000 bytes present" in proc.stdout or "not a complete tar" in proc.stdout
    location = load_split(str(shards), "train").locations()[0]
    assert len(location.read_bytes()) < 10**6  # what the file holds, not what the index says


def test_an_index_that_is_a_fifo_does_not_block(sound, tmp_path) -> None:
    shards = _copy(sound, tmp_path)
    index = _index_of_first_shard(shards)
    index.unlink()
    os.mkfifo(index)
    proc = run_limited(["check-shards", str(shards), "--workers", "1"], timeout=120)
    assert proc.returncode == 1 and "is not a regular file" in proc.stdout


def test_the_report_never_replaces_an_input(sound, tmp_path, capsys) -> None:
    shards = _copy(sound, tmp_path)
    before = (shards / "manifest.json").read_bytes()
    argv = [str(shards), "--workers", "1", "--report", str(shards / "manifest.json")]
    assert check_shards(argv) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert (shards / "manifest.json").read_bytes() == before
