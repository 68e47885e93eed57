"""What both entropy paths share around CompressAI's CPU rANS coder: tables, lists, checks.

The float and the integer wavefront coders (:mod:`jicd.codec.wavefront`,
:mod:`jicd.codec.integer.coder`) hand CompressAI's 64-bit rANS (``compressai.ans``) symbols and
CDF indices as Python lists, record a CRC32 of the indices in coding order, and refuse a decode
whose recomputed indices have another checksum. :func:`coded_bits` says what that coder spends
on each symbol (the integer path's fine-tune measures its rate with it).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # compressai ships no type information: this names the expected class
    from compressai.entropy_models import EntropyModel

from jicd.errors import UserError

INDEX_MISMATCH = (
    "this machine computes other entropy parameters than the encoder did (checksum of the CDF "
    "indices differs), so the decoded image would be wrong: decode with the torch build and "
    "CPU type that encoded the file"
)


class CdfTables:
    """Quantised CDF tables as Python lists, rows trimmed to their length.

    rANS calls convert the tables on every call; passing only the rows up to the largest index
    of a wavefront (small scales have short rows) keeps that cost small.

    Args:
        cdf: ``(R, L)`` int CDF rows (CompressAI's ``quantized_cdf``).
        lengths: ``(R,)`` used length of each row.
        offsets: ``(R,)`` value of each row's first symbol.
    """

    def __init__(self, cdf: Tensor, lengths: Tensor, offsets: Tensor) -> None:
        lengths_list = lengths.tolist()
        self.cdfs = [cdf[row, :n].tolist() for row, n in enumerate(lengths_list)]
        self.lengths = lengths_list
        self.offsets = offsets.tolist()

    @classmethod
    def of(cls, entropy_model: EntropyModel) -> CdfTables:
        """The tables of a CompressAI ``EntropyModel`` (after ``update()``)."""
        model = entropy_model
        return cls(model.quantized_cdf.cpu(), model.cdf_length.cpu(), model.offset.cpu())

    def prefix(self, max_index: int) -> tuple[list, list[int], list[int]]:
        """``(cdfs, lengths, offsets)`` of rows ``0 … max_index``."""
        n = max_index + 1
        return self.cdfs[:n], self.lengths[:n], self.offsets[:n]

    def all(self) -> tuple[list, list[int], list[int]]:
        """``(cdfs, lengths, offsets)`` of every row."""
        return self.cdfs, self.lengths, self.offsets


def int_list(values: Tensor) -> list[int]:
    """Flattened Python list for the rANS bindings (via NumPy: ~3x faster than ``tolist``)."""
    return values.cpu().numpy().ravel().tolist()


def index_crc(index: Tensor, crc: int) -> int:
    """CRC32 of the int32 CDF indices ``index`` (CPU, little-endian), continuing ``crc``."""
    return zlib.crc32(index.numpy().astype("<i4", copy=False).tobytes(), crc)


def check_streams(strings: list, checks: list[int] | None) -> None:
    """Refuse a malformed ``[y_strings, z_strings]`` pair (or ``checks`` of another length).

    Raises:
        UserError: one line saying what does not fit.
    """
    if not (isinstance(strings, list | tuple) and len(strings) == 2):
        raise UserError("strings must be [y_strings, z_strings]")
    if len(strings[0]) != len(strings[1]):
        raise UserError(f"{len(strings[0])} y strings but {len(strings[1])} z strings")
    if checks is not None and len(checks) != len(strings[0]):
        raise UserError(f"{len(checks)} checks for {len(strings[0])} images")


BYPASS_BITS = 4  # CompressAI's rANS escape code: raw values in 4-bit chunks
BYPASS_LIMIT = (1 << BYPASS_BITS) - 1


def coded_bits(
    cdf: Tensor, lengths: Tensor, offsets: Tensor, symbols: Tensor, indexes: Tensor
) -> Tensor:
    """Bits CompressAI's rANS coder spends on each symbol with these CDF tables.

    A symbol inside its table costs ``-log2`` of its 16-bit probability; outside, the table's
    escape symbol plus the bypass code (the count of 4-bit chunks, in chunks of at most 15,
    then the chunks of ``-2v-1`` or ``2(v-max)``), as ``compressai/cpp_exts/rans``.

    Args:
        cdf, lengths, offsets: ``(R, L)``, ``(R,)``, ``(R,)`` tables as CompressAI's
            ``quantized_cdf``, ``cdf_length``, ``offset`` (e.g. the integer model's ``y_``).
        symbols, indexes: int64 tensors of one shape (symbols, CDF indices).

    Returns:
        float64 bits, the shape of ``symbols``.
    """
    cdf = cdf.to(torch.int64)
    top = lengths.to(torch.int64)[indexes] - 2  # the escape symbol's value
    value = symbols - offsets.to(torch.int64)[indexes]
    escaped = (value < 0) | (value >= top)
    coded = torch.where(escaped, top, value)  # an escaped symbol codes the escape value
    frequency = cdf[indexes, coded + 1] - cdf[indexes, coded]
    bits = 16 - torch.log2(frequency.to(torch.float64))
    raw = torch.where(value < 0, -2 * value - 1, 2 * (value - top)).clamp(min=0)
    chunks = torch.zeros_like(raw)
    for shift in range(0, 64, BYPASS_BITS):
        chunks += (raw >> shift) != 0
    escape = BYPASS_BITS * (chunks // BYPASS_LIMIT + 1 + chunks)
    return bits + torch.where(escaped, escape, 0).to(torch.float64)
