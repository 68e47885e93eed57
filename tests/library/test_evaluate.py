"""``jicd evaluate``: the published protocol on generated images with tiny models."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jicd.codec import get_coder
from jicd.codec.images import center_crop, load_rgb
from jicd.evaluation import evaluate
from jicd.metrics import psnr_8bit
from jicd.models.weights import load_for_inference
from jicd.noise import noisy_at_level
from trainer.testing import make_anchor_state_dict, make_export, make_image

REPO = Path(__file__).resolve().parents[2]
LEVELS = ["1", "4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Two tiny exports (q1, q2), an anchor, and a 2-image set that crops to 192×192."""
    root = tmp_path_factory.mktemp("evaluate")
    images = root / "images"
    images.mkdir()
    for seed in range(2):
        make_image(images / f"img{seed}.png", 200, 230, seed=seed)
    (images / "readme.txt").write_text("ignored: not an image suffix")
    return {
        "root": root,
        "images": images,
        "q1": make_export(root / "q1.pt", quality=1, seed=0),
        "q2": make_export(root / "q2.pt", quality=2, seed=1),
        "anchor": make_anchor_state_dict(root / "anchor.pth"),
    }


@pytest.fixture(scope="module")
def results(setup) -> Path:
    """One evaluation: 2 checkpoints × 2 images × 2 levels."""
    out = setup["root"] / "results"
    argv = [
        "--checkpoint",
        str(setup["q2"]),
        str(setup["q1"]),
        "--dataset",
        f"kodak={setup['images']}",
        "--levels",
        *LEVELS,
        "--output",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    return out


def test_results_have_compressai_layout_and_counts(results):
    for level in LEVELS:
        payload = json.loads((results / f"jicd-kodak-level{level}.json").read_text())
        assert set(payload) >= {"name", "description", "results"}
        assert payload["name"] == "jicd" and payload["level"] == int(level)
        res = payload["results"]
        for metric in ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"):
            assert len(res[metric]) == 2 and all(math.isfinite(v) for v in res[metric])
        assert res["quality"] == [1, 2] and res["images"] == [2, 2]
    rows = json.loads((results / "jicd-per_image.json").read_text())
    assert len(rows) == 2 * 2 * 2
    assert {(r["height"], r["width"]) for r in rows} == {(192, 192)}
    csv_lines = (results / "jicd-per_image.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows)


def test_bpp_is_real_bytes_of_compress(setup, results):
    rows = json.loads((results / "jicd-per_image.json").read_text())
    row = next(
        r for r in rows if r["image"] == "img1.png" and r["level"] == 4 and r["quality"] == 1
    )
    model, _ = load_for_inference(setup["q1"])
    # The authors' order: noise the full image, then crop.
    full = load_rgb(str(setup["images"] / "img1.png"))
    with torch.no_grad():
        noisy = center_crop(noisy_at_level(full, 4, seed=0))
        encoded = get_coder("wavefront").compress(model, noisy)
    num_bytes = sum(len(s) for strings in encoded["strings"] for s in strings)
    assert row["bytes"] == num_bytes
    assert row["bpp"] == pytest.approx(8 * num_bytes / (192 * 192))


def test_psnr_matches_hand_computation():
    clean = torch.zeros(1, 3, 4, 4)
    test = torch.full((1, 3, 4, 4), 10.4 / 255)  # rounds to 10 → MSE 100
    assert psnr_8bit(clean, test) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr_8bit(clean, clean) == math.inf


def test_center_crop_to_multiple_of_64():
    x = torch.arange(200 * 230, dtype=torch.float32).reshape(1, 1, 200, 230)
    crop = center_crop(x)
    assert crop.shape[-2:] == (192, 192)
    assert crop[0, 0, 0, 0] == x[0, 0, 4, 19]


@pytest.mark.parametrize("with_denoiser", [False, True])
def test_sequential_comparator(setup, tmp_path, with_denoiser):
    argv = [
        "--checkpoint",
        str(setup["anchor"]),
        "--dataset",
        f"kodak={setup['images']}",
        "--levels",
        "4",
        "--limit",
        "1",
        "--coder",
        "serial",
        "--output",
        str(tmp_path),
    ]
    if with_denoiser:
        blur = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        torch.jit.script(blur).save(str(tmp_path / "blur.ts"))
        argv += ["--denoiser", str(tmp_path / "blur.ts")]
    assert evaluate.main(argv) == 0
    name = "cheng2020-anchor+denoiser" if with_denoiser else "cheng2020-anchor"
    payload = json.loads((tmp_path / f"{name}-kodak-level4.json").read_text())
    assert payload["results"]["quality"] == [None] and payload["results"]["images"] == [1]


BAD_ARGS = {
    "missing checkpoint": (["--checkpoint", "{root}/nope.pt"], "file not found"),
    "empty dataset": (["--dataset", "kodak={root}/empty"], "no images"),
    "bad level": (["--levels", "5"], "unknown noise level"),
    "bad dataset spec": (["--dataset", "kodak"], "SET=DIR"),
    "bad limit": (["--limit", "0"], "--limit must be >= 1"),
}


@pytest.mark.parametrize("case", BAD_ARGS)
def test_bad_inputs_exit_2_with_one_line(setup, capsys, case):
    (setup["root"] / "empty").mkdir(exist_ok=True)
    override, message = BAD_ARGS[case]
    args = {
        "--checkpoint": [str(setup["q1"])],
        "--dataset": [f"kodak={setup['images']}"],
        "--levels": ["1"],
        "--output": [str(setup["root"] / "bad")],
    }
    args[override[0]] = [v.format(root=setup["root"]) for v in override[1:]]
    assert evaluate.main([item for key, values in args.items() for item in (key, *values)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jicd evaluate: error:") and message in err and err.count("\n") == 1
    assert not (setup["root"] / "bad").exists()


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(setup, results, tmp_path):
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "jicd.evaluation.evaluate",
        "--checkpoint",
        str(setup["q2"]),
        str(setup["q1"]),
        "--dataset",
        f"kodak={setup['images']}",
        "--levels",
        *LEVELS,
        "--output",
        str(tmp_path),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = json.loads((tmp_path / "jicd-per_image.json").read_text())
    single = json.loads((results / "jicd-per_image.json").read_text())
    keys = ("image", "level", "quality", "bytes", "psnr-rgb", "ms-ssim-rgb")
    assert [[r[k] for k in keys] for r in ours] == [[r[k] for k in keys] for r in single]
