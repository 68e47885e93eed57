"""Shard writer: selection, split, storage format, determinism, DALI index, CLI errors."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from data_fixtures import MIN_SIDE, make_image_folder, make_mixed_shards
from PIL import Image

from data_pipeline import make_shards as cli
from data_pipeline.shards import ShardConfig, make_keys, prepare_shards, split_samples, to_rgb8


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return make_mixed_shards(tmp_path_factory.mktemp("shards"))


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_selection_and_split_counts(written: tuple[Path, dict]) -> None:
    out, manifest = written
    expected = make_image_folder(out.parent / "again")
    skipped = manifest["skipped"]
    assert [e["path"] for e in skipped["too_small"]] == expected["small"]
    assert [e["path"] for e in skipped["corrupt"]] == expected["corrupt"]
    assert "truncated" in skipped["corrupt"][0]["error"]
    assert [s["path"] for s in manifest["samples"]] == expected["good"]  # sorted by path
    splits = manifest["splits"]
    n_good = len(expected["good"])
    assert splits["train"]["num_samples"] == int(n_good * 0.8)
    assert splits["train"]["num_samples"] + splits["val"]["num_samples"] == n_good
    assert all(min(s["width"], s["height"]) >= MIN_SIDE for s in manifest["samples"])
    # Sorted order: train takes the first paths, val the last ones.
    val_paths = [s["path"] for s in manifest["samples"] if s["split"] == "val"]
    assert val_paths == expected["good"][-len(val_paths) :]


def test_shard_files_counts_hashes_and_dali_index(written: tuple[Path, dict]) -> None:
    out, manifest = written
    for split in ("train", "val"):
        shards = manifest["splits"][split]["shards"]
        counts = [s["num_samples"] for s in shards]
        assert sum(counts) == manifest["splits"][split]["num_samples"]
        assert all(c == 7 for c in counts[:-1]) and 1 <= counts[-1] <= 7  # only the last is short
        for shard in shards:
            data = (out / shard["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            index = (out / shard["index"]).read_text().splitlines()
            assert index[0] == f"v1.2 {shard['num_samples']}"
            for line in index[1:]:  # offsets point at the member bytes
                _ext, offset, size, name = line.split()
                assert (
                    data[int(offset) : int(offset) + int(size)]
                    == _members(out / shard["name"])[name]
                )


@pytest.mark.skipif(importlib.util.find_spec("wds2idx") is None, reason="DALI wheel absent")
def test_index_identical_to_dali_wds2idx(written: tuple[Path, dict], tmp_path: Path) -> None:
    from wds2idx import IndexCreator

    out, manifest = written
    shard = manifest["splits"]["train"]["shards"][0]
    with IndexCreator(str(out / shard["name"]), str(tmp_path / "ref.idx"), verbose=False) as ref:
        ref.create_index()
    assert (tmp_path / "ref.idx").read_text() == (out / shard["index"]).read_text()


def test_keys_survive_webdataset_and_storage_is_exact(written: tuple[Path, dict]) -> None:
    out, manifest = written
    src = Path(manifest["source"])
    urls = [str(out / s["name"]) for s in manifest["splits"]["train"]["shards"]]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        fields = [k for k in sample if not k.startswith("__")]
        assert len(fields) == 1  # "img.01.v2" must not become key "img" + field "01.v2.jpg"
        seen[sample["__key__"]] = (fields[0], sample[fields[0]])
    by_key = {s["key"]: s for s in manifest["samples"]}
    assert sorted(seen) == sorted(k for k, s in by_key.items() if s["split"] == "train")
    for key, (ext, payload) in seen.items():
        entry = by_key[key]
        assert "." not in key and ext == entry["stored_as"].removeprefix("lossless-")
        if entry["stored_as"] in ("jpg", "png"):  # original bytes, untouched
            assert payload == (src / entry["path"]).read_bytes()
        else:  # re-encoded losslessly: same pixels
            stored = np.asarray(Image.open(io.BytesIO(payload)))
            assert np.array_equal(stored, np.asarray(to_rgb8(Image.open(src / entry["path"]))))


def test_storage_decisions(written: tuple[Path, dict]) -> None:
    stored = {s["path"]: s["stored_as"] for s in written[1]["samples"]}
    assert stored["photo_00.jpg"] == "jpg" and stored["grey.jpg"] == "jpg"
    assert stored["png/rgb_02.png"] == "png"
    for path in ("png/rgba.03.png", "png/deep16.png", "other/pic_04.webp", "other/pic_05.bmp"):
        assert stored[path] == "lossless-png"


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    deep = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb8(deep))[0, :, 0].tolist() == [0, 100, 255]


def test_deterministic_bytes_serial_and_parallel(written: tuple[Path, dict], tmp_path: Path):
    out, manifest = written  # written with 1 worker; now 2 parallel writer processes
    cfg = ShardConfig(**{**manifest["settings"], "workers": 2})
    again = prepare_shards(manifest["source"], tmp_path / "again", cfg)
    assert again["splits"] == manifest["splits"] and again["samples"] == manifest["samples"]
    for split in ("train", "val"):
        for shard in manifest["splits"][split]["shards"]:
            name = shard["name"]
            assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_jpeg2000_lossless_option(tmp_path: Path) -> None:
    out, manifest = make_mixed_shards(tmp_path, lossless_format="jp2")
    entry = next(s for s in manifest["samples"] if s["path"] == "png/rgba.03.png")
    assert entry["stored_as"] == "lossless-jp2"
    members = {}
    for shard in manifest["splits"]["train"]["shards"]:
        members.update(_members(out / shard["name"]))
    decoded = Image.open(io.BytesIO(members[entry["key"] + ".jp2"]))
    source = to_rgb8(Image.open(Path(manifest["source"]) / entry["path"]))
    assert np.array_equal(np.asarray(decoded), np.asarray(source))


def test_make_keys_sanitises_and_deduplicates() -> None:
    keys = make_keys(["a.b/c.d.jpg", "a_b/c_d.png", "a.b/c.d.png", "x y#.jpg"])
    assert keys == ["a_b_c_d", "a_b_c_d-1", "a_b_c_d-2", "x_y_"]


def test_split_keeps_one_val_image() -> None:
    from data_pipeline.shards import Sample

    samples = [Sample(f"k{i}", f"p{i}", 300, 300, "jpg") for i in range(5)]
    splits = split_samples(samples, 0.01)
    assert [len(splits["train"]), len(splits["val"])] == [4, 1]
    assert len(split_samples(samples[:1], 0.01)["val"]) == 0


def test_cli_success_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_image_folder(tmp_path / "src", n_good=6)
    args = [str(tmp_path / "src"), str(tmp_path / "out"), "--min-side", str(MIN_SIDE)]
    assert cli.main([*args, "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "skipped (corrupt): broken.jpg" in printed and "skipped (too_small)" in printed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["num_samples"] == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "source folder not found"),
        ("empty", "no images"),
        ("not_empty_out", "not empty"),
        ("bad_option", "lossless_format"),
    ],
)
def test_cli_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "notes.txt").write_text("x")
    extra: list[str] = []
    if case == "missing":
        src = tmp_path / "nope"
    if case == "not_empty_out":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    if case == "bad_option":
        extra = ["--lossless-format", "jpg"]
    assert cli.main([str(src), str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no half-written output
