"""Buffers the architecture defines, and the check that loaded weights left them alone.

A state dict carries, beside the weights, buffers that are functions of the architecture: the
context model's causal ``mask``, the GDN reparametrisation's ``pedestal`` and ``lower_bound.bound``,
the likelihood and scale bounds. A file from someone else may carry damaged ones, and
``load_state_dict`` copies them silently: a wrong pedestal makes the transforms produce NaN (and
CompressAI's rANS encoder spin for ever on it), a wrong mask reads positions the decoder has not
decoded yet. Every loader (:func:`jicd.models.weights._load`) therefore compares them with a
freshly built model's after loading.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jicd.errors import UserError
from jicd.models.released import CDF_BUFFERS


def derived_buffers(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the buffers the architecture defines (the context mask, GDN pedestals and
    bounds, likelihood bounds…): every buffer but the CDF tables, which ``update()`` sizes."""
    return {
        name: buffer.detach().clone()
        for name, buffer in model.named_buffers()
        if name not in CDF_BUFFERS
    }


def check_derived_buffers(model: nn.Module, expected: dict[str, Tensor], where: str) -> None:
    """Refuse weights that changed a buffer the architecture defines.

    A damaged GDN ``pedestal``/``bound`` makes the transforms produce NaN (the encoder would
    spin for ever) and a wrong context ``mask`` reads not-yet-decoded positions.

    Raises:
        UserError: one line naming the first buffer that differs.
    """
    for name, buffer in model.named_buffers():
        want = expected.get(name)
        if want is None:
            continue
        same = buffer.shape == want.shape and torch.allclose(
            buffer.detach().to(want.device, want.dtype), want, rtol=1e-6, atol=0.0
        )
        if not same:
            raise UserError(
                f"{where}: buffer {name!r} differs from what the architecture defines "
                "(damaged or edited weights)"
            )
