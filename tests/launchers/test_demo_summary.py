"""``launch/demo_summary.py``: the comparison lines ``make demo`` ends with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from jicd.evaluation.evaluate import write_results

ROOT = Path(__file__).resolve().parents[2]


def _summary_module():
    spec = importlib.util.spec_from_file_location("demo_summary", ROOT / "launch/demo_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(name: str, quality, bpp: float, psnr: float) -> list[dict]:
    return [
        {
            "name": name,
            "pipeline": name,
            "checkpoint": "model.pt" if name == "demo" else None,
            "quality": quality,
            "set": "heldout",
            "image": image,
            "level": 4,
            "bpp": bpp + offset,
            "psnr-rgb": psnr,
            "psnr-noisy": 16.0,
            "ms-ssim-rgb": 0.8,
            "encoding_time": 1.0,
            "decoding_time": 1.5,
        }
        for image, offset in (("a.png", -0.01), ("b.png", 0.01))
    ]


def test_summary_compares_avif_at_the_closest_rate_and_lists_panels(tmp_path, capsys):
    rows = _rows("demo", 1, 0.12, 18.7)
    for quality, bpp, psnr in ((5, 0.08, 23.0), (15, 0.13, 24.1), (25, 0.30, 24.5)):
        rows += _rows("avif", quality, bpp, psnr)
    rows += _rows("nlm+avif", 5, 0.05, 24.0) + _rows("nlm+avif", 15, 0.11, 25.0)
    results = tmp_path / "results"
    write_results(rows, results)
    (results / "panels").mkdir()
    (results / "panels/heldout-a-level4.png").write_bytes(b"png")
    assert _summary_module().main([str(results), str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    lines = {line[:32].strip(): line[32:] for line in out.splitlines()}
    assert lines["noisy input (no coding)"].split() == ["PSNR", "16.00", "dB"]
    assert lines["jicd decoded (denoised)"].split()[:3] == ["PSNR", "18.70", "dB"]
    # AVIF at the quality whose mean bpp (0.13) is closest to jicd's (0.12), not 0.08 or 0.30.
    assert lines["AVIF on the noisy image (q 15)"].split()[1:3] == ["24.10", "dB"]
    assert lines["AVIF on the noisy image (q 15)"].split()[-2:] == ["0.1300", "bpp"]
    assert lines["NLM -> AVIF (q 15)"].split()[1] == "25.00"
    assert "ECCV'22 baseline q1 26.77 dB at 0.109 bpp" in out  # the published context
    assert str(results / "panels/heldout-a-level4.png") in out
