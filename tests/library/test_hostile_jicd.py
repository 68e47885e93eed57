"""``.jicd`` files from someone else (issue 21, defects 2, 5 and 8): every claim in a header is
bounded before any work is done for it, and every refusal is one line.

The cases that crashed or hung the old decoder run in a subprocess with a memory limit and a
timeout, so that the old behaviour fails the test instead of the test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile import one_error_line, png_claiming, run_limited, with_header

from jicd.codec import format as jicd_format
from jicd.codec.commands import compress_main, decompress_main
from trainer.testing import make_export, make_image

MAX_PIXELS_ENV = "JICD_MAX_PIXELS"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny export, a 64×64 image coded with each coder (the smallest files it writes)."""
    root = tmp_path_factory.mktemp("hostile_jicd")
    paths = {"ckpt": make_export(root / "model.pt"), "png": make_image(root / "a.png", 64, 64)}
    for coder in ("wavefront", "serial"):
        paths[coder] = root / f"{coder}.jicd"
        argv = [str(paths["png"]), "-o", str(paths[coder]), "--checkpoint", str(paths["ckpt"])]
        assert compress_main([*argv, "--coder", coder]) == 0
    return paths


def _claiming(files, tmp_path, height: int, width: int, coder: str = "wavefront") -> Path:
    """A copy of the small file whose header claims an image of ``height``×``width``, with a
    consistent padded size and latent shape, valid CRC and model digest."""
    pad_h, pad_w = -(-height // 64) * 64, -(-width // 64) * 64
    data = with_header(
        files[coder].read_bytes(),
        original_size=(height, width),
        padded_size=(pad_h, pad_w),
        latent_shape=(pad_h // 64, pad_w // 64),
    )
    path = tmp_path / f"claims-{height}x{width}.jicd"
    path.write_bytes(data)
    return path


def _decompress(files, source: Path, tmp_path: Path, *extra: str):
    out = tmp_path / "out.png"
    argv = ["decompress", str(source), "-o", str(out), "--checkpoint", str(files["ckpt"])]
    return run_limited([*argv, *extra], timeout=180), out


@pytest.mark.parametrize(
    ("height", "width", "coder", "message"),
    [
        (51_200, 51_200, "wavefront", "more than the limit"),  # the 171-byte segfault
        pytest.param(100_000, 100_000, "wavefront", "more than the limit", marks=pytest.mark.slow),
        # ~15 s and 1.4 GB before
        pytest.param(16_384, 16_384, "wavefront", "more than the limit", marks=pytest.mark.slow),
        (4_096, 4_096, "serial", "more than the limit"),  # minutes in CompressAI's loop
        (2_048, 2_048, "wavefront", "stream has"),  # allowed size, implausibly short streams
    ],
)
def test_a_header_claiming_a_huge_image_is_refused_before_decoding(
    files, tmp_path, height, width, coder, message
) -> None:
    source = _claiming(files, tmp_path, height, width, coder)
    assert source.stat().st_size < 600
    proc, out = _decompress(files, source, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in one_error_line(proc.stderr, "jicd decompress")
    assert not out.exists()


def test_the_pixel_limit_is_documented_and_can_be_raised(files, tmp_path, capsys) -> None:
    source = _claiming(files, tmp_path, 2_048, 2_048)  # refused for its streams, not its size
    out, base = tmp_path / "out.png", ["-o", str(tmp_path / "out.png")]
    args = [str(source), *base, "--checkpoint", str(files["ckpt"])]
    assert decompress_main([*args, "--max-pixels", str(1000)]) == 2
    assert "more than the limit of 1000 (raise it with --max-pixels" in capsys.readouterr().err
    os.environ[MAX_PIXELS_ENV] = "1000"
    try:
        assert decompress_main(args) == 2
        assert "limit of 1000" in capsys.readouterr().err
    finally:
        del os.environ[MAX_PIXELS_ENV]
    assert decompress_main([*args, "--max-pixels", str(2**23)]) == 2
    assert "stream has" in capsys.readouterr().err and not out.exists()
    png = [str(files["png"]), "-o", str(tmp_path / "x.jicd"), "--checkpoint", str(files["ckpt"])]
    assert compress_main([*png, "--max-pixels", "4095"]) == 2  # 64 x 64 = 4096 pixels
    assert "more than the limit of 4095" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sizes",
    [
        {"original_size": (0, 0), "padded_size": (0, 0), "latent_shape": (0, 0)},
        {"original_size": (0, 64)},
        {"original_size": (2**32 - 1, 2**32 - 1)},  # what a negative size becomes in uint32
        {"padded_size": (128, 64), "latent_shape": (2, 1)},  # more padding than the encoder adds
    ],
)
def test_zero_negative_and_inconsistent_sizes_are_one_line(files, tmp_path, capsys, sizes):
    source = tmp_path / "bad.jicd"
    source.write_bytes(with_header(files["wavefront"].read_bytes(), **sizes))
    out = tmp_path / "out.png"
    argv = [str(source), "-o", str(out), "--checkpoint", str(files["ckpt"])]
    assert decompress_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jicd decompress: error:") and err.count("\n") == 1
    assert not out.exists()


def test_garbage_streams_of_plausible_length_are_one_line(files, tmp_path) -> None:
    """All-0xFF streams drive CompressAI's decoder into its bypass path on every symbol; it is
    handed zero padding (codec.limits), so it decodes zeros, never process memory, and the
    index checksum refuses the result."""
    coded = jicd_format.decode(files["wavefront"].read_bytes())
    ones = tuple(b"\xff" * max(64, 4 * len(s)) for s in coded.streams)
    source = tmp_path / "ones.jicd"
    source.write_bytes(with_header(files["wavefront"].read_bytes(), streams=ones))
    proc, out = _decompress(files, source, tmp_path)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0 or not out.exists()


def test_decompress_of_a_device_or_fifo_is_refused_without_reading(files, tmp_path) -> None:
    fifo = tmp_path / "pipe.jicd"
    os.mkfifo(fifo)
    for source in (Path("/dev/zero"), fifo):
        proc, out = _decompress(files, source, tmp_path)
        assert proc.returncode == 2
        assert "not a regular file" in one_error_line(proc.stderr, "jicd decompress")


def test_header_text_with_escape_codes_is_refused_not_printed(files, tmp_path, capsys) -> None:
    source = tmp_path / "escape.jicd"
    source.write_bytes(with_header(files["wavefront"].read_bytes(), arch="\x1b]0;owned\x07\x1b[2J"))
    argv = [str(source), "-o", str(tmp_path / "o.png"), "--checkpoint", str(files["ckpt"])]
    assert decompress_main(argv) == 2
    err = capsys.readouterr().err
    assert "control characters" in err and "\x1b" not in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["compress", "decompress", "checkpoint"])
def test_an_output_that_resolves_to_an_input_is_refused(files, tmp_path, capsys, command) -> None:
    """``compress a.png -o a.png`` and ``decompress f.jicd -o f.jicd`` destroyed the input."""
    if command == "decompress":
        source = tmp_path / "f.jicd"
        source.write_bytes(files["wavefront"].read_bytes())
        target, main = source, decompress_main
    else:
        source = tmp_path / "a.png"
        source.write_bytes(files["png"].read_bytes())
        target, main = source, compress_main
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(files["ckpt"].read_bytes())
    if command == "checkpoint":  # through a symlink: the file, not its spelling, counts
        target = tmp_path / "link.jicd"
        target.symlink_to(ckpt)
    before = {p: p.read_bytes() for p in (source, ckpt)}
    assert main([str(source), "-o", str(target), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite an input" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in (source, ckpt)} == before


def test_a_decompression_bomb_is_one_line_and_a_batch_goes_on(files, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    (folder / "good.png").write_bytes(files["png"].read_bytes())
    ckpt = ["--checkpoint", str(files["ckpt"])]
    assert compress_main([str(folder / "bomb.png"), "-o", str(tmp_path / "b.jicd"), *ckpt]) == 2
    err = capsys.readouterr().err
    assert "decompression bomb" in err or "more than the limit" in err
    assert err.count("\n") == 1 and not (tmp_path / "b.jicd").exists()
    assert compress_main([str(folder), "-o", str(tmp_path / "out"), *ckpt]) == 2
    captured = capsys.readouterr()
    assert "bomb.png" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "good.jicd").is_file() and not (
        tmp_path / "out" / "bomb.jicd"
    ).exists()
    assert "compressed 1 of 2 files" in captured.out
