"""Calibration of the fixed-point scales: value ranges of the entropy side on a few images.

The float model codes a few noisy images (what the codec is for); the largest magnitude of
every tensor that the integer path represents (z_hat, each ``h_s`` stage, y, the context
output, each head stage) sets its scale, per channel for the hidden activations and per tensor
(a power of two) for ``y`` and ``z``, with a margin of ``MARGIN`` (one bit of headroom: values
beyond it are clamped, which only costs rate, never exactness).
Images come from a folder (``--calibration DIR``) or, without one, from a built-in seeded
generator of photo-like content (gradients, edges, textures, blobs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from jicd.codec.images import BLOCK, center_crop, from_uint8, load_rgb
from jicd.codec.integer.stages import Stage
from jicd.errors import UserError
from jicd.files import find_images
from jicd.noise import noisy_at_level

if TYPE_CHECKING:  # compressai ships no type information: this names what is expected
    from compressai.models import CompressionModel

MARGIN = 2.0
DEFAULT_IMAGES = 8
MAX_SIDE = 512  # calibration crops: enough content, bounded time
FLOOR_RATIO = 64  # a channel's scale is at most 64× finer than its tensor's
NOISE_LEVELS = 4


def generated_images(count: int = DEFAULT_IMAGES, size: int = 256, seed: int = 0) -> list[Tensor]:
    """``count`` seeded photo-like clean images ``(1, 3, size, size)`` in [0, 1].

    Each mixes smooth colour gradients, a few sinusoidal gratings, hard-edged rectangles and
    disks, and a band-limited texture, so that the latents cover flat, edge and textured areas.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        image = rng.uniform(0.2, 0.8, 3) + np.stack(
            [rng.uniform(-0.4, 0.4) * rows + rng.uniform(-0.4, 0.4) * cols for _ in range(3)], -1
        )
        for _ in range(3):  # gratings
            freq, phase = rng.uniform(2, 40), rng.uniform(0, 2 * math.pi)
            angle = rng.uniform(0, math.pi)
            wave = np.sin(freq * (math.cos(angle) * rows + math.sin(angle) * cols) + phase)
            image += rng.uniform(0, 0.15) * wave[..., None] * rng.uniform(-1, 1, 3)
        for _ in range(rng.integers(3, 9)):  # flat shapes with hard edges
            cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.25)
            inside = (rows - cy) ** 2 + (cols - cx) ** 2 < radius**2
            if rng.random() < 0.5:
                inside = (abs(rows - cy) < radius) & (abs(cols - cx) < radius * rng.uniform(0.3, 2))
            image[inside] = rng.uniform(0, 1, 3)
        coarse = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3))
        texture = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size]
        image += rng.uniform(0, 0.08) * texture + rng.uniform(0, 0.03) * rng.normal(
            0, 1, image.shape
        )
        pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        images.append(from_uint8(pixels))
    return images


def folder_images(folder: str | Path, count: int = DEFAULT_IMAGES) -> list[Tensor]:
    """The first ``count`` images of ``folder`` (sorted), centre-cropped to ≤ 512 px a side.

    Raises:
        UserError: no such folder, or no image of at least 64×64 in it.
    """
    if not Path(folder).is_dir():
        raise UserError(f"--calibration {folder}: no such folder")
    images = []
    for path in find_images(folder)[:count]:
        image = load_rgb(str(path))
        if min(image.shape[-2:]) < BLOCK:
            continue
        height, width = (min(side, MAX_SIDE) for side in image.shape[-2:])
        top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
        images.append(center_crop(image[..., top : top + height, left : left + width]))
    if not images:
        raise UserError(f"--calibration {folder}: no image of at least {BLOCK}x{BLOCK} px")
    return images


def noisy_versions(images: list[Tensor]) -> list[Tensor]:
    """Image ``i`` with the seeded test noise of level ``i % 4 + 1`` (what the codec codes)."""
    return [noisy_at_level(x, i % NOISE_LEVELS + 1, seed=i) for i, x in enumerate(images)]


class RangeRecorder:
    """Largest magnitude seen per named ``(B, C, H, W)`` tensor: overall and per channel."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.channel_peaks: dict[str, Tensor] = {}

    def see(self, name: str, value: Tensor) -> Tensor:
        per_channel = value.detach().abs().amax(dim=(0, 2, 3)).to("cpu", torch.float64)
        if name in self.channel_peaks:
            per_channel = torch.maximum(per_channel, self.channel_peaks[name])
        self.channel_peaks[name] = per_channel
        self.peaks[name] = float(per_channel.max()) if per_channel.numel() else 0.0
        return value


@torch.no_grad()
def collect_ranges(
    model: CompressionModel, hyper: list[Stage], head: list[Stage], images: list[Tensor]
) -> RangeRecorder:
    """Peaks of ``z``, ``hyper.i``, ``y``, ``context``, ``head.i`` over ``images``.

    Runs the float model image by image on its device; ``y_hat`` is approximated by
    ``round(y)`` for the context input (ranges only, not coding).
    """
    record = RangeRecorder()
    device = next(model.parameters()).device
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().view(-1, 1, 1)
    for x in images:
        y = model.g_a(x.to(device))
        z = model.h_a(y)
        hidden = record.see("z", torch.round(z - medians) + medians)
        for i, stage in enumerate(hyper):
            hidden = record.see(f"hyper.{i}", stage.forward(hidden))
        record.see("y", y)
        ctx = record.see("context", model.context_prediction(torch.round(y)))
        hidden = torch.cat((hidden, ctx), dim=1)
        for i, stage in enumerate(head):
            hidden = record.see(f"head.{i}", stage.forward(hidden))
    return record


def fraction_bits(peak: float, margin: float = MARGIN, most: int = 24) -> int:
    """Largest ``b`` with ``margin · peak · 2**b ≤ INT16_MAX`` (0 … ``most``)."""
    if peak <= 0:
        return min(8, most)
    return int(min(max(math.floor(math.log2(32767 / (margin * peak))), 0), most))


def activation_scales(channel_peaks: Tensor, margin: float = MARGIN) -> Tensor:
    """Per-channel real scales ``s_c`` mapping ``±margin·peak_c`` onto ``±INT16_MAX``.

    A channel's peak is floored at 1/64 of the tensor's (and at 1e-6), so a channel that was
    nearly silent on the calibration images keeps 6 bits of headroom for other inputs.
    """
    floor = max(float(channel_peaks.max()) / FLOOR_RATIO, 1e-6) if channel_peaks.numel() else 1e-6
    return 32767 / (margin * channel_peaks.clamp(min=floor))
