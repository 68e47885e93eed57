"""Entropy coders for CompressAI joint-autoregressive models (``Cheng2020Anchor`` and subclasses).

``get_coder("wavefront")`` (default) codes the latent one independent wavefront at a time
(:mod:`jicd.codec.wavefront`); ``get_coder("serial")`` is CompressAI's own position-by-position
``model.compress`` / ``model.decompress``. Both expose::

    compress(model, x (B, 3, H, W)) -> {"strings": [y_strings, z_strings], "shape": (h, w)}
    decompress(model, strings, shape) -> {"x_hat": (B, 3, H, W) in [0, 1]}

Their y bitstreams differ (different symbol order), so decode with the coder that encoded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jicd.codec.wavefront import WavefrontCoder
from jicd.errors import UserError


class SerialCoder:
    """CompressAI's reference coder: ``model.compress`` / ``model.decompress`` unchanged."""

    name = "serial"

    @torch.inference_mode()
    def compress(self, model: nn.Module, x: Tensor) -> dict:
        """Encode ``x (B, 3, H, W)`` with the model's own autoregressive loop."""
        return model.compress(x)

    @torch.inference_mode()
    def decompress(self, model: nn.Module, strings: list, shape) -> dict:
        """Decode with the model's own autoregressive loop → ``{"x_hat": ...}``."""
        return model.decompress(strings, shape)


CODERS = {"wavefront": WavefrontCoder, "serial": SerialCoder}
DEFAULT_CODER = "wavefront"


def get_coder(name: str = DEFAULT_CODER) -> WavefrontCoder | SerialCoder:
    """Return the entropy coder called ``name`` (one of :data:`CODERS`).

    Raises:
        ValueError: for an unknown name, listing the choices.
    """
    if name not in CODERS:
        raise UserError(f"unknown coder {name!r}; choose one of: {', '.join(CODERS)}")
    return CODERS[name]()


__all__ = ["CODERS", "DEFAULT_CODER", "SerialCoder", "WavefrontCoder", "get_coder"]
