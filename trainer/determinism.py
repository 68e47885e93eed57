"""``train.deterministic``: the switches that make GPU training repeat itself bit for bit.

Without them (the default) a run is repeatable on the CPU only: on CUDA, cuDNN picks its
convolution algorithms by heuristics (some accumulate with atomics), convolutions use TF32, and
scatter-style backward kernels (e.g. in the NT-Xent gather's backward) add in a varying order, so
two runs from the same checkpoint drift apart in the last bits within a few steps. With them,
a resume on the same GPU model, driver, torch build and world size retraces the uninterrupted
run exactly; an op that has no deterministic CUDA kernel raises instead of silently varying.
"""

from __future__ import annotations

import os

import torch

# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); the larger of the two
# documented settings, which costs ~24 MiB of GPU memory per stream.
CUBLAS_WORKSPACE = ":4096:8"


def configure_determinism(enabled: bool) -> None:
    """Apply the deterministic settings when ``enabled``; call before the first CUDA op.

    Args:
        enabled: ``train.deterministic`` (False leaves torch's defaults untouched).
    """
    if not enabled:
        return
    # Read by cuBLAS when its first handle is created: set before any matmul runs.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    # torch >= 2.9 API only: mixing it with the legacy allow_tf32 flags raises when read.
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]  # torch>=2.9 API, missing from torch's stubs
    torch.backends.cudnn.rnn.fp32_precision = "ieee"  # type: ignore[attr-defined]  # torch>=2.9 API, missing from torch's stubs
    torch.backends.cuda.matmul.fp32_precision = "ieee"


def determinism_settings() -> dict[str, object]:
    """The settings in force, recorded in the run's ``meta.json``."""
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,  # type: ignore[attr-defined]  # torch>=2.9 API, missing from torch's stubs
        "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
    }
