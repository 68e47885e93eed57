"""Integerized exports: a jicd export plus an ``integer_entropy`` entry.

An integerized export is the float export's payload unchanged (format, version, model config,
state dict) with two more keys::

    "integer_entropy":   IntegerEntropyModel.payload()  (int16 weights, int64 rescales, CDF tables)
    "integerized_from":  {"file", "sha256", "calibration"}  (provenance)

Older builds ignore the extra keys and code with the float path; this build attaches the integer
model to the loaded model (:func:`attach`), and the wavefront coder then uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jicd.codec.integer.network import IntegerEntropyModel
from jicd.errors import UserError
from jicd.files import sha256_file, torch_save_atomic

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

INTEGER_KEY = "integer_entropy"
PROVENANCE_KEY = "integerized_from"


def attach(model: CompressionModel, entry: Any, where: str) -> IntegerEntropyModel:
    """Build the integer model of an export's ``integer_entropy`` entry and attach it.

    It becomes the submodule ``model.integer_entropy`` (so ``model.to(device)`` moves it).

    Raises:
        UserError: a malformed entry, or one whose channel counts do not fit the model.
    """
    net = IntegerEntropyModel.from_payload(entry, where)
    expected = (model.context_prediction.in_channels, model.entropy_bottleneck.channels)
    found = (net.latent_channels, net.hyper_channels)
    if found != expected:
        raise UserError(
            f"{where}: the integer entropy model has M, N = {found}, the model {expected}"
        )
    model.integer_entropy = net
    return net


def write_integerized(
    payload: dict, net: IntegerEntropyModel, source: str | Path, output: str | Path
) -> None:
    """Write ``payload`` (a float export's) with ``net`` and its provenance, atomically."""
    out = dict(payload)
    out[INTEGER_KEY] = net.payload()
    out[PROVENANCE_KEY] = {
        "file": Path(source).name,
        "sha256": sha256_file(source),
        "calibration": net.calibration.get("description", ""),
    }
    torch_save_atomic(out, output)
