"""Model files from someone else (issue 21, defects 3, 6 and 7): damaged buffers are refused on
load, a model that yields non-finite latents is refused instead of spinning, identical weights
keep one identity, and a file cannot make the loader build a huge model."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hostile import one_error_line, patch_body, run_limited

from jicd.codec.commands import compress_main, decompress_main
from jicd.errors import UserError
from jicd.models import ModelConfig
from jicd.models.import_command import main as import_main
from jicd.models.weights import import_checkpoint, load_for_inference
from trainer.testing import TINY_CHANNELS, make_export, make_image

DAMAGED = {
    "pedestal": ("g_s.1.igdn.beta_reparam.pedestal", lambda t: t + 1.0),
    "bound": ("g_s.1.igdn.beta_reparam.lower_bound.bound", lambda t: -t),
    "mask": ("context_prediction.mask", lambda t: torch.ones_like(t)),
}


def _edited_export(source: Path, target: Path, key: str, edit) -> Path:
    payload = torch.load(source, weights_only=True)
    payload["state_dict"][key] = edit(payload["state_dict"][key])
    torch.save(payload, target)
    return target


@pytest.mark.parametrize("buffer", sorted(DAMAGED))
def test_damaged_derived_buffers_are_refused_on_load(tmp_path, buffer) -> None:
    key, edit = DAMAGED[buffer]
    path = _edited_export(make_export(tmp_path / "ok.pt"), tmp_path / "bad.pt", key, edit)
    with pytest.raises(UserError, match=f"buffer '{key}' differs from what the architecture"):
        load_for_inference(path)
    with pytest.raises(UserError, match=f"buffer '{key}' differs"):
        import_checkpoint(path, quality=1)


@pytest.mark.parametrize("coder", ["wavefront", "serial", "integer"])
def test_a_model_yielding_non_finite_latents_is_refused_not_spun_on(tmp_path, coder) -> None:
    """Finite weights of 1e38 overflow the analysis to inf/NaN: the rANS encoder used to spin
    for ever on the NaN cast to an index (run with a timeout so the old hang fails)."""
    weights = make_export(tmp_path / "ok.pt")
    if coder == "integer":  # an integerized export: the wavefront coder takes its integer path
        from jicd.codec.integer.command import main as integerize_main

        assert integerize_main([str(weights), "-o", str(tmp_path / "int.pt")]) == 0
        weights, coder = tmp_path / "int.pt", "wavefront"
    path = _edited_export(weights, tmp_path / "huge.pt", "ga1.3.weight", lambda t: t * 0 + 1e38)
    image = make_image(tmp_path / "a.png", 64, 64)
    out = tmp_path / "a.jicd"
    argv = ["compress", str(image), "-o", str(out), "--checkpoint", str(path), "--coder", coder]
    proc = run_limited(argv, timeout=120)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr, "jicd compress")
    assert "non-finite values (NaN or inf) in the latent y" in line
    assert not out.exists()


def test_re_saving_identical_weights_keeps_old_and_new_files_decodable(tmp_path, capsys) -> None:
    first = make_export(tmp_path / "first.pt")
    image = make_image(tmp_path / "a.png", 64, 64)
    coded = tmp_path / "a.jicd"
    assert compress_main([str(image), "-o", str(coded), "--checkpoint", str(first)]) == 0
    again = tmp_path / "again.pt"  # the same tensors, another file
    assert import_main([str(first), "-o", str(again), "--quality", "1"]) == 0
    assert (
        hashlib.sha256(again.read_bytes()).digest() != hashlib.sha256(first.read_bytes()).digest()
    )
    out = tmp_path / "a.png.out.png"
    assert decompress_main([str(coded), "-o", str(out), "--checkpoint", str(again)]) == 0

    # A version-2 file names the sha256 of the model *file*: it decodes with that file and
    # with the export imported from it (which records the digest), with no other.
    data = coded.read_bytes()
    arch_end = 7 + data[6]
    legacy = patch_body(data, 4, b"\x00\x02")
    legacy = patch_body(legacy, arch_end + 3, hashlib.sha256(first.read_bytes()).digest())
    (tmp_path / "v2.jicd").write_bytes(legacy)
    for model in (first, again):
        target = tmp_path / f"v2-{model.stem}.png"
        assert (
            decompress_main(
                [str(tmp_path / "v2.jicd"), "-o", str(target), "--checkpoint", str(model)]
            )
            == 0
        )
        assert target.read_bytes() == out.read_bytes()
    other = make_export(tmp_path / "other.pt", seed=1)
    target = tmp_path / "v2-other.png"
    assert (
        decompress_main([str(tmp_path / "v2.jicd"), "-o", str(target), "--checkpoint", str(other)])
        == 2
    )
    assert "does not match" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("channels", "message"),
    [(20_000, "model.channels must be a multiple of 4 in [4, 1024]"), (64, "asks for N=64")],
)
def test_an_export_cannot_size_the_model_beyond_its_weights(tmp_path, channels, message) -> None:
    """A 1.4 KB export claiming model.channels=20000 made the loader build the huge model
    before reading a weight (run with a memory limit so the old allocation fails)."""
    cfg = asdict(ModelConfig(preset="jicd", quality=1, channels=TINY_CHANNELS))
    small = {"h_a.0.weight": torch.zeros(TINY_CHANNELS, TINY_CHANNELS, 3, 3)}
    payload = {"format": "jicd-export", "version": 1, "model": cfg | {"channels": channels}}
    torch.save(payload | {"state_dict": small}, tmp_path / "big.pt")
    assert (tmp_path / "big.pt").stat().st_size < 16_000
    image = make_image(tmp_path / "a.png", 64, 64)
    argv = ["compress", str(image), "-o", str(tmp_path / "a.jicd"), "--checkpoint"]
    proc = run_limited([*argv, str(tmp_path / "big.pt")], timeout=120, memory_gib=4)
    assert proc.returncode == 2
    assert message in one_error_line(proc.stderr, "jicd compress")
