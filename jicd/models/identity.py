"""Which weights wrote a ``.jicd`` file: a digest of the tensors, not of the file holding them.

:func:`weights_digest` hashes a state dict canonically, so the same weights give the same
identity however they were saved (an export, its re-import, a plain state dict, another torch
version's pickle). The entropy models' CDF tables are left out: ``update(force=True)`` recomputes
them from the weights whenever a model is loaded for coding.

Files written before this digest existed (``.jicd`` versions 1-2) carry the sha256 of the model
*file*; :func:`accepts` compares those against the file's digest and the digests of the files an
export was imported from (``"file_sha256_aliases"``, written by ``jicd import-checkpoint``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping

import torch
from torch import Tensor

from jicd.errors import UserError
from jicd.models.released import CDF_BUFFERS

ALIASES_KEY = "file_sha256_aliases"
"""Export field: sha256 digests of the model files this export's weights were imported from."""
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """Hex sha256 of ``state_dict`` without its CDF buffers, independent of how it was stored.

    Entries are taken in name order; each contributes its name, dtype, shape and its values as
    contiguous little-endian bytes (each field length-prefixed, so no two dicts collide by
    concatenation).
    """
    digest = hashlib.sha256(b"jicd-weights-v1")
    for name in sorted(state_dict):
        if name in CDF_BUFFERS:
            continue
        tensor = state_dict[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        for part in (name.encode(), str(tensor.dtype).encode()):
            digest.update(struct.pack("<Q", len(part)) + part)
        digest.update(struct.pack(f"<Q{tensor.dim()}Q", tensor.dim(), *tensor.shape))
        digest.update(struct.pack("<Q", len(raw)) + raw)
    return digest.hexdigest()


def file_aliases(payload: object) -> list[str]:
    """The validated ``"file_sha256_aliases"`` of an export payload ([] when absent).

    Raises:
        UserError: the field is present but not a list of hex sha256 digests.
    """
    aliases = payload.get(ALIASES_KEY, []) if isinstance(payload, dict) else []
    if not isinstance(aliases, list) or not all(
        isinstance(a, str) and _HEX_DIGEST.match(a) for a in aliases
    ):
        raise UserError(f"export field {ALIASES_KEY!r} must be a list of hex sha256 digests")
    return aliases


def accepts(identity: Mapping, digest: str, kind: str) -> bool:
    """Whether a model of ``identity`` wrote a file whose digest of ``kind`` is ``digest``.

    ``kind`` is ``"tensors"`` (``.jicd`` version >= 3) or ``"file"`` (versions 1-2).
    """
    if kind == "tensors":
        return digest == identity["weights_sha256"]
    return digest in identity.get("legacy_sha256", ())
