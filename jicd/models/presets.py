"""Model configuration, qualities and the preset registry (``jicd`` paper, ``baseline`` ECCV 22)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jicd.errors import UserError
from jicd.models.joint_codec import JointDenoisingCodec

# quality → (N, λ_d): N from CompressAI's cheng2020-anchor zoo, λ from the papers (docs/method.md).
QUALITIES: dict[int, tuple[int, float]] = {
    1: (128, 0.0018),
    2: (128, 0.0035),
    3: (128, 0.0067),
    4: (192, 0.0130),
    5: (192, 0.0250),
    6: (192, 0.0483),
}
HEADS = ("paper", "authors")
MAX_CHANNELS = 1024
"""Largest N a config (or a file's weights) may ask for: the published models use 128-320, and
an export from someone else must not make the loader build an arbitrarily large model."""
MAX_ONN_Q = 8
MAX_PROJ_DIM = 4096
ABLATION_FLAGS = ("contrastive", "self_onn", "multi_scale")


def lambda_for_quality(quality: int) -> float:
    """Rate-distortion weight λ_d of a quality (1-6)."""
    return QUALITIES[_check_quality(quality)][1]


def channels_for_quality(quality: int) -> int:
    """Latent channels N of a quality (1-6): 128 for q1-q3, 192 for q4-q6."""
    return QUALITIES[_check_quality(quality)][0]


def _check_quality(quality: int) -> int:
    if quality not in QUALITIES:
        raise UserError(f"quality must be one of {sorted(QUALITIES)}, got {quality!r}")
    return quality


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise UserError(f"model.head: unknown {head!r}; choose from {', '.join(HEADS)}")


@dataclass(frozen=True)
class Preset:
    """A named architecture: denoiser kind and default ablation switches."""

    denoiser: str
    contrastive: bool
    self_onn: bool
    multi_scale: bool
    description: str


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, preset: Preset) -> None:
    """Add a preset to the registry; a name can be registered only once."""
    if name in PRESETS:
        raise UserError(f"model preset {name!r} is already registered")
    PRESETS[name] = preset


register_preset(
    "jicd",
    Preset("cbam", True, True, True, "ICIP 2024: multi-scale Self-ONN/CBAM denoisers + NT-Xent"),
)
register_preset(
    "baseline",
    Preset("attention", False, False, False, "ECCV 2022: AttentionBlock denoisers, guidance only"),
)
register_preset(
    "anchor",
    Preset("identity", False, False, False, "plain Cheng2020Anchor: no denoisers, no contrastive"),
)


@dataclass
class ModelConfig:
    """The ``model`` section: which architecture, at which quality."""

    preset: str = "jicd"
    """Registered architecture: ``jicd`` (paper), ``baseline`` (ECCV 2022) or ``anchor`` (plain)."""
    quality: int = 3
    """Quality 1-6: sets N (128 / 192) and the default λ_d."""
    channels: int | None = None
    """Override of N (tiny test models); None = N of the quality."""
    contrastive: bool | None = None
    """Contrastive branch (projection head + NT-Xent); None = preset default."""
    self_onn: bool | None = None
    """Self-ONN residual units in D1; None = preset default."""
    multi_scale: bool | None = None
    """Dilated multi-scale front end in D0/D1; None = preset default."""
    onn_q: int = 3
    """Order q of the Self-ONN convolutions (1 = ordinary convolution)."""
    proj_dim: int = 128
    """Output size of the projection head."""
    head: str = "paper"
    """Projection head: ``paper`` (GAP → MLP N→128→proj_dim → L2, the paper's), or ``authors``
    (their code: Linear(64,128)-ReLU-Linear(128,proj_dim) along the width of the 64-wide ga0
    map, so 256-px patches only, then average pool, no normalisation; ``loss.lambda_c`` and
    ``loss.normalize`` follow it)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"model.preset: unknown {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.quality not in QUALITIES:
            raise UserError(f"model.quality must be in {sorted(QUALITIES)}, got {self.quality}")
        if self.channels is not None and (
            self.channels < 4 or self.channels % 4 or self.channels > MAX_CHANNELS
        ):
            raise UserError(
                f"model.channels must be a multiple of 4 in [4, {MAX_CHANNELS}], "
                f"got {self.channels}"
            )
        if not (1 <= self.onn_q <= MAX_ONN_Q and 1 <= self.proj_dim <= MAX_PROJ_DIM):
            raise UserError(
                f"model.onn_q must be in [1, {MAX_ONN_Q}] and model.proj_dim in "
                f"[1, {MAX_PROJ_DIM}], got {self.onn_q} and {self.proj_dim}"
            )
        _check_head(self.head)
        if PRESETS[self.preset].denoiser in ("attention", "identity") and (
            self.flags()["self_onn"] or self.flags()["multi_scale"]
        ):
            raise UserError(
                f"model.preset {self.preset!r} supports neither self_onn nor multi_scale"
            )

    def flags(self) -> dict[str, bool]:
        """The ablation switches with preset defaults filled in."""
        preset = PRESETS[self.preset]
        return {
            name: getattr(preset, name) if getattr(self, name) is None else getattr(self, name)
            for name in ABLATION_FLAGS
        }

    def num_channels(self) -> int:
        """N actually built: ``channels`` if set, else N of the quality."""
        return self.channels if self.channels is not None else channels_for_quality(self.quality)

    def arch_name(self) -> str:
        """Preset name plus the switches changed from its defaults, e.g. ``jicd[-contrastive]``."""
        preset = PRESETS[self.preset]
        changed = [
            ("+" if value else "-") + name
            for name, value in self.flags().items()
            if value != getattr(preset, name)
        ]
        return f"{self.preset}[{','.join(changed)}]" if changed else self.preset


def build_model_from_config(cfg: ModelConfig) -> JointDenoisingCodec:
    """A freshly initialised model for ``cfg``."""
    return JointDenoisingCodec(
        cfg.num_channels(),
        denoiser=PRESETS[cfg.preset].denoiser,
        onn_q=cfg.onn_q,
        proj_dim=cfg.proj_dim,
        head=cfg.head,
        **cfg.flags(),
    )


def build_model(
    preset: str = "jicd", quality: int = 3, channels: int | None = None, **flags: Any
) -> JointDenoisingCodec:
    """Shortcut: ``build_model_from_config(ModelConfig(preset, quality, channels, **flags))``.

    ``flags`` are the other ``ModelConfig`` fields (``contrastive=False``, ``onn_q=1``, ...).
    """
    return build_model_from_config(
        ModelConfig(preset=preset, quality=quality, channels=channels, **flags)
    )
