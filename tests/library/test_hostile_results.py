"""Results JSONs and datasets from someone else (issue 21, defects 4, 5 and 8): ``jicd report``
writes only inside ``--output`` and nothing on a bad input, never over what it read;
``jicd evaluate`` refuses a decompression bomb in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import png_claiming

from jicd.evaluation import evaluate, report
from trainer.testing import make_export, make_image

POINTS = {"bpp": [0.1, 0.2, 0.4], "psnr": [27.0, 29.0, 31.0], "psnr-rgb": [27.1, 29.1, 31.1]}


def _results(folder: Path, file: str = "jicd-kodak-level1.json", **fields) -> Path:
    """One results JSON as ``jicd evaluate`` writes it, with ``fields`` replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"name": "jicd", "set": "kodak", "level": 1, "results": dict(POINTS)} | fields
    (folder / file).write_text(json.dumps(payload))
    return folder / file


def _files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def test_names_from_a_results_file_never_leave_the_output_folder(tmp_path, capsys) -> None:
    """A ``set`` of ``../../x`` used to write the RD plot two folders up."""
    work = tmp_path / "a" / "b"
    _results(work / "results", set="../../escaped", level="../up")
    before = _files_under(tmp_path)
    argv = [str(work / "results"), "--reference", "--output", str(work / "report")]
    assert report.main(argv) == 0
    created = _files_under(tmp_path) - before
    assert created and all(p.parts[:3] == ("a", "b", "report") for p in created), created
    names = {p.name for p in created}
    assert names == {"rd-.._.._escaped-level.._up.png", "bd_rate.md", "bd_rate.json"}


BAD_RESULTS = {
    "results not a mapping": {"results": [1, 2]},
    "bpp not numbers": {"results": POINTS | {"bpp": ["a", "b", "c"]}},
    "bpp missing": {"results": {"psnr": [27.0]}},
    "psnr too short": {"results": {"bpp": [0.1, 0.2], "psnr": [27.0]}},
    "infinite rate": {"results": POINTS | {"bpp": [0.1, 1e400, 0.3]}},
    "null name": {"name": None},
    "set a list": {"set": ["kodak"]},
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_a_results_file_of_the_wrong_shape_is_one_line_and_writes_nothing(
    tmp_path, capsys, case
) -> None:
    _results(tmp_path / "results", "good-kodak-level4.json", level=4)
    _results(tmp_path / "results", **BAD_RESULTS[case])
    argv = [str(tmp_path / "results"), "--reference", "--output", str(tmp_path / "report")]
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jicd report: error:") and err.count("\n") == 1
    assert "jicd-kodak-level1.json" in err
    assert not (tmp_path / "report").exists()


def test_the_report_never_replaces_a_file_it_read(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    read = _results(results, "bd_rate.json")  # a results file that the table would replace
    before = read.read_bytes()
    assert report.main([str(results), "--reference", "--output", str(results)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite an input" in err and err.count("\n") == 1
    assert read.read_bytes() == before


def test_evaluate_refuses_a_decompression_bomb_in_one_line(tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    make_image(images / "a.png", 64, 64)
    (images / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    argv = ["--checkpoint", str(make_export(tmp_path / "model.pt")), "--levels", "1"]
    argv += ["--dataset", f"kodak={images}", "--output", str(tmp_path / "results")]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("jicd evaluate: error:")]
    assert "bomb.png is refused as a decompression bomb" in line and "Traceback" not in err
