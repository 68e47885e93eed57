"""Refuse to entropy-code what a damaged model produced.

A model whose weights diverged in training, or whose GDN buffers were edited, turns images into
NaN or huge latents; CompressAI's rANS encoder casts such a symbol to an integer and then codes
its "value" bit by bit for ever. Everything that reaches the entropy coder is therefore checked
first: the latent ``y``, the hyper-latent ``z``, and the Gaussian parameters predicted from them
(the wavefront coder checks them directly; CompressAI's own loop, the serial coder, through
forward hooks on the modules that produce them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jicd.errors import UserError

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

LATENT_LIMIT = 2.0**20
"""Largest magnitude a coded value may have: far beyond any trained model's latents (|y| < 10^3),
and small enough that rounding and the coder's 32-bit symbols stay exact."""


def check_codable(name: str, values: Tensor) -> None:
    """Refuse ``values`` that are not finite or exceed :data:`LATENT_LIMIT` in magnitude.

    Raises:
        UserError: one line naming ``name``.
    """
    values = values.detach()
    if not bool(torch.isfinite(values).all()):
        problem = "non-finite values (NaN or inf)"
    elif values.numel() and float(values.abs().max()) > LATENT_LIMIT:
        problem = f"values beyond +-{LATENT_LIMIT:g}"
    else:
        return
    raise UserError(
        f"the model produced {problem} in {name}: its weights are damaged (a diverged training "
        "run or an edited file), so the image cannot be entropy-coded"
    )


@contextlib.contextmanager
def checked_entropy_inputs(model: CompressionModel) -> Iterator[None]:
    """While active, CompressAI's ``model.compress`` refuses non-finite ``y``, ``z``, hyper-prior
    and Gaussian parameters (forward hooks on ``h_a``, ``h_s`` and ``entropy_parameters``)."""

    def check_input(name: str):
        return lambda module, args: check_codable(name, args[0])

    def check_output(name: str):
        return lambda module, args, output: check_codable(name, output)

    handles = [
        model.h_a.register_forward_pre_hook(check_input("the latent y")),
        model.h_a.register_forward_hook(check_output("the hyper-latent z")),
        model.h_s.register_forward_hook(check_output("the hyper-prior parameters")),
        model.entropy_parameters.register_forward_hook(check_output("the Gaussian parameters")),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
