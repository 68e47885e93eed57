"""``jicd check-shards`` and the verification at the end of ``prepare-shards``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import corrupt_in_place, make_mixed_shards

from data_pipeline import shards as shards_module
from data_pipeline.check_shards import main as check_shards
from data_pipeline.manifest import load_split, read_index
from data_pipeline.shards import ShardConfig, prepare_shards
from jicd.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mixed_shards(tmp_path_factory.mktemp("check"))[0]


def _copy(sound: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shards"
    shutil.copytree(sound, target)
    return target


def _report(shards: Path, capsys) -> tuple[int, dict, str]:
    code = check_shards([str(shards), "--workers", "2"])
    return code, json.loads((shards / "check-report.json").read_text()), capsys.readouterr().out


def test_sound_shards_pass_and_the_manifest_records_sizes(sound: Path, tmp_path, capsys) -> None:
    shards = _copy(sound, tmp_path)
    manifest = json.loads((shards / "manifest.json").read_text())
    record = manifest["splits"]["train"]["shards"][0]
    assert (
        record["size"] == (shards / record["name"]).stat().st_size and len(record["sha256"]) == 64
    )
    code, report, out = _report(shards, capsys)
    assert code == 0 and report["problems"] == []
    assert (
        report["decoded"]
        == report["samples"]
        == sum(s["num_samples"] for s in manifest["splits"].values())
    )
    assert "sound" in out


def test_a_corrupted_member_a_truncated_tar_and_a_wrong_offset_are_found(
    sound: Path, tmp_path: Path, capsys
) -> None:
    shards = _copy(sound, tmp_path)
    files = load_split(str(shards), "train")
    # 1. a member corrupted in place (same size: only decoding or the checksum can tell)
    victim = next(
        loc
        for loc in read_index(files.tar_paths[0], files.index_paths[0])
        if loc.member.endswith(".png")
    )
    corrupt_in_place(victim)
    # 2. a truncated tar
    truncated = Path(files.tar_paths[1])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    # 3. a wrong offset in a DALI index
    index = Path(files.index_paths[2])
    lines = index.read_text().splitlines()
    ext, offset, rest = lines[1].split(" ", 2)
    lines[1] = f"{ext} {int(offset) + 512} {rest}"
    index.write_text("\n".join(lines) + "\n")
    wrong_member = rest.split()[1]

    code, report, out = _report(shards, capsys)
    assert code == 1
    found = {(p["shard"], p["member"], p["problem"].split(" (")[0]) for p in report["problems"]}
    first, second, third = (Path(p).name for p in files.tar_paths[:3])
    assert (first, victim.member, "does not decode") in found
    assert (first, "", "sha256 differs from the manifest") in found
    assert any(s == second and m == "" and "bytes, the manifest records" in p for s, m, p in found)
    assert any(s == second and m == "" and p == "not a complete tar" for s, m, p in found)
    assert any(s == third and m == wrong_member and "index offset/size" in p for s, m, p in found)
    assert not any(s.startswith("val-") for s, _, _ in found)
    assert f"{first}:{victim.member}: does not decode" in out


def test_command_line_errors_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jicd", "check-shards", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("jicd check-shards: error:") and "manifest" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prepare_shards_refuses_output_that_does_not_verify(tmp_path: Path, monkeypatch) -> None:
    """A writer bug (here: every index offset one byte off) is caught before the folder appears."""
    real = shards_module.write_dali_index

    def off_by_one(tar_path: str, idx_path: str) -> int:
        count = real(tar_path, idx_path)
        lines = Path(idx_path).read_text().splitlines()
        shifted = [lines[0]] + [
            " ".join([p[0], str(int(p[1]) + 1), *p[2:]])
            for p in (line.split() for line in lines[1:])
        ]
        Path(idx_path).write_text("\n".join(shifted) + "\n")
        return count

    monkeypatch.setattr(shards_module, "write_dali_index", off_by_one)
    src = tmp_path / "images"
    from data_fixtures import make_image_folder

    make_image_folder(src, n_good=6)
    with pytest.raises(UserError, match="do not verify .* index offset/size"):
        prepare_shards(src, tmp_path / "out", ShardConfig(min_side=96, maxcount=4, workers=1))
    assert not (tmp_path / "out").exists()
