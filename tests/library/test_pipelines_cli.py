"""``jicd evaluate --pipeline``: results, ``jicd report`` on them, panels, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from jicd.evaluation import evaluate, panels, report
from trainer.testing import make_export, make_images


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    images = make_images(root / "images", 64, 128)
    return {"root": root, "images": images, "q1": make_export(root / "q1.pt", quality=1)}


@pytest.fixture(scope="module")
def results(setup) -> Path:
    out = setup["root"] / "results"
    # Temporary paths have no spaces, so one string reads like the command line it is.
    argv = (
        f"--checkpoint {setup['q1']} --pipeline jpeg nlm+webp nlm+{setup['q1']} "
        f"--qualities jpeg=10,40 webp=20,60 --dataset kodak={setup['images']} --levels 1 4 "
        f"--workers 1 --save-images --output {out}"
    ).split()
    assert evaluate.main(argv) == 0
    return out


def test_results_per_set_and_level_with_pipeline_and_rows(results):
    for level in (1, 4):
        payload = json.loads((results / f"nlm+webp-kodak-level{level}.json").read_text())
        assert payload["pipeline"]["spec"] == "nlm+webp"
        assert "sigma estimated" in payload["pipeline"]["denoiser"]
        assert payload["pipeline"]["codec"].startswith("webp: Pillow")
        assert payload["results"]["quality"] == [20, 60] and payload["results"]["images"] == [2, 2]
        bpp = payload["results"]["bpp"]
        assert bpp[0] < bpp[1] and "real files" in payload["description"]
        assert "protocol" in payload  # the same protocol record as the learned results
    learned = json.loads((results / "nlm+jicd-kodak-level4.json").read_text())
    assert learned["pipeline"]["spec"].startswith("nlm+") and learned["results"]["images"] == [
        1 * 2
    ]
    rows = json.loads((results / "jpeg-per_image.json").read_text())
    assert len(rows) == 2 * 2 * 2  # images × levels × qualities
    assert {r["checkpoint"] for r in rows} == {None}
    assert all(r["encoding_time"] > 0 and r["decoding_time"] > 0 for r in rows)
    plain = json.loads((results / "jicd-kodak-level4.json").read_text())
    assert plain["pipeline"]["spec"].endswith("q1.pt")


def test_report_draws_classical_curves_and_bd_rates_between_any_two(results, tmp_path):
    assert report.main([str(results), "--output", str(tmp_path)]) == 0
    table = (tmp_path / "bd_rate.md").read_text()
    for test, anchor in (("nlm+webp", "jpeg"), ("jpeg", "nlm+webp"), ("jpeg", "baseline_eccv22")):
        assert f"| {test} | {anchor} |" in table
    assert (tmp_path / "rd-kodak-level4.png").read_bytes()[:4] == b"\x89PNG"


def test_panels_show_clean_noisy_and_every_curve(results):
    written = sorted((results / "panels").glob("*.png"))
    assert [p.name for p in written] == [
        f"kodak-img{i}-level{level}.png" for i in range(2) for level in (1, 4)
    ]
    width, height = Image.open(written[0]).size
    columns = 2 + 4  # clean, noisy, jicd, jpeg, nlm+webp, nlm+jicd
    assert width == columns * (128 + panels.GAP) + panels.GAP
    assert height > 64 + 128  # image, then its zoomed crop at the column width


def test_choose_points_picks_the_rate_closest_to_the_first_curve():
    def row(name, quality, bpp):
        return {"name": name, "set": "s", "level": 4, "checkpoint": None, "quality": quality,
                "bpp": bpp}  # fmt: skip

    rows = [row("jicd", None, 0.12), row("avif", 5, 0.05), row("avif", 15, 0.14)]
    rows += [row("avif", 25, 0.30), row("nlm+avif", 5, 0.02), row("nlm+avif", 50, 0.9)]
    chosen = panels.choose_points(rows, ["jicd", "avif", "nlm+avif"])
    assert chosen[("s", 4)] == {"jicd": (None, None), "avif": (None, 15), "nlm+avif": (None, 5)}


def test_bd_rate_of_a_curve_whose_psnr_peaks_uses_its_efficient_points():
    # AVIF on a noisy image: past some rate, more bits code more noise and PSNR falls.
    peaked = report.Curve("avif", [0.1, 0.2, 0.4, 0.8, 1.6], [24.0, 25.0, 25.5, 24.8, 23.0])
    better = report.Curve("nlm+avif", [0.09, 0.18, 0.36], [24.0, 25.0, 25.5])
    result = report.bd_rate(peaked, better)
    assert result.method == "pchip" and "dominated points dropped" in result.note
    assert result.percent == pytest.approx(-10.0, abs=0.5)  # 10 % fewer bits, same PSNR


BAD = {
    "unknown codec": (
        ["--pipeline", "heic"],
        "unknown codec 'heic' in --pipeline heic; choose from jpeg, webp, avif, jpeg2000, jxl or a "
        "checkpoint file",
    ),
    "unknown denoiser": (
        ["--pipeline", "median+jpeg"],
        "unknown denoiser 'median' in --pipeline median+jpeg; choose from nlm, bm3d, ffdnet, "
        "torchscript:FILE",
    ),
    "bad quality": (
        ["--pipeline", "avif", "--qualities", "101"],
        "quality 101 is not valid for avif: an integer in 0..100",
    ),
    "missing extra": (["--pipeline", "bm3d+jpeg"], "pip install 'jicd[bm3d]'"),
    "nothing to do": ([], "nothing to evaluate"),
    "bad workers": (["--pipeline", "jpeg", "--workers", "0"], "--workers must be >= 1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_pipeline_inputs_exit_2_with_one_line(setup, capsys, monkeypatch, case):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if the extra were not installed
    extra, message = BAD[case]
    out = setup["root"] / "bad"
    argv = ["--dataset", f"kodak={setup['images']}", "--levels", "4", "--output", str(out), *extra]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jicd evaluate: error:") and message in err and err.count("\n") == 1
    assert not out.exists()
