"""Entropy coders for CompressAI joint-autoregressive models (``Cheng2020Anchor`` and subclasses).

``get_coder("wavefront")`` (default) codes the latent one independent wavefront at a time
(:mod:`jicd.codec.wavefront`); ``get_coder("serial")`` is CompressAI's own position-by-position
``model.compress`` / ``model.decompress``. Both expose::

    compress(model, x (B, 3, H, W)) -> {"strings": [y_strings, z_strings], "shape": (h, w)}
    decompress(model, strings, shape) -> {"x_hat": (B, 3, H, W) in [0, 1]}

Their y bitstreams differ (different symbol order), so decode with the coder that encoded.
The wavefront coder accepts a model on any device: its float path computes the entropy
parameters on the CPU (:mod:`jicd.codec.placement`); its integer path, used when the model
carries an integer entropy model (``jicd integerize``), in fixed point on the model's device,
bit-identically everywhere (:mod:`jicd.codec.integer`). The serial coder refuses a model that
is not on the CPU.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports (PEP 562): ``import jicd.codec.commands`` must not import torch, so that a command
# line with a missing file fails at once; the coders load on first use.
_EXPORTS = {
    "CODERS": "jicd.codec.coders",
    "Coder": "jicd.codec.coders",
    "DEFAULT_CODER": "jicd.codec.coders",
    "SerialCoder": "jicd.codec.coders",
    "get_coder": "jicd.codec.coders",
    "WavefrontCoder": "jicd.codec.wavefront",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jicd.codec' has no attribute {name!r}")


__all__ = ["CODERS", "Coder", "DEFAULT_CODER", "SerialCoder", "WavefrontCoder", "get_coder"]
