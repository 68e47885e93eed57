"""The entropy coders and their registry (re-exported lazily by :mod:`jicd.codec`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jicd.codec.finite import checked_entropy_inputs
from jicd.codec.placement import refuse_off_cpu
from jicd.codec.wavefront import WavefrontCoder
from jicd.errors import UserError


class SerialCoder:
    """CompressAI's reference coder: ``model.compress`` / ``model.decompress`` unchanged."""

    name = "serial"

    @torch.inference_mode()
    def compress(self, model: nn.Module, x: Tensor, entropy: str | None = None) -> dict:
        """Encode ``x (B, 3, H, W)`` with the model's own autoregressive loop (CPU models only).

        Always the float entropy path (CompressAI's reference), whatever the export carries.

        Raises:
            UserError: the model produced values that cannot be entropy-coded (NaN, inf).
        """
        _refuse_integer(entropy)
        refuse_off_cpu(model, self.name)
        with checked_entropy_inputs(model):
            return {**model.compress(x), "entropy": "float"}

    @torch.inference_mode()
    def decompress(self, model: nn.Module, strings: list, shape, **options: object) -> dict:
        """Decode with the model's own autoregressive loop → ``{"x_hat": ...}``.

        ``options`` (``checks``, ``entropy``) are those of the common interface (:class:`Coder`):
        CompressAI's loop exposes no indices to verify, so serial files carry none, and it has
        no integer path.
        """
        entropy = options.get("entropy")
        _refuse_integer(entropy if isinstance(entropy, str) else None)
        refuse_off_cpu(model, self.name)
        return model.decompress(strings, shape)


def _refuse_integer(entropy: str | None) -> None:
    if entropy not in (None, "float"):
        raise UserError(f"the serial coder codes the float entropy path only, not {entropy!r}")


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


__all__ = ["CODERS", "DEFAULT_CODER", "SerialCoder", "get_coder"]
