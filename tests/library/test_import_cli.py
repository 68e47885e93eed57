"""``jicd import-checkpoint`` → ``jicd evaluate`` → ``jicd compress/decompress`` on a released
layout (JICDCLS q1, N = 128, synthetic weights with the layout's exact keys)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from released_layouts import layout, wrapped

from jicd.codec.commands import compress_main, decompress_main
from jicd.evaluation import evaluate
from jicd.models import build_model
from jicd.models.import_command import main as import_main
from jicd.models.released import LAYOUTS
from jicd.models.weights import load_for_inference
from trainer.testing import make_anchor_state_dict, make_image


def released_file(path: Path) -> dict[str, torch.Tensor]:
    """A JICDCLS training wrapper whose weights are a fresh (working) model's, renamed back."""
    torch.manual_seed(1)
    model = build_model("jicd", 1, head="authors")
    state = {LAYOUTS["jicdcls"].theirs(k): v for k, v in model.state_dict().items()}
    assert set(state) == set(layout("jicdcls_q1")["state_dict"])  # exactly the released keys
    torch.save(wrapped(state), path)
    return state


@pytest.mark.slow
def test_imported_model_evaluates_and_codes(tmp_path: Path, capsys) -> None:
    source = released_file(tmp_path / "checkpoint_best_loss.pth.tar")
    export = tmp_path / "jicdcls_q1.pt"
    argv = [str(tmp_path / "checkpoint_best_loss.pth.tar"), "-o", str(export), "--quality", "1"]
    assert import_main(argv) == 0
    assert "(jicdcls)" in capsys.readouterr().out
    payload = torch.load(export, weights_only=False)
    assert payload["imported_from"]["format"] == "jicdcls" and payload["model"]["head"] == "authors"
    model, identity = load_for_inference(export)
    assert identity["quality"] == 1 and identity["channels"] == 128
    assert torch.equal(model.d0.front.branches[1].weight, source["denoise_module_1.conv0.1.weight"])

    images = tmp_path / "images"
    images.mkdir()
    make_image(images / "photo.png", 140, 130)  # not a multiple of 64: noised, then cropped
    out = tmp_path / "results"
    eval_argv = ["--checkpoint", str(export), "--dataset", f"kodak={images}", "--levels", "2"]
    assert evaluate.main([*eval_argv, "--output", str(out)]) == 0
    results = json.loads((out / "jicd-kodak-level2.json").read_text())
    assert {"psnr", "psnr-rgb", "bpp"} <= results["results"].keys()
    assert "full image, then center crop" in results["protocol"]["noise"]
    assert results["results"]["bpp"][0] > 0

    coded, decoded = tmp_path / "photo.jicd", tmp_path / "photo.png"
    photo = str(images / "photo.png")
    assert compress_main([photo, "-o", str(coded), "--checkpoint", str(export)]) == 0
    assert decompress_main([str(coded), "-o", str(decoded), "--checkpoint", str(export)]) == 0
    assert np.asarray(Image.open(decoded)).shape == (140, 130, 3)


def test_import_of_an_anchor_and_user_errors(tmp_path: Path, capsys) -> None:
    anchor = make_anchor_state_dict(tmp_path / "anchor.pth")  # N=16: no standard quality
    out = tmp_path / "anchor_q1.pth"
    assert import_main([str(anchor), "-o", str(out), "--quality", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'g_a.0.conv1.weight' has shape [16, 3, 3, 3]" in err[0]
    assert not out.exists()
    assert import_main([str(tmp_path / "nope.pth"), "-o", str(out), "--quality", "1"]) == 2
    assert "file not found" in capsys.readouterr().err
    torch.save({"foo": torch.zeros(1)}, tmp_path / "foreign.pth")
    assert import_main([str(tmp_path / "foreign.pth"), "-o", str(out), "--quality", "2"]) == 2
    assert "unknown checkpoint layout" in capsys.readouterr().err
