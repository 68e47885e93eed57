"""``jicd evaluate`` beyond the four synthetic levels: named noise types and real SIDD pairs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from sidd_fixtures import make_sidd, make_validation_mats

from jicd.evaluation.evaluate import main as evaluate_main
from jicd.evaluation.protocol import PairedImage, dataset_items, noisy_pairs
from jicd.evaluation.results_files import load_results
from jicd.noise import noisy_at
from trainer.testing import make_export, make_image


def _results(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*-level*.json")}


def test_named_levels_are_evaluated_and_reported(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    make_image(images / "a.png", 70, 130)  # not a multiple of 64: noise the full image, crop
    model = make_export(tmp_path / "model.pt")
    code = evaluate_main(["--checkpoint", str(model), "--dataset", f"toy={images}", "--levels",
                          "2", "gaussian25", "unprocess-mid", "--output", str(tmp_path / "out"),
                          "--name", "tiny"])  # fmt: skip
    assert code == 0
    results = _results(tmp_path / "out")
    assert sorted(results) == [
        "tiny-toy-level2.json", "tiny-toy-levelgaussian25.json", "tiny-toy-levelunprocess-mid.json"
    ]  # fmt: skip
    assert results["tiny-toy-levelgaussian25.json"]["level"] == "gaussian25"
    curves = load_results(tmp_path / "out")
    assert {key[1] for key in curves} == {2, "gaussian25", "unprocess-mid"}
    # the noisy input is the named noise of the full image, then the crop
    ((_, clean, noisy),) = noisy_pairs(images / "a.png", ["gaussian25"], 0)
    from jicd.codec.images import center_crop, load_rgb

    full = load_rgb(str(images / "a.png"))
    assert torch.equal(noisy, center_crop(noisy_at(full, "gaussian25", 0)))
    assert clean.shape[-2:] == (64, 128)


def test_sidd_blocks_and_a_folder_of_pairs_are_real_noise(tmp_path: Path) -> None:
    model = make_export(tmp_path / "model.pt")
    mats = make_validation_mats(tmp_path / "mats", scenes=2, blocks=2, side=64)
    pairs = make_sidd(tmp_path / "medium", side=64)
    items = dataset_items(mats, None)
    assert [i.name for i in items] == ["s00_b00", "s00_b01", "s01_b00", "s01_b01"]
    clean, noisy = items[1].load()
    assert clean.shape == noisy.shape == (1, 3, 64, 64)
    pair_items = dataset_items(pairs, None)
    assert all(isinstance(i, PairedImage) for i in pair_items) and len(pair_items) == 5
    out = tmp_path / "out"
    code = evaluate_main(["--checkpoint", str(model), "--dataset", f"sidd={mats}",
                          f"medium={pairs}", "--output", str(out), "--name", "tiny"])  # fmt: skip
    # the mismatched-size pair of the fixture is a one-line error, not a silent row
    assert code == 2
    (pairs / "Data" / "0002_001_GP_00800_00350_5500_N" / "NOISY_SRGB_011.PNG").unlink()
    code = evaluate_main(["--checkpoint", str(model), "--dataset", f"sidd={mats}",
                          f"medium={pairs}", "--output", str(out), "--name", "tiny"])  # fmt: skip
    assert code == 0
    results = _results(out)
    assert sorted(results) == ["tiny-medium-levelreal.json", "tiny-sidd-levelreal.json"]
    per_image = json.loads((out / "tiny-per_image.json").read_text())
    assert sorted({r["set"] for r in per_image}) == ["medium", "sidd"]
    assert sum(r["set"] == "sidd" for r in per_image) == 4
    assert all(r["level"] == "real" for r in per_image)
