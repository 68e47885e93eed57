"""One vocabulary of noise for training (``noise.kind``) and evaluation (``--levels``).

Every noise type can do both: **train** draws its randomness from the trainer's generator (on
the training device); **evaluate** gives image ``i`` of a batch its own CPU generator seeded
``seed`` (the baseline seeds every test image with 0), so a batch gives the same result as
coding images one by one, on any device.

========================  ===================================================================
name                      noise
========================  ===================================================================
``gamma``                 the baseline's gamma + read/shot noise, levels log-uniform per image
                          (training's default; :mod:`jicd.noise.baseline`)
``1`` … ``4``             the baseline's fixed test levels
``gaussian15/25/50``      additive white Gaussian, σ = 15, 25, 50 / 255, in sRGB
``poisson-gaussian``      signal-dependent in sRGB: ``N(x, a·x + b²)``, a = 0.01, b = 0.02
``correlated25``          Gaussian σ = 25/255 blurred by a 1-px Gaussian kernel, rescaled to σ
``jpeg-level2``           level 2, then JPEG at quality 75 (what phones hand over)
``unprocess``             camera-pipeline noise, a random camera per image
                          (:mod:`jicd.noise.unprocess`)
``unprocess-low/mid/high``  camera-pipeline noise at fixed camera settings
``none``                  no noise: the clean image (a plain codec, as CompressAI evaluates)
``paired``                training only: the real noisy image of paired shards (evaluation
                          scores real pairs at level ``real`` by itself)
========================  ===================================================================

A new noise is one :func:`register` call with its two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jicd.errors import UserError
from jicd.noise.baseline import TEST_LEVELS, add_noise, sample_train_sigmas, seeded_normal
from jicd.noise.synthetic import (
    Noise,
    baseline_level,
    correlated,
    gaussian,
    jpeg_after,
    poisson_gaussian,
)
from jicd.noise.unprocess import TEST_CAMERA_SHOT, evaluation_camera, unprocess_noise


@dataclass
class NoiseConfig:
    """Training noise: which type (any name of :mod:`jicd.noise.registry`), and the random
    distribution of the types that draw their parameters per image.

    ``kind``: ``gamma`` — the baseline's gamma + read/shot noise with levels drawn per image
    (the paper's); ``unprocess`` — camera-pipeline noise with a random camera per image;
    ``paired`` — real noise: the loader's batch carries the noisy image (SIDD shards);
    ``none`` — the clean image itself (a plain codec); or any fixed evaluation type
    (``1`` … ``4``, ``gaussian25``, ``poisson-gaussian``, ``unprocess-mid``, …).
    """

    kind: str = "gamma"
    """A noise type name (``jicd.noise.NOISE_TYPES``)."""
    mosaic: bool = False
    """``unprocess`` types only: RGGB mosaic before and bilinear demosaic after the raw noise."""
    log10_sigma_r: list[float] = field(default_factory=lambda: [-3.0, -1.5])
    """``gamma``: range (low, high) of log10(sigma_r), the read-noise standard deviation."""
    log10_sigma_s: list[float] = field(default_factory=lambda: [-4.0, -2.0])
    """``gamma``: range (low, high) of log10(sigma_s), the shot-noise variance factor."""

    def __post_init__(self) -> None:
        trainable = [name for name, t in NOISE_TYPES.items() if t.train is not None]
        if self.kind not in trainable:
            raise UserError(f"noise.kind: unknown kind {self.kind!r}; choose one of {trainable}")
        for name in ("log10_sigma_r", "log10_sigma_s"):
            values = list(getattr(self, name))
            if len(values) != 2 or not values[0] <= values[1]:
                raise UserError(f"noise.{name}: expected low <= high, got {values}")
            setattr(self, name, [float(v) for v in values])

    def sigma_ranges(self) -> tuple[list[float], list[float]]:
        """``(log10_sigma_r, log10_sigma_s)``, as ``sample_train_sigmas`` takes them."""
        return self.log10_sigma_r, self.log10_sigma_s


Train = Callable[[Tensor, torch.Generator | None, NoiseConfig], Tensor]
"""``(clean (B, 3, H, W), the trainer's generator, the noise section) → noisy``."""
Evaluate = Callable[[Tensor, int], Tensor]
"""``(clean (B, 3, H, W), seed) → noisy``, every image drawn from its own seeded generator."""


@dataclass(frozen=True)
class NoiseType:
    """A named noise: how it trains and how it is evaluated (None: not in that role)."""

    name: str
    train: Train | None
    evaluate: Evaluate | None


NOISE_TYPES: dict[str, NoiseType] = {}


def register(name: str, train: Train | None, evaluate: Evaluate | None) -> None:
    """Add a noise type (a name can be registered once)."""
    if name in NOISE_TYPES:
        raise ValueError(f"noise type {name!r} is registered twice")
    NOISE_TYPES[name] = NoiseType(name, train, evaluate)


def normal_like(clean: Tensor, generator: torch.Generator | None) -> Tensor:
    """A standard normal of ``clean``'s shape from ``generator`` (on its device), on ``clean``'s."""
    device = generator.device if generator is not None else clean.device
    draw = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    return draw.to(clean.device)


def per_image(noise: Callable[[Tensor, torch.Generator], Tensor]) -> Evaluate:
    """Evaluate ``noise(image, generator)`` with one CPU generator seeded ``seed`` per image."""

    def evaluate(clean: Tensor, seed: int) -> Tensor:
        images = [noise(image[None], torch.Generator().manual_seed(seed)) for image in clean]
        return torch.cat(images)

    return evaluate


def register_formula(name: str, noise: Noise) -> None:
    """A noise that is a function of a standard normal draw (:mod:`jicd.noise.synthetic`)."""
    register(
        name,
        lambda clean, generator, _cfg: noise(clean, normal_like(clean, generator)),
        lambda clean, seed: noise(clean, seeded_normal(clean, [seed] * clean.shape[0])),
    )


def _gamma_train(clean: Tensor, generator: torch.Generator | None, cfg: NoiseConfig) -> Tensor:
    device = generator.device if generator is not None else clean.device
    sigma_r, sigma_s = sample_train_sigmas(cfg.sigma_ranges(), clean.shape[0], generator, device)
    return add_noise(clean, sigma_r, sigma_s, generator)


register(
    "gamma", _gamma_train, per_image(lambda image, gen: _gamma_train(image, gen, NoiseConfig()))
)
for _level in TEST_LEVELS:
    register_formula(str(_level), baseline_level(_level))
for _sigma in (15, 25, 50):
    register_formula(f"gaussian{_sigma}", gaussian(_sigma))
register_formula("poisson-gaussian", poisson_gaussian)
register_formula("correlated25", correlated(25))
register_formula("jpeg-level2", jpeg_after(2))
register(
    "unprocess",
    lambda clean, generator, cfg: unprocess_noise(clean, generator, mosaic=cfg.mosaic),
    per_image(lambda image, gen: unprocess_noise(image, gen)),
)


def _camera_noise(name: str) -> tuple[Train, Evaluate]:
    """Training and evaluation noise of the fixed test camera ``name``."""

    def train(clean: Tensor, generator: torch.Generator | None, cfg: NoiseConfig) -> Tensor:
        return unprocess_noise(
            clean, generator, mosaic=cfg.mosaic, camera=evaluation_camera(name, clean.shape[0])
        )

    def one_image(image: Tensor, gen: torch.Generator) -> Tensor:
        return unprocess_noise(image, gen, camera=evaluation_camera(name, 1))

    return train, per_image(one_image)


for _name in TEST_CAMERA_SHOT:
    register(_name, *_camera_noise(_name))
register("none", lambda clean, _generator, _cfg: clean, lambda clean, _seed: clean)
register("paired", lambda clean, _generator, _cfg: clean, None)  # the batch's noisy image
EVALUATION_CHOICES = [name for name, t in NOISE_TYPES.items() if t.evaluate is not None]


def parse_noise(name: str | int) -> int | str:
    """An evaluation noise name: the baseline's numbered levels as ints (``"3"`` → 3, the
    results files' ``level``), the others as names; anything else is a one-line error."""
    text = str(name)
    if text in NOISE_TYPES and NOISE_TYPES[text].evaluate is not None:
        return int(text) if text.isdigit() else text
    hint = " (real pairs are scored at level real by themselves)" if text == "paired" else ""
    raise UserError(
        f"unknown noise level {text!r}; choose from {', '.join(EVALUATION_CHOICES)}{hint}"
    )


def noisy_at(clean: Tensor, level: str | int, seed: int = 0) -> Tensor:
    """Evaluation noise ``level`` on ``clean (B, 3, H, W)``, every image seeded ``seed``."""
    evaluate = NOISE_TYPES[str(parse_noise(level))].evaluate
    assert evaluate is not None  # parse_noise checked it
    return evaluate(clean, seed)


def training_noise(
    cfg: NoiseConfig, batch: Mapping[str, Any], generator: torch.Generator | None = None
) -> Tensor:
    """The noisy input of one training batch, per ``cfg.kind``.

    Args:
        cfg: the ``noise`` section.
        batch: the loader's batch (``data_pipeline.contract.TrainBatch``): ``clean (B, 3, P, P)``
            and, for ``paired``, ``noisy``.
        generator: the trainer's noise generator (on the training device).

    Returns:
        ``(B, 3, P, P)`` noisy images in [0, 1] on ``clean``'s device.
    """
    if cfg.kind == "paired":
        if "noisy" not in batch:
            raise UserError("noise.kind=paired needs paired shards (prepare-shards --pairs)")
        return batch["noisy"]
    train = NOISE_TYPES[cfg.kind].train
    assert train is not None  # NoiseConfig checked it
    return train(batch["clean"], generator, cfg)
