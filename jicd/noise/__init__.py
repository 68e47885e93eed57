"""Noise: THE noise implementation of jicd, for training, validation, evaluation and the CLI.

* :mod:`jicd.noise.registry` — every named noise type, used alike by training (``noise.kind``,
  :class:`NoiseConfig`) and evaluation (``--levels``), ``none`` included;
* :mod:`jicd.noise.baseline` — the baseline's gamma + read/shot noise, its test levels and the
  validation noise (reproduced exactly, quirks included: ``docs/method.md``);
* :mod:`jicd.noise.synthetic` — Gaussian, Poisson–Gaussian, correlated, JPEG after noise;
* :mod:`jicd.noise.unprocess` — camera-pipeline noise (Brooks et al., CVPR 2019).
"""

from jicd.noise.baseline import (
    TEST_LEVELS,
    add_noise,
    degamma,
    gamma,
    noisy_at_level,
    sample_train_sigmas,
    seeded_normal,
    validation_noise,
)
from jicd.noise.registry import (
    EVALUATION_CHOICES,
    NOISE_TYPES,
    NoiseConfig,
    noisy_at,
    parse_noise,
    register,
    training_noise,
)

__all__ = [
    "EVALUATION_CHOICES",
    "NOISE_TYPES",
    "TEST_LEVELS",
    "NoiseConfig",
    "add_noise",
    "degamma",
    "gamma",
    "noisy_at",
    "noisy_at_level",
    "parse_noise",
    "register",
    "sample_train_sigmas",
    "seeded_normal",
    "training_noise",
    "validation_noise",
]
