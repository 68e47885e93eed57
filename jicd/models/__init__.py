"""jicd models: the joint denoising codec (a CompressAI Cheng2020Anchor), its blocks and presets.

Modules are imported explicitly (no import-time discovery):

- ``layers``       Self-ONN convolution, CBAM, multi-scale front end, residual units;
- ``denoisers``    D0 / D1, the baseline's AttentionBlock pair, the identity (plain anchor);
- ``joint_codec``  ``JointDenoisingCodec`` and the projection heads;
- ``presets``      ``ModelConfig``, ``QUALITIES``, the preset registry, ``build_model``;
- ``released``     the released checkpoints' layouts (ECCV'22 baseline, JICDCLS) → our names;
- ``checkpoints``  import of the four checkpoint formats, inference export and loading;
- ``import_cli``   ``jicd import-checkpoint``.
"""

from jicd.models.joint_codec import JointDenoisingCodec, ProjectionHead
from jicd.models.presets import (
    PRESETS,
    QUALITIES,
    ModelConfig,
    Preset,
    build_model,
    build_model_from_config,
    channels_for_quality,
    lambda_for_quality,
    register_preset,
)

__all__ = [
    "PRESETS",
    "QUALITIES",
    "JointDenoisingCodec",
    "ModelConfig",
    "Preset",
    "ProjectionHead",
    "build_model",
    "build_model_from_config",
    "channels_for_quality",
    "lambda_for_quality",
    "register_preset",
]
