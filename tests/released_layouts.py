"""Synthetic checkpoints in the authors' layouts (``library/fixtures/checkpoint_layouts.json``).

The fixture lists, for the ECCV'22 baseline and JICDCLS at N = 128 (q1) and N = 192 (q4), every
key, shape and dtype the authors' training code saves (copied from the project's reference notes,
which built their models). The files made here have exactly those keys and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent / "library" / "fixtures" / "checkpoint_layouts.json"
LAYOUT_FILES = ("baseline_eccv22_q1", "baseline_eccv22_q4", "jicdcls_q1", "jicdcls_q4")
WRAPPER_EXTRAS = {"epoch": 11, "iter": 12345, "loss": 1.25}
# Sizes a saved file has (the fixture lists the empty buffers of a freshly built model).
GC_LEVELS, GC_CDF, EB_CDF = 64, 3133, 17


def layout(name: str) -> dict:
    """``{"source", "wrapper_keys", "state_dict": {key: [shape, dtype]}}`` of one layout."""
    return json.loads(FIXTURE.read_text())[name]


def layout_format(name: str) -> str:
    """``baseline`` or ``jicdcls``."""
    return "jicdcls" if name.startswith("jicdcls") else "baseline"


def synthetic_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys, shapes and dtypes of layout ``name``.

    CDF buffers get the data-dependent sizes a saved file has, so loading must resize them; the
    buffers the architecture defines (context mask, GDN pedestals and bounds) get its values,
    as in the authors' files (loaders refuse other values: :mod:`jicd.models.buffers`).
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in layout(name)["state_dict"].items():
        if shape == [0]:
            shape = _saved_cdf_shape(key, layout(name)["state_dict"])
        if dtype.startswith("int"):
            state[key] = torch.randint(0, 100, shape, generator=generator, dtype=torch.int32)
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state | _architecture_buffers(name)


def _architecture_buffers(name: str) -> dict[str, torch.Tensor]:
    """The derived buffers of layout ``name``'s model, under the authors' key names."""
    from jicd.models import build_model
    from jicd.models.buffers import derived_buffers
    from jicd.models.released import LAYOUTS

    layout_ = LAYOUTS[layout_format(name)]
    head = "authors" if layout_.name == "jicdcls" else "paper"
    model = build_model(layout_.preset, int(name[-1]), head=head)
    return {layout_.theirs(key): value for key, value in derived_buffers(model).items()}


def _saved_cdf_shape(key: str, keys: dict) -> list[int]:
    channels = keys["h_a.0.weight"][0][0]
    if key.startswith("gaussian_conditional."):
        return [GC_LEVELS, GC_CDF] if key.endswith("_quantized_cdf") else [GC_LEVELS]
    return [channels, EB_CDF] if key.endswith("_quantized_cdf") else [channels]


def wrapped(state_dict: dict[str, torch.Tensor]) -> dict:
    """The authors' training wrapper, with DataParallel ``module.`` prefixes."""
    adam = {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]}
    return {
        **WRAPPER_EXTRAS,
        "state_dict": {f"module.{k}": v for k, v in state_dict.items()},
        "optimizer": adam,
        "aux_optimizer": adam,
        "lr_scheduler": {"last_epoch": 3},
        "aux_lr_scheduler": {"last_epoch": 3},
    }
