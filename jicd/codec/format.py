"""The ``.jicd`` container: one compressed image plus everything needed to decode it.

Layout (all integers big-endian, no alignment)::

    offset  size  field
    0       4     magic            b"JICD"
    4       2     format version   uint16: 3 (float entropy path) or 4 (integer path); 1 and 2
                                   are still read
    6       1     len(arch)        uint8, then `arch` as UTF-8 (e.g. "jicd", "cheng2020-anchor")
    .       1     quality          uint8 (0 = unknown, e.g. a plain anchor state dict)
    .       2     channels N       uint16
    .       32    model digest     raw sha256 identifying the model weights (see below)
    .       1     len(coder)       uint8, then the coder name as UTF-8 ("wavefront" or "serial")
    .       1     len(device)      v2: uint8, then where decoding must compute the entropy
                                   parameters, as UTF-8 ("cpu"; "any" in v4)
    .       1     len(entropy)     v4: uint8, then the entropy path as UTF-8 ("integer")
    .       1     len(torch)       v2: uint8, then the encoder's torch version, as UTF-8
    .       1     has check        v2: uint8, 1 when the next field is a checksum
    .       4     index check      v2: uint32 CRC32 of the y stream's CDF indices in coding order
    .       8     original size    uint32 H, uint32 W of the input image
    .       8     padded size      uint32 H, uint32 W actually coded (multiples of 64)
    .       8     latent shape     uint32 h, uint32 w of the hyper-latent z (CompressAI's ``shape``)
    .       1     stream count     uint8 S (2 for Cheng2020: y then z)
    .       4·S   stream lengths   uint32 each
    .       Σ     streams          the entropy-coded byte strings, in order
    end-4   4     CRC32            uint32 zlib.crc32 of every byte before it

The header carries the model identity so a decoder refuses a file written with other weights
instead of silently producing garbage, and the CRC turns bit rot or truncation into a clear
``ValueError`` rather than an arithmetic-decoder failure deep inside CompressAI. Version 2 adds
what decoding needs: the device on which the entropy parameters must be computed (always the
CPU: :mod:`jicd.codec.placement`; a file asking for another one is refused when read) and a
checksum of the CDF indices, which the wavefront decoder recomputes, so a machine whose
arithmetic derives other indices refuses the file instead of writing a wrong image. Version 1
files (no such fields) are read as "cpu" without a check.

Model identity. Versions 3 and 4 store the digest of the model's *tensors*
(:func:`jicd.models.identity.weights_digest`: every state-dict entry but the CDF tables that
``update()`` recomputes, in name order, each as name, dtype, shape and little-endian bytes), so
re-saving or re-importing the same weights keeps files decodable. Versions 1 and 2 stored the
sha256 of the model *file*; they still decode with that very file, or with an export made from
it by ``jicd import-checkpoint``, which records the digests of the files it came from
(``"file_sha256_aliases"``). A decoder compares the header against the identity of the same
kind (:func:`jicd.models.identity.accepts`).

Every header text field (arch, coder, device, torch version) must be printable: a file whose
header holds control characters (terminal escape codes) is refused, not echoed. Readers check
the magic number before reading the rest, and read at most a given number of bytes
(:func:`read`), so ``/dev/zero`` or a huge file cannot make them read without limit.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import torch

from jicd.errors import UserError
from jicd.files import open_regular, write_bytes_atomic

MAGIC = b"JICD"
FORMAT_VERSION = 3  # float entropy path
INTEGER_VERSION = 4  # integer entropy path (jicd.codec.integer)
READABLE_VERSIONS = (1, 2, 3, 4)
TENSOR_DIGEST_VERSION = 3
"""First version whose model digest is the tensors' (earlier ones: the model file's sha256)."""
# Where this build computes float entropy parameters for decoding (jicd.codec.placement).
DECODE_DEVICE = "cpu"
ANY_DEVICE = "any"  # integer entropy parameters: the same on every device
_SHA256_BYTES = 32
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class CodedImage:
    """A decoded view of one ``.jicd`` file.

    Attributes:
        arch: Model architecture name from the inference identity.
        quality: Quality index of the model (0 when unknown).
        channels: Channel width N of the model.
        weights_sha256: Hex model digest (version >= 3: of the tensors; earlier: of the file).
        coder: Entropy-coding schedule, "wavefront" or "serial"; decode must use the same one.
        original_size: (H, W) of the input image; the decoder crops back to it.
        padded_size: (H, W) of the padded image that was coded.
        latent_shape: (h, w) of the hyper-latent z, as passed to ``model.decompress``.
        streams: Entropy-coded byte strings (y, then z for Cheng2020).
        decode_device: Where decoding must compute the entropy parameters ("cpu").
        encoder_torch: torch version of the encoder ("" in version-1 files).
        index_check: CRC32 of the y stream's CDF indices (None: not recorded, e.g. serial).
        entropy: "float" (versions 1-3) or "integer" (version 4) entropy path.
    """

    arch: str
    quality: int
    channels: int
    weights_sha256: str
    coder: str
    original_size: tuple[int, int]
    padded_size: tuple[int, int]
    latent_shape: tuple[int, int]
    streams: tuple[bytes, ...]
    decode_device: str = DECODE_DEVICE
    encoder_torch: str = ""
    index_check: int | None = None
    entropy: str = "float"
    version: int = FORMAT_VERSION
    """Format version the file was read from (what kind of model digest it carries)."""

    @property
    def digest_kind(self) -> str:
        """``"tensors"`` (version >= 3) or ``"file"``: what ``weights_sha256`` is a digest of."""
        return "tensors" if self.version >= TENSOR_DIGEST_VERSION else "file"

    @property
    def checks(self) -> list[int] | None:
        """``index_check`` in the form the coders' ``decompress(..., checks=)`` takes."""
        return None if self.index_check is None else [self.index_check]

    @property
    def payload_bytes(self) -> int:
        """Total bytes of all entropy-coded streams (the number bpp is computed from)."""
        return sum(len(s) for s in self.streams)


def _pack_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise UserError(f"name too long for the .jicd header (max 255 bytes): {text[:40]}…")
    return struct.pack(">B", len(raw)) + raw


def encode(image: CodedImage) -> bytes:
    """Serialise ``image`` to the byte layout documented in the module docstring."""
    digest = bytes.fromhex(image.weights_sha256)
    if len(digest) != _SHA256_BYTES:
        raise UserError("weights_sha256 must be a 64-character hex digest")
    integer = image.entropy == "integer"
    parts = [
        MAGIC,
        struct.pack(">H", INTEGER_VERSION if integer else FORMAT_VERSION),
        _pack_text(image.arch),
        struct.pack(">BH", image.quality, image.channels),
        digest,
        _pack_text(image.coder),
        _pack_text(image.decode_device),
        *([_pack_text(image.entropy)] if integer else []),
        _pack_text(image.encoder_torch),
        struct.pack(">BI", image.index_check is not None, image.index_check or 0),
        struct.pack(">6I", *image.original_size, *image.padded_size, *image.latent_shape),
        struct.pack(">B", len(image.streams)),
        struct.pack(f">{len(image.streams)}I", *(len(s) for s in image.streams)),
        *image.streams,
    ]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


class _Reader:
    """Sequential reader over a byte buffer that reports truncation as ``ValueError``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise UserError("not a valid .jicd file: truncated header or stream")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def text(self) -> str:
        (length,) = self.unpack(">B")
        try:
            text = self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("not a valid .jicd file: corrupted header text") from None
        if not text.isprintable():
            raise UserError("not a valid .jicd file: control characters in its header text")
        return text


def _check_envelope(data: bytes) -> tuple[int, bytes]:
    """Check magic, version and CRC32; return the version and the body without the CRC."""
    if len(data) < len(MAGIC) + 2 + _CRC.size or data[: len(MAGIC)] != MAGIC:
        raise UserError("not a .jicd file (bad magic number or too short)")
    (version,) = struct.unpack(">H", data[len(MAGIC) : len(MAGIC) + 2])
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise UserError(f"unsupported .jicd format version {version} (this build reads {readable})")
    body, (stored_crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != stored_crc:
        raise UserError("corrupted or truncated .jicd file (CRC32 mismatch)")
    return version, body


def decode_requirements(encoded: dict) -> dict:
    """The decoding fields of the header for a coder's ``compress`` output
    (``CodedImage(**…)``)."""
    checks = encoded.get("checks")
    entropy = encoded.get("entropy", "float")
    return {
        "decode_device": ANY_DEVICE if entropy == "integer" else DECODE_DEVICE,
        "encoder_torch": torch.__version__,
        "index_check": None if checks is None else int(checks[0]),
        "entropy": entropy,
        "version": INTEGER_VERSION if entropy == "integer" else FORMAT_VERSION,
    }


def decode(data: bytes) -> CodedImage:
    """Parse a ``.jicd`` byte string.

    Raises:
        ValueError: one-line message if the data is not a complete, uncorrupted ``.jicd`` file.
    """
    version, body = _check_envelope(data)
    reader = _Reader(body)
    reader.take(len(MAGIC) + 2)
    arch = reader.text()
    quality, channels = reader.unpack(">BH")
    weights_sha256 = reader.take(_SHA256_BYTES).hex()
    coder = reader.text()
    decode_device, encoder_torch, index_check, entropy = DECODE_DEVICE, "", None, "float"
    if version >= 2:
        decode_device = reader.text()
        entropy = reader.text() if version >= INTEGER_VERSION else entropy
        encoder_torch = reader.text()
        has_check, check = reader.unpack(">BI")
        index_check = check if has_check else None
    if version >= INTEGER_VERSION and (entropy != "integer" or decode_device != ANY_DEVICE):
        raise UserError(
            f"unsupported .jicd entropy path {entropy!r} on {decode_device!r} (this build "
            "reads the integer path on any device)"
        )
    if version < INTEGER_VERSION and decode_device != DECODE_DEVICE:
        raise UserError(
            f"this .jicd file needs its entropy parameters computed on {decode_device!r} "
            f"(encoded with torch {encoder_torch or 'unknown'}); this build decodes on "
            f"{DECODE_DEVICE!r} only"
        )
    sizes = reader.unpack(">6I")
    (count,) = reader.unpack(">B")
    lengths = reader.unpack(f">{count}I")
    streams = tuple(reader.take(length) for length in lengths)
    if reader.pos != len(reader.data):
        raise UserError("not a valid .jicd file: trailing bytes after the last stream")
    return CodedImage(
        arch=arch,
        quality=quality,
        channels=channels,
        weights_sha256=weights_sha256,
        coder=coder,
        original_size=(sizes[0], sizes[1]),
        padded_size=(sizes[2], sizes[3]),
        latent_shape=(sizes[4], sizes[5]),
        streams=streams,
        decode_device=decode_device,
        entropy=entropy,
        encoder_torch=encoder_torch,
        index_check=index_check,
        version=version,
    )


def read(path: str, max_bytes: int = 2**31) -> CodedImage:
    """Read and parse a ``.jicd`` file of at most ``max_bytes`` bytes.

    The magic number is checked on the first bytes, before the rest is read; anything but a
    regular file is refused.

    Raises:
        OSError: a missing or unreadable file.
        UserError: not a regular file, not a ``.jicd`` file, larger than ``max_bytes``, or bad.
    """
    with open_regular(path, ".jicd input") as handle:
        head = handle.read(len(MAGIC))
        if head != MAGIC:
            raise UserError("not a .jicd file (bad magic number or too short)")
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise UserError(f"{path} has {size} bytes, more than the {max_bytes} allowed")
        data = head + handle.read(size - len(head))  # read(n) allocates n bytes first
        if handle.read(1):
            raise UserError(f"{path} grew while being read")
    return decode(data)


def write(path: str, image: CodedImage) -> None:
    """Serialise ``image`` and write it atomically to ``path``."""
    write_bytes_atomic(path, encode(image))
