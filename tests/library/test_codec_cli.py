"""The .jicd file format and the ``jicd compress`` / ``jicd decompress`` commands."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.commands import compress_main, decompress_main
from jicd.codec.images import crop_to, to_uint8
from jicd.models.weights import load_for_inference
from trainer.testing import make_anchor_state_dict, make_export, make_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny export, a foreign anchor, an odd-sized image, and its compressed file."""
    root = tmp_path_factory.mktemp("codec_cli")
    paths = {
        "ckpt": make_export(root / "model.pt"),
        "other": make_anchor_state_dict(root / "anchor.pth"),
        "odd": make_image(root / "odd.png", 67, 100),
        "jicd": root / "odd.jicd",
    }
    assert (
        compress_main(
            [str(paths["odd"]), "-o", str(paths["jicd"]), "--checkpoint", str(paths["ckpt"])]
        )
        == 0
    )
    return paths


def _coded_example() -> jicd_format.CodedImage:
    return jicd_format.CodedImage(
        arch="jicd",
        quality=3,
        channels=128,
        weights_sha256="ab" * 32,
        coder="wavefront",
        original_size=(201, 300),
        padded_size=(256, 320),
        latent_shape=(4, 5),
        streams=(b"\x01\x02\x03" * 10, b"\xff\x00"),
    )


def test_format_round_trip_and_layout():
    coded = _coded_example()
    data = jicd_format.encode(coded)
    assert jicd_format.decode(data) == coded
    assert data[:4] == b"JICD" and data[4:6] == b"\x00\x03"
    assert coded.payload_bytes == 32


def test_format_rejects_every_truncation_and_bit_flip():
    data = jicd_format.encode(_coded_example())
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            jicd_format.decode(data[:cut])
    for position in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(ValueError):
            jicd_format.decode(bytes(flipped))


def test_format_rejects_other_versions():
    data = bytearray(jicd_format.encode(_coded_example()))
    data[5] = 5
    with pytest.raises(ValueError, match="version 5"):
        jicd_format.decode(bytes(data))


@pytest.mark.parametrize("coder", ["wavefront", "serial"])
def test_round_trip_equals_model_decode_at_original_size(files, tmp_path, coder):
    coded_path, out = tmp_path / "x.jicd", tmp_path / "x.png"
    args = ["--checkpoint", str(files["ckpt"])]
    assert compress_main([str(files["odd"]), "-o", str(coded_path), *args, "--coder", coder]) == 0
    assert decompress_main([str(coded_path), "-o", str(out), *args]) == 0

    decoded = np.asarray(Image.open(out))
    assert decoded.shape == (67, 100, 3)
    coded = jicd_format.read(str(coded_path))
    assert coded.coder == coder and coded.padded_size == (128, 128)
    model, identity = load_for_inference(files["ckpt"])
    assert coded.weights_sha256 == identity["weights_sha256"]
    with torch.no_grad():
        x_hat = get_coder(coder).decompress(model, [[s] for s in coded.streams], coded.latent_shape)
    expected = to_uint8(crop_to(x_hat["x_hat"], 67, 100)).numpy()
    np.testing.assert_array_equal(decoded, expected)


def _corrupt(files, tmp_path) -> Path:
    data = bytearray(files["jicd"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.jicd").write_bytes(bytes(data))
    return tmp_path / "bad.jicd"


def _truncate(files, tmp_path) -> Path:
    (tmp_path / "short.jicd").write_bytes(files["jicd"].read_bytes()[:-9])
    return tmp_path / "short.jicd"


def _not_an_image(files, tmp_path) -> Path:
    (tmp_path / "notes.png").write_text("this is not a PNG\n")
    return tmp_path / "notes.png"


BAD_DECODES = {
    "wrong checkpoint": (lambda f, t: f["jicd"], "other", "does not match"),
    "corrupted file": (_corrupt, "ckpt", "CRC32"),
    "truncated file": (_truncate, "ckpt", "CRC32"),
    "missing file": (lambda f, t: t / "missing.jicd", "ckpt", "missing.jicd"),
    "not a jicd file": (lambda f, t: f["odd"], "ckpt", "not a .jicd file"),
}


@pytest.mark.parametrize("case", BAD_DECODES)
def test_bad_decode_inputs_fail_cleanly(files, tmp_path, capsys, case):
    make_input, checkpoint, message = BAD_DECODES[case]
    out = tmp_path / "out.png"
    argv = [
        str(make_input(files, tmp_path)),
        "-o",
        str(out),
        "--checkpoint",
        str(files[checkpoint]),
    ]
    assert decompress_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jicd decompress: error:") and message in err
    assert err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


BAD_ENCODES = {
    "missing image": (lambda f, t: t / "nope.png", "ckpt", "nope.png"),
    "not an image": (_not_an_image, "ckpt", "not a readable image"),
    "missing checkpoint": (lambda f, t: f["odd"], None, "none.pt"),
}


@pytest.mark.parametrize("case", BAD_ENCODES)
def test_bad_encode_inputs_fail_cleanly(files, tmp_path, capsys, case):
    make_input, checkpoint, message = BAD_ENCODES[case]
    out = tmp_path / "out.jicd"
    ckpt = str(files[checkpoint]) if checkpoint else str(tmp_path / "none.pt")
    assert (
        compress_main([str(make_input(files, tmp_path)), "-o", str(out), "--checkpoint", ckpt]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("jicd compress: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_header_geometry_is_checked(files, tmp_path, capsys):
    coded = jicd_format.read(str(files["jicd"]))
    jicd_format.write(str(tmp_path / "g.jicd"), dataclasses.replace(coded, latent_shape=(9, 9)))
    argv = [
        str(tmp_path / "g.jicd"),
        "-o",
        str(tmp_path / "g.png"),
        "--checkpoint",
        str(files["ckpt"]),
    ]
    assert decompress_main(argv) == 2
    assert "latent shape" in capsys.readouterr().err


@pytest.mark.slow
def test_subprocess_error_has_no_traceback(files, tmp_path):
    out = tmp_path / "out.png"
    argv = [
        sys.executable,
        "-m",
        "jicd.codec.commands",
        "decompress",
        str(_corrupt(files, tmp_path)),
        "-o",
        str(out),
        "--checkpoint",
        str(files["ckpt"]),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "jicd decompress: error: corrupted or truncated .jicd file" in proc.stderr
    assert not out.exists()
