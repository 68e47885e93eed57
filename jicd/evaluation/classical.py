"""Classical image codecs for ``jicd evaluate --pipeline``: JPEG, WebP, AVIF, JPEG 2000, JPEG XL.

Each codec encodes the 8-bit RGB image a user would save (the float noisy or denoised image
rounded to 8 bit) and decodes it back; the rate is the size of the whole encoded file, headers
included (``8 · bytes / pixels``), as in CompressAI's ``compressai.utils.bench``.

* ``jpeg``, ``webp``, ``avif``: Pillow's ``quality`` (JPEG with ``optimize=True``, Huffman tables
  fitted to the image; AVIF through Pillow >= 11.3's own plugin, one encoder thread).
* ``jpeg2000``: Pillow's OpenJPEG in rate mode; its "quality" is the **target bpp**
  (``quality_layers = [24 / bpp]``), since OpenJPEG's PSNR mode targets the PSNR against the
  *noisy* input, which means nothing here.
* ``jxl``: libjxl through ``imagecodecs``; quality is cjxl's ``-q`` (``level``), effort 7.

Default sweeps were chosen on noisy Kodak so every curve spans roughly 0.05–1 bpp where the codec
can get there (on noisy inputs JPEG, WebP and JPEG XL cannot go much below 0.15–0.25 bpp).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, features

from jicd.errors import UserError

CHECKPOINT_CHOICE = "a checkpoint file"


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec: its quality scale, default sweep and encode/decode functions.

    Attributes:
        name: The SPEC name (``avif``).
        qualities: Default sweep, ascending (higher = larger file).
        low, high: Accepted quality range (inclusive).
        integer: Whether qualities must be whole numbers.
        meaning: What the quality value is, for messages and result descriptions.
        encode: ``(uint8 (H, W, 3), quality) → file bytes``.
        decode: ``file bytes → uint8 (H, W, 3)``.
        available: ``() → None``; raises :class:`UserError` naming the missing package.
        library: ``() → str``, the library and version that codes.
    """

    name: str
    qualities: tuple[float, ...]
    low: float
    high: float
    integer: bool
    meaning: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]
    available: Callable[[], None]
    library: Callable[[], str]

    def check_quality(self, quality: float) -> float:
        """``quality`` as the codec takes it; a one-line :class:`UserError` when out of range."""
        whole = float(quality).is_integer()
        if not (self.low <= quality <= self.high) or (self.integer and not whole):
            kind = "an integer" if self.integer else "a number"
            raise UserError(
                f"quality {quality:g} is not valid for {self.name}: {kind} in "
                f"{self.low:g}..{self.high:g} ({self.meaning})"
            )
        return int(quality) if self.integer else float(quality)

    def describe(self) -> str:
        """One line for the results' ``pipeline`` description."""
        return f"{self.name}: {self.library()}, quality = {self.meaning}, 8-bit RGB input"


def _pillow_encoder(fmt: str, **options) -> Callable[[np.ndarray, float], bytes]:
    def encode(array: np.ndarray, quality: float) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array, mode="RGB").save(buffer, fmt, quality=quality, **options)
        return buffer.getvalue()

    return encode


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _encode_jpeg2000(array: np.ndarray, target_bpp: float) -> bytes:
    buffer = io.BytesIO()
    # OpenJPEG's rate mode takes a compression ratio against the raw 24 bits per pixel.
    Image.fromarray(array, mode="RGB").save(
        buffer, "JPEG2000", quality_mode="rates", quality_layers=[24.0 / target_bpp]
    )
    return buffer.getvalue()


def _imagecodecs():
    """The ``imagecodecs`` module, with a JPEG XL build (a default dependency of jicd)."""
    try:
        import imagecodecs
    except ImportError:
        raise UserError(
            "codec jxl needs the package imagecodecs: pip install imagecodecs"
        ) from None
    if not imagecodecs.JPEGXL.available:
        raise UserError(f"imagecodecs {imagecodecs.__version__} was built without JPEG XL")
    return imagecodecs


def _encode_jxl(array: np.ndarray, quality: float) -> bytes:
    return bytes(_imagecodecs().jpegxl_encode(array, level=quality, effort=7, numthreads=1))


def _decode_jxl(data: bytes) -> np.ndarray:
    return np.asarray(_imagecodecs().jpegxl_decode(data, numthreads=1))


def _pillow_feature(feature: str, label: str, hint: str) -> Callable[[], None]:
    def available() -> None:
        if not features.check(feature):
            import PIL

            raise UserError(f"Pillow {PIL.__version__} has no {label} support; {hint}")

    return available


def _pillow_library(feature: str, label: str) -> Callable[[], str]:
    def library() -> str:
        import PIL

        return f"Pillow {PIL.__version__} {label} ({feature} {features.version(feature)})"

    return library


def _jxl_library() -> str:
    imagecodecs = _imagecodecs()
    return f"imagecodecs {imagecodecs.__version__} JPEG XL ({imagecodecs.jpegxl_version()})"


_PILLOW_HINT = "install a Pillow wheel with it: pip install -U pillow"
_AVIF_HINT = "install Pillow >= 11.3 (pip install 'pillow>=11.3') or pillow-avif-plugin"


def _pillow_codec(
    name: str,
    feature: str,
    label: str,
    qualities: tuple,
    low: int,
    meaning: str,
    hint: str = _PILLOW_HINT,
    **options,
) -> ClassicalCodec:
    """A codec of Pillow's own plugins, quality ``low..100`` passed to ``Image.save``."""
    return ClassicalCodec(
        name,
        qualities,
        low,
        100,
        True,
        meaning,
        _pillow_encoder(label.replace(" ", "").upper(), **options),
        _pillow_decode,
        _pillow_feature(feature, label, hint),
        _pillow_library(feature, label),
    )


CODECS: dict[str, ClassicalCodec] = {
    codec.name: codec
    for codec in (
        _pillow_codec(
            "jpeg", "jpg", "JPEG", (3, 5, 10, 20, 35, 50), 1,
            "Pillow quality 1-100, optimized Huffman, 4:2:0", optimize=True,
        ),
        _pillow_codec(
            "webp", "webp", "WebP", (0, 5, 10, 20, 40, 60), 0,
            "Pillow quality 0-100 (lossy, method 4)",
        ),
        _pillow_codec(
            "avif", "avif", "AVIF", (5, 15, 25, 35, 45, 55), 0,
            "Pillow quality 0-100 (speed 6, 4:2:0)", _AVIF_HINT, max_threads=1,
        ),
        replace(
            _pillow_codec("jpeg2000", "jpg_2000", "JPEG 2000", (0.05, 0.1, 0.2, 0.4, 0.7, 1.0), 0,
                          "target bpp 0.01-8 (OpenJPEG rate mode)"),
            low=0.01, high=8.0, integer=False, encode=_encode_jpeg2000,
        ),
        ClassicalCodec(
            "jxl", (5, 15, 30, 45, 60, 75), 0, 100, True, "cjxl -q 0-100, effort 7",
            _encode_jxl, _decode_jxl, lambda: _imagecodecs() and None, _jxl_library,
        ),
    )
}  # fmt: skip


def codec_choices() -> str:
    """``jpeg, webp, avif, jpeg2000, jxl or a checkpoint file`` (for error messages)."""
    return f"{', '.join(CODECS)} or {CHECKPOINT_CHOICE}"


def get_codec(name: str) -> ClassicalCodec:
    """The codec called ``name``, checked to be usable here (its library and plugin present)."""
    if name not in CODECS:
        raise UserError(f"unknown codec '{name}'; choose from {codec_choices()}")
    codec = CODECS[name]
    codec.available()
    return codec
