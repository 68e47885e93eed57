"""Coding with models off the CPU: entropy parameters on the CPU, refusals, the v2 header.

No GPU here: a model on the ``meta`` device and a fake-CUDA model (``FakeTensorMode`` tensors
report ``cuda:0`` without a GPU) check the refusals; the CPU copy of the entropy modules (what a
CUDA model codes with) must give the very same streams as the model itself; a decoder whose
arithmetic derives other CDF indices must refuse instead of returning a wrong image. The real
GPU-encode -> CPU-decode round trip is a line of ``make gpu-check``.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import pytest
import torch
from compressai.models import Cheng2020Anchor
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.placement import ENTROPY_MODULES, EntropySide, entropy_side, model_device
from jicd.codec.wavefront import analyse, decode_latent, encode_latent_checked
from jicd.errors import UserError


@pytest.fixture(scope="module")
def model() -> Cheng2020Anchor:
    torch.manual_seed(0)
    net = Cheng2020Anchor(16).eval()
    net.update(force=True)
    return net


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("coder", ["wavefront", "serial"])
def test_model_on_the_meta_device_is_refused(coder: str) -> None:
    meta = Cheng2020Anchor(16).to("meta")
    with pytest.raises(UserError, match="meta device"):
        get_coder(coder).compress(meta, image())


class OnFakeGpu(nn.Module):
    """A model whose weights report ``cuda:0`` (a FakeTensorMode tensor, no GPU needed) and
    whose entropy modules are those of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        with FakeTensorMode():
            self.marker = nn.Parameter(torch.empty(1, device="cuda"))
        for name in ENTROPY_MODULES:
            setattr(self, name, getattr(model, name))


def test_serial_coder_refuses_a_cuda_model(model) -> None:
    fake = OnFakeGpu(model)
    assert model_device(fake).type == "cuda"
    with pytest.raises(UserError, match="serial coder computes entropy parameters on"):
        get_coder("serial").compress(fake, image())


def test_cpu_model_codes_with_itself_and_others_get_a_cached_cpu_copy(model) -> None:
    assert entropy_side(model) is model
    fake = OnFakeGpu(model)
    side = entropy_side(fake)
    assert isinstance(side, EntropySide) and entropy_side(fake) is side  # copied once
    assert {t.device.type for t in (*side.parameters(), *side.buffers())} == {"cpu"}
    with torch.no_grad():
        fake.h_s[0].bias.add_(0.0)  # an in-place update (optimizer step): copy again
    assert entropy_side(fake) is not side


def test_cpu_copy_of_the_entropy_modules_gives_the_same_stream(model) -> None:
    """What a CUDA model codes with (EntropySide) is bit-for-bit what the CPU model codes."""
    y, _, _, params = analyse(model, image())
    direct = encode_latent_checked(model, y, params)
    copied = encode_latent_checked(EntropySide(model), y, params)
    assert direct[0] == copied[0] and direct[2] == copied[2]
    assert torch.equal(direct[1], copied[1])


def test_decoder_with_other_entropy_arithmetic_refuses(model) -> None:
    coder = get_coder("wavefront")
    out = coder.compress(model, image(1))
    decoded = coder.decompress(model, out["strings"], out["shape"], checks=out["checks"])
    assert decoded["x_hat"].device.type == "cpu"
    # Another machine's rounding, exaggerated: the decoder derives other scale indices.
    other = EntropySide(model)
    with torch.no_grad():
        other.entropy_parameters[-1].bias[:16].add_(0.05)
    y, _, _, params = analyse(model, image(1))
    string, _, check = encode_latent_checked(model, y, params)
    assert decode_latent(model, string, params, check) is not None
    with pytest.raises(UserError, match="checksum of the CDF indices differs"):
        decode_latent(other, string, params, check)
    with pytest.raises(UserError, match="checksum of the CDF indices differs"):
        coder.decompress(model, out["strings"], out["shape"], checks=[out["checks"][0] ^ 1])


def coded_example(**changes) -> jicd_format.CodedImage:
    """A small v2 header: geometry of a 60x120 image, two tiny streams, an index checksum."""
    fields = dict(
        arch="jicd", quality=3, channels=16, weights_sha256="ab" * 32, coder="wavefront",
        original_size=(60, 120), padded_size=(64, 128), latent_shape=(1, 2),
        streams=(b"\x01\x02", b"\x03"), encoder_torch=torch.__version__, index_check=0xDEADBEEF,
    )  # fmt: skip
    return jicd_format.CodedImage(**(fields | changes))


def test_header_records_what_decoding_needs() -> None:
    coded = coded_example()
    back = jicd_format.decode(jicd_format.encode(coded))
    assert back == coded and back.checks == [0xDEADBEEF] and back.decode_device == "cpu"
    serial = coded_example(coder="serial", index_check=None)
    assert jicd_format.decode(jicd_format.encode(serial)).checks is None
    fields = jicd_format.decode_requirements({"checks": [7]})
    assert fields == {
        "decode_device": "cpu",
        "encoder_torch": torch.__version__,
        "index_check": 7,
        "entropy": "float",
        "version": 3,
    }


def test_file_needing_another_decode_device_is_refused() -> None:
    data = jicd_format.encode(coded_example(decode_device="cuda"))
    with pytest.raises(UserError, match="entropy parameters computed on 'cuda'"):
        jicd_format.decode(data)


def test_version_1_files_are_still_read() -> None:
    """A v1 file: the v2 layout without the three new fields, version 1, its own CRC."""
    coded = coded_example(encoder_torch="", index_check=None)
    v2 = jicd_format.encode(coded)[:-4]
    fields = (
        struct.pack(">B", 3) + b"cpu" + struct.pack(">B", 0) + struct.pack(">BI", 0, 0)
    )  # decode device, empty torch version, no check
    start = v2.index(b"wavefront") + len("wavefront")
    assert v2[start : start + len(fields)] == fields
    body = b"JICD" + struct.pack(">H", 1) + v2[6:start] + v2[start + len(fields) :]
    v1 = body + struct.pack(">I", zlib.crc32(body))
    assert jicd_format.decode(v1) == dataclasses.replace(coded, version=1)
