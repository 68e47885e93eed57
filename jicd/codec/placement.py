"""Where coding runs: transforms on the model's device, float entropy parameters on the CPU.

(The integer entropy path, :mod:`jicd.codec.integer`, needs none of this: its fixed-point
arithmetic is the same on every device, so it runs on the model's.)

The arithmetic decoder must derive *bit-identically* the CDF indices the encoder used. Those
come from floating-point networks (``h_s``, the masked context convolution, the entropy
parameter head), and a GPU rounds them differently from a CPU (other kernels, TF32, reduction
orders), so a stream whose indices were computed on a GPU would decode to garbage on a CPU, and
vice versa. The wavefront coder therefore runs the analysis ``g_a``/``h_a`` and the synthesis
``g_s`` wherever the model lives (their outputs only need to be close), and everything that
feeds the entropy coder on a CPU copy of those few modules: a file encoded with a CUDA model
decodes on a CPU-only machine. The ``.jicd`` header records this (``decode_device``) and a
checksum of the indices, so a decoder that still computes other indices (another CPU
arithmetic or torch build) refuses the file instead of writing a wrong image.
"""

from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import MaskedConv2d
    from compressai.models import CompressionModel

# Everything whose output reaches the rANS coder (the z stream, the CDF indices, the means).
ENTROPY_MODULES = (
    "entropy_bottleneck",
    "gaussian_conditional",
    "h_s",
    "context_prediction",
    "entropy_parameters",
)
ENTROPY_DEVICE = torch.device("cpu")
# Spatial factor between the hyper-latent z and the latent y in Cheng2020/Minnen2018 models.
HYPER_SCALE = 4


class EntropySide(nn.Module):
    """CPU copies of a model's :data:`ENTROPY_MODULES` (the part that must match the decoder)."""

    entropy_bottleneck: EntropyBottleneck
    gaussian_conditional: GaussianConditional
    h_s: nn.Module
    context_prediction: MaskedConv2d
    entropy_parameters: nn.Module

    def __init__(self, model: CompressionModel) -> None:
        super().__init__()
        for name in ENTROPY_MODULES:
            setattr(self, name, copy.deepcopy(getattr(model, name)).to(ENTROPY_DEVICE))


# model -> (fingerprint of its entropy weights, CPU copy): copy once per weight version.
_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, EntropySide]] = (
    weakref.WeakKeyDictionary()
)


def model_device(model: CompressionModel) -> torch.device:
    """The device of the model's weights, refusing models that cannot code.

    Raises:
        UserError: weights on the ``meta`` device (shapes only, never loaded).
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else ENTROPY_DEVICE
    if device.type == "meta":
        raise UserError(
            "the model's weights are on the meta device (never loaded): load a checkpoint "
            "before compressing or decompressing"
        )
    return device


def entropy_side(model: CompressionModel) -> CompressionModel | EntropySide:
    """The modules that compute entropy parameters, on the CPU.

    A CPU model is returned as it is; for a model on any other device a CPU copy of its
    :data:`ENTROPY_MODULES` is made (and reused while those weights are unchanged).

    Raises:
        UserError: weights on the ``meta`` device.
    """
    if isinstance(model, EntropySide) or model_device(model) == ENTROPY_DEVICE:
        return model
    modules = [getattr(model, name) for name in ENTROPY_MODULES]
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    if any(t.device.type == "meta" for t in tensors):
        raise UserError("the model's entropy models are on the meta device (never loaded)")
    fingerprint = tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)
    cached = _COPIES.get(model)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, EntropySide(model).eval())
        _COPIES[model] = cached
    return cached[1]


def refuse_off_cpu(model: CompressionModel, coder: str) -> None:
    """For coders that run CompressAI's own loop on the model's device (the serial coder).

    Raises:
        UserError: the model is not on the CPU (its streams would only decode on the same GPU
            type and software, if at all).
    """
    device = model_device(model)
    if device != ENTROPY_DEVICE:
        raise UserError(
            f"the {coder} coder computes entropy parameters on the model's device ({device}), "
            "which a CPU decoder cannot reproduce: move the model to the CPU, or use the "
            "wavefront coder (transforms on the GPU, entropy parameters on the CPU)"
        )


def analysis_transforms(model: CompressionModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """``y = g_a(x)`` and ``z = h_a(y)`` on the model's device (what both entropy paths code).

    Args:
        x: ``(B, 3, H, W)`` images (any device), ``H`` and ``W`` multiples of 64.

    Returns:
        ``(y (B, M, H/16, W/16), z (B, N, H/64, W/64))`` on the model's device.

    Raises:
        UserError: if the image size is not a multiple of 64, or the model has no weights.
    """
    y = model.g_a(x.to(model_device(model)))
    z = model.h_a(y)
    if tuple(y.shape[-2:]) != tuple(HYPER_SCALE * s for s in z.shape[-2:]):
        raise UserError(f"image size {tuple(x.shape[-2:])} must be a multiple of 64 per side")
    return y, z
