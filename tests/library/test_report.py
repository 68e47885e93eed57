"""``jicd report``: BD-rate against the bundled published points, RD plots, the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jicd.evaluation import report, results_files
from jicd.evaluation.evaluate import write_results

CHECKS = "bd_rate_check_percent"


def _compressai_curves() -> tuple[dict, dict[str, report.Curve]]:
    # The bundled package-data copy, not ../shared: a fresh clone has only trainer/reference/.
    payload = json.loads((results_files.REFERENCE_DIR / "compressai_kodak.json").read_text())
    curves = {
        name: report.Curve(name, points["bpp"], points["psnr"])
        for name, points in payload.items()
        if isinstance(points, dict) and "bpp" in points
    }
    return payload[CHECKS], curves


@pytest.mark.parametrize(
    "test_name", ["cheng2020-anchor", "cheng2020-attn", "bmshj2018-hyperprior"]
)
@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_reproduces_compressai_check_values(test_name, method):
    checks, curves = _compressai_curves()
    result = report.bd_rate(curves["bpg444"], curves[f"{test_name}_mse"], method=method)
    assert result.method == method
    assert result.percent == pytest.approx(checks[f"{test_name}_vs_bpg444"][method], abs=0.05)


def test_anchor_vs_bpg444_is_about_minus_18_9_percent():
    _, curves = _compressai_curves()
    result = report.bd_rate(curves["bpg444"], curves["cheng2020-anchor_mse"])
    assert result.percent == pytest.approx(-18.9, abs=0.05) and result.method == "pchip"


def test_non_monotonic_curve_falls_back_to_cubic_and_says_so():
    baseline = results_files.load_reference(results_files.resolve_reference("baseline_eccv22"))
    clic4 = baseline[("clic", 4)]  # PSNR drops from q5 to q6: pchip is undefined there
    shifted = report.Curve("shifted", [b * 0.9 for b in clic4.bpp], clic4.psnr)
    result = report.bd_rate(clic4, shifted)
    assert result.method == "cubic" and "not increasing" in result.note
    assert result.percent == pytest.approx(-10.0, abs=0.5)


def test_a_three_point_non_monotonic_curve_uses_its_efficient_points_not_a_cubic():
    # the CPU study's level-4 curves: the baseline's PSNR falls from q3 to q6
    baseline = report.Curve("baseline", [0.057, 0.114, 0.175], [21.15, 21.88, 21.74])
    jicd = report.Curve("jicd", [0.054, 0.113, 0.181], [20.39, 21.71, 21.96])
    result = report.bd_rate(baseline, jicd)
    assert result.method == "pchip" and "dominated points dropped" in result.note
    assert -100 < result.percent < 100  # a cubic through 3 points gave +1e17 %
    efficient = report.bd_rate(report.Curve("b", [0.057, 0.114], [21.15, 21.88]), jicd)
    assert result.percent == pytest.approx(efficient.percent)


def test_too_few_points_give_nan():
    one = report.Curve("one", [0.1], [30.0])
    assert math.isnan(report.bd_rate(one, one).percent)


def _fake_rows() -> list[dict]:
    """Per-image rows as ``jicd evaluate`` writes them: 2 qualities × 2 levels × 2 images."""
    rows = []
    for quality, bpp, psnr in ((1, 0.10, 28.1), (2, 0.16, 29.4)):
        for level in (1, 4):
            for image in ("a.png", "b.png"):
                rows.append(
                    {
                        "name": "jicd",
                        "checkpoint": f"q{quality}.pt",
                        "quality": quality,
                        "set": "kodak",
                        "image": image,
                        "level": level,
                        "bpp": bpp,
                        "psnr-rgb": psnr - level,
                        "ms-ssim-rgb": 0.9,
                        "bpp-estimate": bpp,
                        "encoding_time": 1.0,
                        "decoding_time": 2.0,
                    }
                )
    return rows


def test_report_writes_plots_and_table_with_default_reference(tmp_path):
    write_results(_fake_rows(), tmp_path / "results")
    assert report.main([str(tmp_path / "results"), "--output", str(tmp_path / "report")]) == 0
    for level in (1, 4):
        png = tmp_path / "report" / f"rd-kodak-level{level}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "report" / "bd_rate.md").read_text()
    assert "## kodak, level 4" in table and "| jicd | baseline_eccv22 |" in table
    assert "| baseline_eccv22 | 6 | 0.8188 | 28.4045 |" in table  # raw points next to BD-rate
    entries = json.loads((tmp_path / "report" / "bd_rate.json").read_text())
    assert [(e["set"], e["level"]) for e in entries] == [("kodak", 1), ("kodak", 4)]
    assert {r["anchor"] for e in entries for r in e["bd_rate"]} == {"baseline_eccv22"}


def test_report_bad_inputs_exit_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing"), "--output", str(tmp_path / "r")]) == 2
    write_results(_fake_rows(), tmp_path / "results")
    argv = [str(tmp_path / "results"), "--reference", "nope", "--output", str(tmp_path / "r")]
    assert report.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("jicd report: error: results folder not found")
    assert err[1].startswith("jicd report: error: reference not found: nope")
    assert not (tmp_path / "r").exists()


def test_ms_ssim_bd_rate_of_a_curve_needing_10_percent_fewer_bits(tmp_path: Path) -> None:
    bpp, ms_ssim = [0.1, 0.2, 0.4, 0.8], [0.90, 0.94, 0.97, 0.985]
    psnr = [27.0, 29.0, 31.0, 33.0]
    anchor = report.Curve("anchor", bpp, psnr, ms_ssim)
    better = report.Curve("better", [b * 0.9 for b in bpp], psnr, ms_ssim)
    no_ssim = report.Curve("psnr-only", bpp, psnr)
    report.build_report({("kodak", 4): [anchor, better, no_ssim]}, [], tmp_path)
    table = json.loads((tmp_path / "bd_rate.json").read_text())[0]
    rates = {(r["test"], r["anchor"]): r["percent"] for r in table["bd_rate_ms_ssim"]}
    assert set(rates) == {("anchor", "better"), ("better", "anchor")}  # psnr-only has none
    assert rates[("better", "anchor")] == pytest.approx(-10.0, abs=0.01)
    assert "BD-rate (MS-SSIM dB)" in (tmp_path / "bd_rate.md").read_text()
