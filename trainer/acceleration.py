"""``engine.compile`` and ``engine.cuda_graphs``: the model's forward compiled before wrapping.

* ``regional``: each transform, denoiser and entropy network is compiled on its own
  (``nn.Module.compile``, in place: parameter names and checkpoints are unchanged). Short
  compiles, and the repeated residual blocks share their generated code.
* ``full``: the whole training forward (three branches and the entropy models) as one graph
  where dynamo can trace it; with ``cuda_graphs`` its forward and backward replay as CUDA graphs
  (``mode="reduce-overhead"``: one launch for the many small kernels of a step, the shapes of
  training crops being static).

Validation shapes differ from training's, so they compile (and, with graphs, record) once more;
``compress``/``decompress`` never run compiled. The entropy models stay fp32 whatever
``engine.precision`` says (``trainer.engine.keep_entropy_models_fp32``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from trainer.engine import EngineConfig

log = logging.getLogger(__name__)
REGIONS = (
    "ga0", "ga1", "d0", "d1", "h_a", "h_s", "g_s", "context_prediction", "entropy_parameters",
    "proj",
)  # fmt: skip


def accelerate(model: nn.Module, cfg: EngineConfig, device: torch.device) -> None:
    """Compile ``model`` in place per ``cfg.compile`` (call before the engine wraps it)."""
    if cfg.compile == "none":
        return
    backend = cfg.compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    if cfg.compile == "regional":
        regions = [name for name in REGIONS if getattr(model, name, None) is not None]
        for name in regions:
            getattr(model, name).compile(backend=backend)
        log.info("compiled %d regions (%s): %s", len(regions), backend, ", ".join(regions))
        return
    mode = "reduce-overhead" if cfg.cuda_graphs else None
    model.compile(backend=backend, mode=mode)
    log.info("compiled the whole training forward (%s%s)", backend, ", CUDA graphs" if mode else "")


def enable_tf32() -> None:
    """fp32 matmuls and cuDNN convolutions on TF32 tensor cores (``engine.tf32``)."""
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # type: ignore[attr-defined]  # torch>=2.9 API, missing from torch's stubs
