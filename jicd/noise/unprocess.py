"""Camera-pipeline noise: unprocess sRGB to raw, add raw read + shot noise, process back.

After Brooks, Mildenhall, Xue, Chen, Sharlet, Barron, "Unprocessing Images for Learned Raw
Denoising" (CVPR 2019). Per image, with its own random camera::

    sRGB --inverse tone map--> --inverse gamma--> linear RGB --RGB→camera CCM-->
    --inverse white balance--> [mosaic RGGB] --read + shot noise--> [demosaic]
    --white balance--> --camera→RGB CCM--> --gamma--> --tone map--> clamp → noisy sRGB

* tone map: the smoothstep ``3x² − 2x³`` and its inverse ``½ − sin(asin(1 − 2y) / 3)``;
* gamma: ``x^(1/2.2)`` / ``x^2.2`` (clamped at 1e-8, as the paper's code);
* colour correction: a random convex combination of four cameras' XYZ→camera matrices
  (the paper's table), times sRGB→XYZ, rows normalised to sum 1;
* white balance: ``rgb_gain = 1 / N(0.8, 0.1)``, red gain ``U(1.9, 2.4)``, blue ``U(1.5, 1.9)``;
* noise: ``log(shot) ~ U(log 1e-4, log 1.2e-2)``, ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)``
  (the paper's log-linear fit), ``raw_noisy ~ N(raw, shot · raw + read)`` (variances).

Only the final sRGB image is clamped, so without noise (and without mosaic, whose bilinear
demosaic loses detail) ``process(unprocess(x)) == x`` up to float rounding. The paper's
highlight-preserving "safe" inverse gains are not used for the same reason: they make bright
pixels non-invertible.

Reproducibility follows :mod:`jicd.noise.baseline`: parameters and the Gaussian draw come from
the given generator (one per image for fixed test settings), and all arithmetic runs on the
images' device, in batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# XYZ → camera matrices of the four cameras in the paper's reference code (``random_ccm``);
# rows are the camera's R, G, B.
XYZ_TO_CAMS = torch.tensor(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ]
)
RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
LOG_SHOT_RANGE = (math.log(0.0001), math.log(0.012))
READ_FROM_SHOT = (2.18, 1.20, 0.26)
"""``log(read) = slope · log(shot) + intercept + N(0, std)``."""


@dataclass
class Camera:
    """One image's camera: colour correction, white-balance gains and noise levels, each ``(B, …)``.

    Attributes:
        rgb2cam: ``(B, 3, 3)`` linear RGB → camera RGB.
        rgb_gain, red_gain, blue_gain: ``(B,)`` white-balance gains.
        shot, read: ``(B,)`` noise variances (``var = shot · raw + read``).
    """

    rgb2cam: Tensor
    rgb_gain: Tensor
    red_gain: Tensor
    blue_gain: Tensor
    shot: Tensor
    read: Tensor


def _rgb_to_camera(weights: Tensor) -> Tensor:
    """``(B, 3, 3)`` sRGB → camera matrices: the reference cameras' XYZ → camera matrices mixed
    with ``weights (B, cameras)``, times sRGB → XYZ, each row normalised to sum 1."""
    xyz2cam = torch.einsum("bk,kij->bij", weights, XYZ_TO_CAMS.to(weights.device))
    rgb2cam = xyz2cam @ RGB_TO_XYZ.to(weights.device)
    return rgb2cam / rgb2cam.sum(dim=2, keepdim=True)


def random_camera(batch: int, generator: torch.Generator | None = None) -> Camera:
    """Draw ``batch`` random cameras (the paper's distributions) on the generator's device."""
    device = generator.device if generator is not None else torch.device("cpu")

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, device=device)

    weights = torch.rand(batch, len(XYZ_TO_CAMS), generator=generator, device=device)
    weights = weights / weights.sum(dim=1, keepdim=True)
    rgb2cam = _rgb_to_camera(weights)
    rgb_gain = 1.0 / (0.8 + 0.1 * torch.randn(batch, generator=generator, device=device))
    red_gain, blue_gain = uniform(1.9, 2.4), uniform(1.5, 1.9)
    log_shot = uniform(*LOG_SHOT_RANGE)
    slope, intercept, std = READ_FROM_SHOT
    noise = std * torch.randn(batch, generator=generator, device=device)
    log_read = slope * log_shot + intercept + noise
    return Camera(rgb2cam, rgb_gain, red_gain, blue_gain, log_shot.exp(), log_read.exp())


def camera_to(camera: Camera, device: torch.device) -> Camera:
    """The same camera with every tensor on ``device``."""
    return Camera(*(getattr(camera, f).to(device) for f in Camera.__dataclass_fields__))


def _wb_gains(camera: Camera) -> Tensor:
    """``(B, 3, 1, 1)`` forward white-balance gains (camera → balanced)."""
    ones = torch.ones_like(camera.red_gain)
    gains = torch.stack([camera.red_gain, ones, camera.blue_gain], dim=1) * camera.rgb_gain[:, None]
    return gains[:, :, None, None]


def _apply_ccm(image: Tensor, ccm: Tensor) -> Tensor:
    """``(B, 3, H, W)`` × ``(B, 3, 3)`` colour matrices, per pixel."""
    return torch.einsum("bij,bjhw->bihw", ccm, image)


def unprocess(srgb: Tensor, camera: Camera) -> Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] → linear camera raw (RGB planes, before any mosaic)."""
    x = srgb.clamp(0.0, 1.0)
    x = 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)  # inverse smoothstep
    x = x.clamp_min(1e-8).pow(2.2)  # inverse gamma
    x = _apply_ccm(x, camera.rgb2cam)
    return x / _wb_gains(camera)


def process(raw: Tensor, camera: Camera) -> Tensor:
    """Linear camera raw ``(B, 3, H, W)`` → sRGB, clamped to [0, 1] only at the end."""
    x = raw * _wb_gains(camera)
    x = _apply_ccm(x, torch.linalg.inv(camera.rgb2cam))
    x = x.clamp_min(1e-8).pow(1.0 / 2.2)
    x = x.clamp(0.0, 1.0)  # the tone curve is defined on [0, 1]
    return (3.0 * x**2 - 2.0 * x**3).clamp(0.0, 1.0)


def mosaic_demosaic(raw: Tensor) -> Tensor:
    """RGGB Bayer sampling then bilinear demosaicking, ``(B, 3, H, W)`` → ``(B, 3, H, W)``.

    What a sensor sees (one colour per pixel) and how a simple camera pipeline fills in the rest;
    it spatially correlates the noise added in between as a real pipeline does.
    """
    b, _, h, w = raw.shape
    mask = torch.zeros(1, 3, h, w, device=raw.device, dtype=raw.dtype)
    mask[:, 0, 0::2, 0::2] = 1
    mask[:, 1, 0::2, 1::2] = 1
    mask[:, 1, 1::2, 0::2] = 1
    mask[:, 2, 1::2, 1::2] = 1
    sampled = raw * mask
    kernel = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    kernel = kernel.to(raw)[None, None].repeat(3, 1, 1, 1)
    num = F.conv2d(F.pad(sampled, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)
    den = F.conv2d(
        F.pad(mask.expand(b, -1, -1, -1), (1, 1, 1, 1), mode="reflect"), kernel, groups=3
    )
    return num / den


def add_raw_noise(raw: Tensor, camera: Camera, normal: Tensor) -> Tensor:
    """``raw + sqrt(shot · raw + read) · normal`` with per-image variances (no clamping)."""
    variance = (
        camera.shot[:, None, None, None] * raw.clamp_min(0) + camera.read[:, None, None, None]
    )
    return raw + variance.sqrt() * normal


def unprocess_noise(
    clean: Tensor,
    generator: torch.Generator | None = None,
    mosaic: bool = False,
    camera: Camera | None = None,
) -> Tensor:
    """Camera-pipeline noise for a batch ``(B, 3, H, W)`` in [0, 1] (one random camera each).

    Args:
        clean: images on any device; the arithmetic runs there.
        generator: draws the cameras and the Gaussian (on the generator's device, then moved).
        mosaic: sample an RGGB mosaic before the noise and demosaic after it.
        camera: fixed cameras instead of random ones (test settings).

    Returns:
        ``(B, 3, H, W)`` noisy sRGB in [0, 1].
    """
    cam = camera if camera is not None else random_camera(clean.shape[0], generator)
    cam = camera_to(cam, clean.device)
    device = generator.device if generator is not None else clean.device
    normal = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    raw = unprocess(clean, cam)
    noisy = add_raw_noise(raw, cam, normal.to(clean.device))
    if mosaic:
        noisy = mosaic_demosaic(noisy)
    return process(noisy, cam)


TEST_CAMERA_SHOT = {"unprocess-low": 0.0005, "unprocess-mid": 0.002, "unprocess-high": 0.008}
"""Fixed evaluation settings: shot variance per named level (read from the log-linear fit)."""


def evaluation_camera(name: str, batch: int) -> Camera:
    """The fixed camera of evaluation level ``name``: the mean colour matrix and gains.

    The four reference cameras weighted equally, ``rgb_gain`` 1/0.8, red 2.15, blue 1.7 (the
    distributions' centres), shot from :data:`TEST_CAMERA_SHOT`, read from the paper's fit.
    """
    rgb2cam = _rgb_to_camera(torch.full((1, len(XYZ_TO_CAMS)), 1.0 / len(XYZ_TO_CAMS)))
    shot = torch.tensor(TEST_CAMERA_SHOT[name])
    slope, intercept, _ = READ_FROM_SHOT
    read = torch.exp(slope * shot.log() + intercept)

    def full(value: Tensor | float) -> Tensor:
        return torch.full((batch,), float(value))

    return Camera(
        rgb2cam.expand(batch, 3, 3).clone(),
        full(1 / 0.8),
        full(2.15),
        full(1.7),
        full(shot),
        full(read),
    )
