"""The entropy coders, their common interface (:class:`Coder`) and their registry (re-exported
lazily by :mod:`jicd.codec`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from jicd.codec.finite import checked_entropy_inputs
from jicd.codec.placement import refuse_off_cpu
from jicd.codec.wavefront import WavefrontCoder
from jicd.errors import UserError

if TYPE_CHECKING:
    from compressai.models import CompressionModel


class Coder(Protocol):
    """What every entropy coder does: a batch of images to byte strings and back.

    ``compress`` returns ``{"strings": [y_strings, z_strings], "shape": (h, w) of z, "checks":
    [CRC32 of each image's CDF indices] (absent for the serial coder), "entropy": "float" |
    "integer"}``; ``decompress`` takes those back and returns ``{"x_hat": (B, 3, H, W)}`` in
    [0, 1]. A file records the coder's :attr:`name`, so its decoder is chosen from the file.
    """

    name: str

    def compress(
        self, model: CompressionModel, x: Tensor, entropy: str | None = None
    ) -> dict[str, Any]:
        """Encode ``x (B, 3, H, W)``; ``entropy`` ("float", "integer", None: the model's own)."""
        ...

    def decompress(
        self,
        model: CompressionModel,
        strings: list,
        shape: Any,
        *,
        checks: list[int] | None = None,
        entropy: str | None = None,
    ) -> dict[str, Any]:
        """Decode ``compress``'s output (``checks``, ``entropy``: as ``compress`` returned)."""
        ...


class SerialCoder:
    """CompressAI's reference coder: ``model.compress`` / ``model.decompress`` unchanged."""

    name = "serial"

    @torch.inference_mode()
    def compress(
        self, model: CompressionModel, x: Tensor, entropy: str | None = None
    ) -> dict[str, Any]:
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
    def decompress(
        self, model: CompressionModel, strings: list, shape: Any, **options: object
    ) -> dict[str, Any]:
        """Decode with the model's own autoregressive loop → ``{"x_hat": ...}``.

        ``options`` (``checks``, ``entropy``) are those of :class:`Coder`: CompressAI's loop
        exposes no indices to verify, so serial files carry no ``checks``, and it has no
        integer path.
        """
        entropy = options.get("entropy")
        _refuse_integer(entropy if isinstance(entropy, str) else None)
        refuse_off_cpu(model, self.name)
        return model.decompress(strings, shape)


def _refuse_integer(entropy: str | None) -> None:
    if entropy not in (None, "float"):
        raise UserError(f"the serial coder codes the float entropy path only, not {entropy!r}")


CODERS: dict[str, type[Coder]] = {"wavefront": WavefrontCoder, "serial": SerialCoder}
DEFAULT_CODER = "wavefront"


def get_coder(name: str = DEFAULT_CODER) -> Coder:
    """Return the entropy coder called ``name`` (one of :data:`CODERS`).

    Raises:
        ValueError: for an unknown name, listing the choices.
    """
    if name not in CODERS:
        raise UserError(f"unknown coder {name!r}; choose one of: {', '.join(CODERS)}")
    return CODERS[name]()


__all__ = ["CODERS", "DEFAULT_CODER", "Coder", "SerialCoder", "get_coder"]
