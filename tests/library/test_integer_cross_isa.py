"""Files of the integer path decode bit-exactly under other CPU instruction sets and threads.

An encoder process runs under ``ONEDNN_MAX_CPU_ISA=AVX2`` on one thread; decoder processes run
under ``ONEDNN_MAX_CPU_ISA=SSE41`` on two threads and under ``ATEN_CPU_CAPABILITY=default`` on
three (:mod:`jicd.codec.integer.isa_check`). For both presets and several image sizes,
integer-path files must give the encoder's latent and CDF indices exactly; float-path files
must decode to the encoder's latent or be refused cleanly (their checksum of the indices), never
decode to something else. Each worker also hashes a few float32 ops, so the test proves the
settings really compute float32 differently here (else it would prove nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jicd.codec.integer.calibration import generated_images, noisy_versions
from jicd.codec.integer.convert import integerize
from jicd.codec.integer.export import write_integerized
from jicd.codec.integer.gemm import KERNELS, int8_kernel_exact
from jicd.codec.integer.isa_check import Setting, run_cross_isa, summarise
from jicd.models.weights import read_export
from trainer.testing import make_image, make_lively_export

SIZES = [(64, 64), (67, 100), (128, 192), (192, 64)]
ENCODER = Setting({"ONEDNN_MAX_CPU_ISA": "AVX2"}, threads=1)
DECODERS = [
    Setting({"ONEDNN_MAX_CPU_ISA": "SSE41"}, threads=2),
    Setting({"ATEN_CPU_CAPABILITY": "default"}, threads=3),
]


def has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def integerized_copy(source: Path, target: Path) -> Path:
    payload, model, _ = read_export(source)
    net = integerize(model.eval(), noisy_versions(generated_images(2, 128)))
    write_integerized(payload, net, source, target)
    return target


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, list[dict]]:
    root = tmp_path_factory.mktemp("cross_isa")
    exports = {}
    for preset in ("jicd", "baseline"):
        source = make_lively_export(root / f"{preset}.pt", preset=preset, seed=4)
        exports[f"{preset}-float"] = str(source)
        exports[f"{preset}-int"] = str(integerized_copy(source, root / f"{preset}-int.pt"))
    images = [str(make_image(root / f"{h}x{w}.png", h, w, seed=h + w)) for h, w in SIZES]
    return run_cross_isa(exports, images, ENCODER, DECODERS, root / "work", timeout=600)


def test_environments_compute_float32_differently(runs) -> None:
    if not has_avx2():
        pytest.skip("this CPU has no AVX2: ONEDNN_MAX_CPU_ISA=AVX2 vs SSE41 cannot differ")
    encoded, decoded = runs
    assert [d["threads"] for d in decoded] == [2, 3] and encoded["threads"] == 1
    for result in decoded:
        assert result["probe"] != encoded["probe"], "the ISA settings changed no float32 result"


def test_integer_files_decode_bit_exactly(runs) -> None:
    encoded, decoded = runs
    files = {"exact": len(SIZES), "close": 0, "refused": 0, "wrong": 0}
    for result in decoded:
        summary = summarise(encoded, result)
        assert summary["jicd-int"] == files and summary["baseline-int"] == files, summary
    assert len(torch.unique(encoded["jicd-int/128x192"]["indices"])) > 3  # indices really vary


def test_files_cross_between_the_exact_kernels(runs) -> None:
    """Where this CPU's int8 GEMM is exact, some worker must have used it and another the
    float64 kernel (oneDNN restricted to AVX2 saturates int8 sums), so the exact-decode test
    above also shows that files cross between the kernels."""
    encoded, decoded = runs
    kernels = {encoded["gemm"], *(d["gemm"] for d in decoded)}
    assert kernels <= set(KERNELS)
    if not int8_kernel_exact():
        pytest.skip("this CPU's int8 GEMM is not exact: every worker used float64")
    assert kernels == set(KERNELS), (encoded["gemm"], [d["gemm"] for d in decoded])


def test_float_files_decode_exactly_or_are_refused(runs) -> None:
    """The float path's guarantee: the encoder's symbols (latent within float noise), or a
    clean refusal, never garbage."""
    encoded, decoded = runs
    for result in decoded:
        summary = summarise(encoded, result)
        for name in ("jicd-float", "baseline-float"):
            assert summary[name]["wrong"] == 0, summary
            assert sum(summary[name].values()) == len(SIZES)
        refusals = [r["error"] for r in result.values() if isinstance(r, dict) and r["error"]]
        assert all("checksum of the CDF indices differs" in e for e in refusals), refusals
