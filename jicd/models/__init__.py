"""jicd models: the joint denoising codec (a CompressAI Cheng2020Anchor), its blocks and presets.

Modules are imported explicitly (no import-time discovery):

- ``layers``     Self-ONN convolution, CBAM, multi-scale front end, residual units;
- ``denoisers``  D0 / D1 and the baseline's AttentionBlock pair;
- ``jicd``       ``JointDenoisingCodec`` and the projection head;
- ``presets``    ``ModelConfig``, ``QUALITIES``, the preset registry, ``build_model``;
- ``io``         pretrained import, inference export and loading.
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
