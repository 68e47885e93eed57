"""The codec CLI's fast failure, several files per call, and input conversion notices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jicd.codec.commands import compress_main, decompress_main
from jicd.codec.images import load_rgb
from jicd.pixels import conversion_notice
from trainer.testing import make_export, make_image

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "compressai", "torchvision", "numpy", "PIL")


def _imports_after(argv: list[str]) -> tuple[int, list[str], str]:
    """Run ``jicd ARGV`` in a fresh interpreter; exit code, heavy modules it imported, stderr."""
    code = (
        "import json, sys\n"
        "from jicd.__main__ import main\n"
        f"rc = main({argv!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "missing.png", "-o", "x.jicd", "--checkpoint", "model.pt"], "missing.png"),
        (["decompress", "gone.jicd", "-o", "x.png", "--checkpoint", "model.pt"], "gone.jicd"),
        (["compress", "README.md", "-o", "x.jicd", "--checkpoint", "none.pt"], "none.pt"),
        (["compress", "README.md", "-o", "x.jicd"], "--checkpoint"),
    ],
    ids=["missing input", "missing coded file", "missing checkpoint", "missing option"],
)
def test_command_line_errors_come_before_any_heavy_import(argv, message) -> None:
    code, imported, stderr = _imports_after(argv)
    assert code == 2 and message in stderr and stderr.count("\n") == 1
    assert imported == [], f"imported {imported} before failing"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch")
    images = root / "images"
    images.mkdir()
    make_image(images / "a.png", 70, 90, seed=1)
    make_image(images / "b.png", 64, 64, seed=2)
    grey = np.asarray(Image.open(images / "b.png").convert("L"))
    Image.fromarray(grey).save(images / "grey.png")
    (images / "broken.png").write_text("not a PNG\n")
    return {"root": root, "images": images, "ckpt": make_export(root / "model.pt")}


@pytest.mark.slow
def test_a_folder_is_coded_with_one_model_load_and_per_file_errors(batch, capsys) -> None:
    out, decoded = batch["root"] / "coded", batch["root"] / "decoded"
    ckpt = ["--checkpoint", str(batch["ckpt"])]
    assert compress_main([str(batch["images"]), "-o", f"{out}/", *ckpt]) == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.jicd", "b.jicd", "grey.jicd"]
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0] and "not a readable image" in errors[0]
    assert "grey.png: grey image: converted to RGB" in captured.out + captured.err
    assert "compressed 3 of 4 files" in captured.out and "1 failed" in captured.out
    assert decompress_main([str(out), "-o", str(decoded), *ckpt]) == 0
    assert sorted(p.name for p in decoded.iterdir()) == ["a.png", "b.png", "grey.png"]
    assert Image.open(decoded / "a.png").size == (90, 70)
    assert "decompressed 3 of 3 files" in capsys.readouterr().out


def test_two_inputs_for_one_output_are_refused_before_loading(batch, tmp_path, capsys) -> None:
    (tmp_path / "x").mkdir()
    make_image(tmp_path / "x" / "a.png", 64, 64)
    argv = [
        str(batch["images"] / "a.png"),
        str(tmp_path / "x" / "a.png"),
        "-o",
        str(tmp_path / "o"),
    ]
    assert compress_main([*argv, "--checkpoint", str(batch["ckpt"])]) == 2
    assert "would both be written to" in capsys.readouterr().err


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def test_non_rgb_inputs_are_converted_with_a_notice(tmp_path: Path) -> None:
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    cases = {
        "rgba.png": ("alpha channel dropped", _save(tmp_path / "rgba.png", rgb, "RGBA")),
        "palette.png": ("palette image", _save(tmp_path / "palette.png", rgb, "P")),
        "cmyk.jpg": ("CMYK image", _save(tmp_path / "cmyk.jpg", rgb, "CMYK")),
        "grey.png": ("grey image", _save(tmp_path / "grey.png", rgb[..., 0])),
        "grey16.png": (
            "16-bit grey image: rescaled",
            _save(tmp_path / "grey16.png", rgb[..., 0].astype(np.uint16) * 257),
        ),
    }
    for name, (expected, path) in cases.items():
        notices: list[str] = []
        x = load_rgb(str(path), notices.append)
        assert x.shape == (1, 3, 40, 50), name
        assert len(notices) == 1 and notices[0] == f"{path}: {notices[0].split(': ', 1)[1]}"
        assert expected in notices[0], (name, notices)
    # 16-bit grey keeps its levels (x / 257), not PIL's clipping convert
    x = load_rgb(str(cases["grey16.png"][1]), lambda _: None)
    assert np.array_equal((x[0, 0] * 255).round().byte().numpy(), rgb[..., 0])
    plain: list[str] = []
    load_rgb(str(_save(tmp_path / "rgb.png", rgb)), plain.append)
    assert plain == []


def test_a_16_bit_rgb_png_is_noticed(tmp_path: Path) -> None:
    """PIL opens 16-bit RGB PNGs as plain "RGB": only the header tells (written with raw IHDR)."""
    import struct
    import zlib

    height, width = 4, 5
    rows = b"".join(b"\0" + bytes(range(width * 6)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    )
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path = tmp_path / "deep.png"
    path.write_bytes(png)
    with Image.open(path) as image:
        assert (
            conversion_notice(image, str(path)) == "16-bit RGB image: reduced to 8 bits per channel"
        )
