"""The ``noise`` section of the training config."""

from __future__ import annotations

from dataclasses import dataclass, field

from jicd.errors import UserError

TRAINABLE_KINDS: list[str] = []
"""Names of the noise types that can train, filled by :func:`jicd.noise.registry.register`
(the package imports the registry before anyone can build a config)."""


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
        if self.kind not in TRAINABLE_KINDS:
            raise UserError(
                f"noise.kind: unknown kind {self.kind!r}; choose one of {TRAINABLE_KINDS}"
            )
        for name in ("log10_sigma_r", "log10_sigma_s"):
            values = list(getattr(self, name))
            if len(values) != 2 or not values[0] <= values[1]:
                raise UserError(f"noise.{name}: expected low <= high, got {values}")
            setattr(self, name, [float(v) for v in values])

    def sigma_ranges(self) -> tuple[list[float], list[float]]:
        """``(log10_sigma_r, log10_sigma_s)``, as ``sample_train_sigmas`` takes them."""
        return self.log10_sigma_r, self.log10_sigma_s
