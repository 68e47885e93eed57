"""Weights in and out: pretrained cheng2020-anchor import, inference export, inference loading.

Export format (``save_export``), one ``torch.save`` payload::

    {"format": "jicd-export", "version": 1, "model": asdict(ModelConfig), "state_dict": {...}}

with the entropy models' CDF tables already computed (``update(force=True)``), so a fresh process
codes real bitstreams right after ``load_for_inference``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from compressai.models import Cheng2020Anchor
from compressai.zoo.pretrained import load_pretrained
from torch import Tensor, nn

from jicd.config import from_dict
from jicd.errors import UserError
from jicd.files import torch_save_atomic
from jicd.models.joint_codec import JointDenoisingCodec
from jicd.models.presets import QUALITIES, ModelConfig, build_model_from_config

EXPORT_FORMAT = "jicd-export"
EXPORT_VERSION = 1
ANCHOR_ARCH = "cheng2020-anchor"
ANCHOR_KEY = "g_a.0.conv1.weight"  # first conv of Cheng2020Anchor's g_a: its size(0) is N
GA0_LAYERS = 3  # g_a[0:3] → ga0, g_a[3:7] → ga1
NEW_MODULES = (
    "d0.",
    "d1.",
    "proj.",
)  # not in a cheng2020-anchor checkpoint: stay randomly initialised

StateDict = dict[str, Tensor]


def load_compressai_anchor(
    model: JointDenoisingCodec, state_dict_or_path: StateDict | str | Path
) -> None:
    """Load CompressAI cheng2020-anchor weights into ``model``'s backbone (in place).

    ``g_a.0-2`` go to ``ga0.0-2`` and ``g_a.3-6`` to ``ga1.0-3``; every other backbone key must be
    present and every checkpoint key used. Denoisers and projection head keep their random init.
    CDF buffers of another size are resized as CompressAI's ``load_state_dict`` does.

    Args:
        model: the codec to fill.
        state_dict_or_path: a state dict, or a file holding one (optionally under ``"state_dict"``,
            with DataParallel ``module.`` prefixes or pre-1.2 entropy-bottleneck key names).

    Raises:
        ValueError: one line, when the file cannot be read, N differs, or keys do not match.
    """
    state_dict = _read_state_dict(state_dict_or_path)
    found = _anchor_channels(state_dict)
    if found != model.N:
        raise UserError(
            f"cheng2020-anchor checkpoint has N={found} ({_qualities_of(found)}), "
            f"expected N={model.N} ({_qualities_of(model.N)})"
        )
    result = _load(model, _split_analysis_keys(state_dict), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(NEW_MODULES)]
    if missing or result.unexpected_keys:
        raise UserError(
            f"not a cheng2020-anchor state dict: missing keys {missing[:3]}, "
            f"unexpected keys {result.unexpected_keys[:3]}"
        )


def save_export(path: str | Path, model: nn.Module, model_cfg: ModelConfig) -> None:
    """Write the inference export of ``model`` to ``path`` atomically.

    The CDF tables are computed on a fresh CPU copy, so the training model (possibly wrapped in
    DDP / DeepSpeed, possibly on GPU) is not modified: resizing buffers on one rank only would
    desynchronise DDP's buffer broadcast.
    """
    module = getattr(model, "module", model)  # DDP and DeepSpeed engines keep the model in .module
    export = build_model_from_config(model_cfg)
    export.load_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
    export.update(force=True)
    payload = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": asdict(model_cfg),
        "state_dict": export.state_dict(),
    }
    torch_save_atomic(payload, path)


def load_for_inference(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a jicd export, or a plain CompressAI Cheng2020Anchor state dict, ready to code.

    Returns:
        ``(model, identity)``: the model after ``update(force=True)`` and ``eval()``, on
        ``map_location``; ``identity = {"arch", "quality", "channels", "weights_sha256"}``
        (``quality`` is None for a plain Cheng2020Anchor, whose N fits three qualities).

    Raises:
        ValueError: one line, when the file is missing, unreadable or of an unknown kind.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read model file {path}: {err.strerror}") from None
    payload = _torch_load(io.BytesIO(raw), f"model file {path}")
    if isinstance(payload, dict) and "format" in payload:
        model, cfg = _model_from_export(payload, path)
        identity = {"arch": cfg.arch_name(), "quality": cfg.quality, "channels": model.N}
    else:
        model = _anchor_from_state_dict(payload, path)
        identity = {"arch": ANCHOR_ARCH, "quality": None, "channels": model.N}
    identity["weights_sha256"] = hashlib.sha256(raw).hexdigest()
    model.update(force=True)
    return model.to(map_location).eval(), identity


def _model_from_export(payload: dict, path: str | Path) -> tuple[JointDenoisingCodec, ModelConfig]:
    if payload.get("format") != EXPORT_FORMAT or payload.get("version") != EXPORT_VERSION:
        raise UserError(
            f"{path}: unsupported export format {payload.get('format')!r} "
            f"version {payload.get('version')!r} (expected {EXPORT_FORMAT!r} v{EXPORT_VERSION})"
        )
    try:
        cfg = from_dict(ModelConfig, payload.get("model"), prefix="model")
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    model = build_model_from_config(cfg)
    _load(model, payload.get("state_dict") or {}, strict=True, where=str(path))
    return model, cfg


def _anchor_from_state_dict(payload: Any, path: str | Path) -> Cheng2020Anchor:
    """The sequential comparator: a plain Cheng2020Anchor(N), N read from the weights."""
    state_dict = _read_state_dict(payload)
    model = Cheng2020Anchor(_anchor_channels(state_dict, where=str(path)))
    _load(model, state_dict, strict=True, where=str(path))
    return model


def _read_state_dict(source: Any) -> StateDict:
    """A flat state dict from a dict or a file, with CompressAI's legacy key names fixed."""
    if isinstance(source, (str, Path)):
        source = _torch_load(source, f"checkpoint {source}")
    if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
        source = source["state_dict"]
    if not isinstance(source, dict) or not all(isinstance(v, Tensor) for v in source.values()):
        raise UserError("not a state dict (expected a mapping of parameter names to tensors)")
    return load_pretrained(source)  # strips "module.", renames pre-1.2 entropy-bottleneck keys


def _torch_load(source: Any, what: str) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} does not exist") from None
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"{what} is not a readable torch file ({type(err).__name__})") from None


def _anchor_channels(state_dict: StateDict, where: str = "checkpoint") -> int:
    if ANCHOR_KEY not in state_dict:
        raise UserError(f"{where}: not a cheng2020-anchor state dict (no {ANCHOR_KEY!r})")
    return int(state_dict[ANCHOR_KEY].size(0))


def _split_analysis_keys(state_dict: StateDict) -> StateDict:
    """Rename ``g_a.<i>.*`` to ``ga0.<i>.*`` (i < 3) or ``ga1.<i-3>.*``."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("g_a."):
            _, index, rest = key.split(".", 2)
            i = int(index)
            key = f"ga0.{i}.{rest}" if i < GA0_LAYERS else f"ga1.{i - GA0_LAYERS}.{rest}"
        renamed[key] = value
    return renamed


def _load(model: nn.Module, state_dict: StateDict, strict: bool, where: str = "checkpoint"):
    """CompressAI's ``load_state_dict`` (resizes CDF buffers) with a one-line error."""
    try:
        return model.load_state_dict(state_dict, strict=strict)
    except (RuntimeError, KeyError) as err:  # KeyError: CompressAI's CDF-buffer resizing
        detail = " ".join(str(err).split())
        raise UserError(f"{where}: weights do not fit the model: {detail[:300]}") from None


def _qualities_of(channels: int) -> str:
    qualities = [q for q, (n, _) in QUALITIES.items() if n == channels]
    return f"quality {qualities[0]}-{qualities[-1]}" if qualities else "no standard quality"
