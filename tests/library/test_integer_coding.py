"""Coding with the integer entropy path: round trips, rate against the float path, the version-3
``.jicd`` files, ``jicd integerize`` and the commands that use integerized exports."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from test_integer_network import lively_anchor

from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.commands import compress_main, decompress_main
from jicd.codec.integer import coder as integer_coder
from jicd.codec.integer.calibration import generated_images, noisy_versions
from jicd.codec.integer.command import main as integerize_main
from jicd.codec.integer.convert import integerize
from jicd.codec.integer.gemm import forced_kernel, int8_kernel_exact
from jicd.codec.placement import analysis_transforms
from jicd.errors import UserError
from jicd.models.weights import load_for_inference
from trainer.testing import make_image, make_lively_export


@pytest.fixture(scope="module")
def model():
    """A lively Cheng2020Anchor(32) carrying its integer entropy model."""
    net = lively_anchor(32, seed=3)
    net.integer_entropy = integerize(net, noisy_versions(generated_images(3, 128)))
    return net


def image(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("height", "width"), [(64, 64), (128, 192), (192, 64)])
def test_round_trip_is_exact(model, height: int, width: int) -> None:
    """The decoder's latent is the encoder's, bit for bit, and so is the image."""
    net, x = model.integer_entropy, image(height, width, seed=height + width)
    with torch.inference_mode():
        y, z = analysis_transforms(model, x)
        z_string, z_int = integer_coder.encode_z(net, z)
        string, y_int, check = integer_coder.encode_latent(net, y, net.hyper_params(z_int))
        z_back = integer_coder.decode_z(net, z_string, tuple(z.shape[-2:]))
        decoded = integer_coder.decode_latent(net, string, net.hyper_params(z_back), check)
    assert torch.equal(z_back, z_int) and torch.equal(decoded, y_int)
    y_hat = integer_coder.to_latent(net, y_int)
    assert float((y_hat - y).abs().max()) <= 0.5 + 2.0**-net.y_bits  # quantised around the means
    assert (y_hat.round() != 0).float().mean() > 0.3, "latent should not be trivial"
    coder = get_coder()
    out = coder.compress(model, x)
    assert out["entropy"] == "integer" and out["strings"][0] == [string]
    with torch.inference_mode():
        expected = model.g_s(y_hat).clamp_(0, 1)
    assert torch.equal(coder.decompress(model, out["strings"], out["shape"])["x_hat"], expected)


def test_rate_close_to_the_float_path(model) -> None:
    """Same weights, same latent: the integer path's streams are within 0.5 % of the float's."""
    x = image(192, 256, seed=7)
    sizes = {}
    for entropy in ("float", "integer"):
        out = get_coder().compress(model, x, entropy=entropy)
        assert out["entropy"] == entropy
        sizes[entropy] = sum(len(s) for part in out["strings"] for s in part)
    assert sizes["float"] > 1000
    assert abs(sizes["integer"] / sizes["float"] - 1) < 0.005, sizes


def test_thread_count_does_not_matter(model) -> None:
    x = image(128, 128, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = get_coder().compress(model, x)
        torch.set_num_threads(3)
        three = get_coder().compress(model, x)
        decoded = get_coder().decompress(model, one["strings"], one["shape"], one["checks"])
    finally:
        torch.set_num_threads(threads)
    assert one["strings"] == three["strings"] and one["checks"] == three["checks"]
    assert decoded["x_hat"].shape == x.shape


def test_kernels_do_not_matter(model) -> None:
    """A file encoded with one exact GEMM kernel decodes with the other to the same image."""
    if not int8_kernel_exact():
        pytest.skip("this CPU's int8 GEMM is not exact: only the float64 kernel runs here")
    x, coder = image(128, 192, seed=11), get_coder()
    with forced_kernel("int8"):
        int8 = coder.compress(model, x)
        int8_image = coder.decompress(model, int8["strings"], int8["shape"], int8["checks"])
    with forced_kernel("float64"):
        f64 = coder.compress(model, x)
        f64_image = coder.decompress(model, int8["strings"], int8["shape"], int8["checks"])
    assert int8["strings"] == f64["strings"] and int8["checks"] == f64["checks"]
    assert torch.equal(int8_image["x_hat"], f64_image["x_hat"])


def test_paths_must_match(model) -> None:
    coder, x = get_coder(), image(64, 64, seed=1)
    out = coder.compress(model, x)
    with pytest.raises(UserError, match="checksum of the CDF indices differs"):
        coder.decompress(model, out["strings"], out["shape"], [out["checks"][0] ^ 1])
    plain = lively_anchor(32, seed=3)
    with pytest.raises(UserError, match="jicd integerize"):
        coder.decompress(plain, out["strings"], out["shape"], entropy="integer")
    with pytest.raises(UserError, match="float entropy path only"):
        get_coder("serial").compress(model, x, entropy="integer")


def test_version_4_header() -> None:
    fields = dict(
        arch="jicd", quality=3, channels=16, weights_sha256="ab" * 32, coder="wavefront",
        original_size=(60, 120), padded_size=(64, 128), latent_shape=(1, 2),
        streams=(b"\x01\x02", b"\x03"), encoder_torch="2.x", index_check=7,
    )  # fmt: skip
    requirements = jicd_format.decode_requirements({"checks": [7], "entropy": "integer"})
    integer = jicd_format.CodedImage(**(fields | requirements | {"encoder_torch": "2.x"}))
    data = jicd_format.encode(integer)
    assert data[4:6] == b"\x00\x04" and jicd_format.decode(data) == integer
    assert integer.decode_device == "any" and integer.entropy == "integer"
    floating = jicd_format.CodedImage(**fields)
    assert jicd_format.encode(floating)[4:6] == b"\x00\x03"  # float-path files are version 3
    # a version-3 file that claims another path is refused (CRC made valid again)
    body = data[:-4].replace(b"\x07integer", b"\x07float32")
    with pytest.raises(UserError, match="unsupported .jicd entropy path 'float32'"):
        jicd_format.decode(body + struct.pack(">I", zlib.crc32(body)))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integer_cli")
    paths = {
        "float": make_lively_export(root / "float.pt", preset="baseline"),
        "int": root / "int.pt",
        "odd": make_image(root / "odd.png", 67, 100),
        "cal": root / "calibration",
    }
    paths["cal"].mkdir()
    make_image(paths["cal"] / "a.png", 96, 128, seed=1)
    make_image(paths["cal"] / "b.png", 30, 30, seed=2)  # too small: skipped
    args = [str(paths["float"]), "-o", str(paths["int"]), "--calibration", str(paths["cal"])]
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        assert integerize_main(args) == 0
    paths["summary"] = summary.getvalue()
    return paths


def test_integerize_writes_an_export_the_commands_use(files, capsys, tmp_path) -> None:
    assert "calibrated on 1 images of" in files["summary"]
    model, identity = load_for_inference(files["int"])
    assert identity["entropy"] == "integer" and model.integer_entropy.y_bits > 0
    coded, png = tmp_path / "odd.jicd", tmp_path / "odd.png"
    checkpoint = ["--checkpoint", str(files["int"])]
    assert compress_main([str(files["odd"]), "-o", str(coded), *checkpoint]) == 0
    header = jicd_format.read(str(coded))
    assert header.entropy == "integer" and coded.read_bytes()[4:6] == b"\x00\x04"
    assert decompress_main([str(coded), "-o", str(png), *checkpoint]) == 0
    # the float export that it came from refuses the file (other weights sha256)
    assert decompress_main([str(coded), "-o", str(tmp_path / "x.png"), "--checkpoint",
                            str(files["float"])]) == 2  # fmt: skip
    assert "checkpoint does not match" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_integerize_finetunes_with_the_integer_path_in_the_loop(files, capsys, tmp_path) -> None:
    out = tmp_path / "tuned.pt"
    args = [str(files["float"]), "-o", str(out), "--images", "2", "--finetune-steps", "3",
            "--finetune-crop", "64", "--finetune-lr", "1e-4"]  # fmt: skip
    assert integerize_main(args) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned 3 steps with the integer path in the loop" in printed, printed
    payload = torch.load(out, weights_only=True)
    record = payload["integer_entropy"]["calibration"]["finetune"]
    assert record["steps"] == 3 and record["crop"] == 64
    source = torch.load(files["float"], weights_only=True)
    for key, value in source["state_dict"].items():  # the float weights stay the source's
        assert torch.equal(payload["state_dict"][key], value), key
    model, identity = load_for_inference(out)
    assert identity["entropy"] == "integer"


def test_integerize_refuses_bad_input(files, capsys, tmp_path) -> None:
    odd = str(files["odd"])
    cases = [
        ([odd, "-o", str(tmp_path / "o.pt")], "refused to load it"),
        ([str(files["float"]), "-o", str(files["float"])], "would overwrite"),
        ([str(files["float"]), "-o", "o.pt", "--calibration", str(tmp_path / "no")], "no such"),
        ([str(files["float"]), "-o", "o.pt", "--images", "0"], "--images"),
        ([str(files["float"]), "-o", "o.pt", "--finetune-steps", "-1"], "--finetune-steps"),
        ([str(files["float"]), "-o", "o.pt", "--finetune-lr", "1"], "--finetune-lr"),
        ([str(files["float"]), "-o", "o.pt", "--finetune-crop", "100"], "--finetune-crop"),
    ]
    for argv, message in cases:
        assert integerize_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.pt").exists()


def test_float_file_with_another_index_checksum_is_refused(files, capsys, tmp_path) -> None:
    """A float-path (v2) file whose indices this machine would derive differently: one line,
    exit 2, no output (simulated by changing the stored checksum, CRC32 made valid again)."""
    coded, png = tmp_path / "f.jicd", tmp_path / "f.png"
    checkpoint = ["--checkpoint", str(files["float"])]
    assert compress_main([str(files["odd"]), "-o", str(coded), *checkpoint]) == 0
    header = jicd_format.read(str(coded))
    assert header.entropy == "float" and header.index_check is not None
    altered = jicd_format.encode(
        jicd_format.CodedImage(**{**header.__dict__, "index_check": header.index_check ^ 1})
    )
    coded.write_bytes(altered)
    capsys.readouterr()
    assert decompress_main([str(coded), "-o", str(png), *checkpoint]) == 2
    err = capsys.readouterr().err
    assert "checksum of the CDF indices differs" in err and err.count("\n") == 1
    assert not png.exists()


def test_evaluate_codes_with_the_integer_path(files) -> None:
    from jicd.evaluation.evaluate import code_and_score

    model, _ = load_for_inference(files["int"])
    x = image(64, 128, seed=4)
    scores = code_and_score(model, get_coder(), x, x)
    assert scores["entropy"] == "integer" and scores["bpp"] > 0
