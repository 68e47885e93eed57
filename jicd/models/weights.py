"""Weights in and out: checkpoint import (four formats), inference export, inference loading.

Formats, detected from the keys (``jicd.models.released.detect_format``) or chosen explicitly:
``compressai`` (a cheng2020-anchor state dict), ``baseline`` (ECCV'22 DenoiseCompression),
``jicdcls`` (the ICIP'24 authors' JICDCS) and ``export`` (ours). Entry points:
:func:`import_checkpoint` (``jicd import-checkpoint``), :func:`load_weights_for_finetuning`
(``train.init_from``), :func:`load_for_inference` (evaluate, compress, decompress).

Export format (``save_export``), one ``torch.save`` payload::

    {"format": "jicd-export", "version": 1, "model": asdict(ModelConfig), "state_dict": {...},
     ...extra (e.g. "imported_from", or "step" and "val_rd_loss" for best.pt)}

with the entropy models' CDF tables already computed (``update(force=True)``), so a fresh process
codes real bitstreams right after ``load_for_inference``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from compressai.models import Cheng2020Anchor
from torch import Tensor, nn

from jicd.codec.integer.export import INTEGER_KEY, attach
from jicd.errors import UserError
from jicd.files import read_capped, torch_load_plain, torch_save_atomic
from jicd.models.buffers import check_derived_buffers, derived_buffers
from jicd.models.identity import file_aliases, weights_digest
from jicd.models.joint_codec import JointDenoisingCodec
from jicd.models.presets import (
    MAX_CHANNELS,
    ModelConfig,
    build_model_from_config,
    channels_for_quality,
)
from jicd.models.released import (
    ANCHOR_KEY,
    EXPORT_FORMAT,
    LAYOUTS,
    MODEL_N_KEY,
    detect_format,
    qualities_of,
    to_ours,
    unwrap,
)
from jicd.typed_config import from_dict

log = logging.getLogger(__name__)
EXPORT_VERSION = 1
MAX_MODEL_FILE_BYTES = 2**31
"""Largest model file read for inference (a Cheng2020 export at N = 192 is ~50 MB)."""
ANCHOR_ARCH = "cheng2020-anchor"
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
            f"cheng2020-anchor checkpoint has N={found} ({qualities_of(found)}), "
            f"expected N={model.N} ({qualities_of(model.N)})"
        )
    result = _load(model, _split_analysis_keys(state_dict), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(NEW_MODULES)]
    if missing or result.unexpected_keys:
        raise UserError(
            f"not a cheng2020-anchor state dict: missing keys {missing[:3]}, "
            f"unexpected keys {result.unexpected_keys[:3]}"
        )


def save_export(
    path: str | Path, model: nn.Module, model_cfg: ModelConfig, extra: dict | None = None
) -> None:
    """Write the inference export of ``model`` to ``path`` atomically.

    ``extra`` adds JSON-like fields to the payload (provenance, the step of a best export).

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
        **(extra or {}),
    }
    torch_save_atomic(payload, path)


def load_for_inference(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a jicd export, or a plain CompressAI Cheng2020Anchor state dict, ready to code.

    Returns:
        ``(model, identity)``: the model after ``update(force=True)`` and ``eval()``, on
        ``map_location``; ``identity = {"arch", "quality", "channels", "weights_sha256",
        "entropy", "legacy_sha256"}`` (``quality`` is None for a plain Cheng2020Anchor, whose N
        fits three qualities; ``entropy`` is "integer" for an integerized export, whose integer
        entropy model is attached as ``model.integer_entropy``, else "float";
        ``weights_sha256`` is the digest of the tensors, integer entropy model included, and
        ``legacy_sha256`` the file digests that ``.jicd`` files before version 3 recorded:
        :mod:`jicd.models.identity`).

    Raises:
        ValueError: one line, when the file is missing, unreadable or of an unknown kind.
    """
    raw = read_capped(path, MAX_MODEL_FILE_BYTES, "model file")
    payload = _torch_load(io.BytesIO(raw), f"model file {path}")
    entropy, aliases = "float", []
    if isinstance(payload, dict) and "format" in payload:
        model, cfg = _model_from_export(payload, path)
        identity = {"arch": cfg.arch_name(), "quality": cfg.quality, "channels": model.N}
        aliases = file_aliases(payload)
        if payload.get(INTEGER_KEY) is not None:
            attach(model, payload[INTEGER_KEY], str(path))
            entropy = "integer"
    elif (found := detect_format(payload)) in LAYOUTS:
        raise UserError(
            f"{path} is a {LAYOUTS[found].title} checkpoint: convert it once with "
            f"'jicd import-checkpoint {path} -o model.pt --quality Q'"
        )
    else:
        model = _anchor_from_state_dict(payload, path)
        identity = {"arch": ANCHOR_ARCH, "quality": None, "channels": model.N}
    identity["weights_sha256"] = weights_digest(model.state_dict())
    identity["legacy_sha256"] = [hashlib.sha256(raw).hexdigest(), *aliases]
    identity["entropy"] = entropy
    model.update(force=True)
    return model.to(map_location).eval(), identity


def export_file_digests(path: str | Path) -> list[str]:
    """The file digests an export of ``path`` must keep accepting: ``path``'s own sha256 and
    the ones ``path`` recorded from the files it was imported from (``jicd import-checkpoint``
    of an export)."""
    raw = read_capped(path, MAX_MODEL_FILE_BYTES, "model file")
    aliases = file_aliases(_torch_load(io.BytesIO(raw), f"model file {path}"))
    return list(dict.fromkeys([hashlib.sha256(raw).hexdigest(), *aliases]))


def import_checkpoint(
    path: str | Path, quality: int, fmt: str = "auto"
) -> tuple[nn.Module, ModelConfig | None, str]:
    """Build the model a checkpoint of any of the four formats holds, for inference.

    Args:
        path: the file (training wrapper or plain state dict, ``module.`` prefixes allowed).
        quality: 1-6; sets N, which the file must have.
        fmt: ``auto`` (from the keys), ``compressai``, ``baseline``, ``jicdcls`` or ``export``.

    Returns:
        ``(model, model_cfg, format)``: a ``JointDenoisingCodec`` with its config, or for
        ``compressai`` a plain ``Cheng2020Anchor`` (the sequential comparator) and ``None``.
        CDF buffers are loaded as saved; ``save_export``/``load_for_inference`` recompute them.

    Raises:
        UserError: one line naming the first missing, extra or mis-shaped key.
    """
    where = str(path)
    payload = _torch_load(path, f"checkpoint {path}")
    fmt = _resolve_format(payload, fmt, where)
    channels = channels_for_quality(quality)
    if fmt == "export":
        model, cfg = _model_from_export(payload, path)
        if cfg.quality != quality:
            raise UserError(f"{where}: the export is quality {cfg.quality}, not {quality}")
        return model, cfg, fmt
    state_dict = unwrap(payload, where)
    if fmt == "compressai":
        anchor = Cheng2020Anchor(channels)
        found = state_dict.get(ANCHOR_KEY)
        expected = anchor.state_dict()[ANCHOR_KEY]
        if found is not None and found.shape != expected.shape:
            raise UserError(
                f"{where}: {ANCHOR_KEY!r} has shape {list(found.shape)} but quality {quality} "
                f"needs {list(expected.shape)} (the file has N={found.size(0)}, "
                f"{qualities_of(found.size(0))})"
            )
        _load(anchor, state_dict, strict=True, where=where)
        return anchor, None, fmt
    layout = LAYOUTS[fmt]
    # JICDCLS keeps its projection head: the authors' head has exactly its shapes.
    cfg = ModelConfig(
        preset=layout.preset, quality=quality, head="authors" if fmt == "jicdcls" else "paper"
    )
    model = build_model_from_config(cfg)
    _load(model, to_ours(state_dict, layout, model.state_dict(), where), strict=True, where=where)
    return model, cfg, fmt


def load_weights_for_finetuning(
    model: JointDenoisingCodec, model_cfg: ModelConfig, path: str | Path
) -> str:
    """Fill ``model`` (in place) from a checkpoint of any format, for ``train.init_from``.

    ``compressai``: the backbone only (denoisers and head keep their init). ``baseline`` /
    ``jicdcls``: every tensor, strictly, into the preset it was trained as; a JICDCLS projection
    head fills ``model.head=authors`` and is dropped (with a log line) for the paper's head.
    ``export``: every tensor, strictly. Optimizer states are never carried over.

    Returns:
        The format that was loaded.

    Raises:
        UserError: one line on an unknown layout, a preset mismatch or a key/shape mismatch.
    """
    where = f"train.init_from={path}"
    payload = _torch_load(path, f"train.init_from file {path}")
    fmt = _resolve_format(payload, "auto", where)
    if fmt == "compressai":
        load_compressai_anchor(model, unwrap(payload, where))
    elif fmt == "export":
        _load(model, payload.get("state_dict") or {}, strict=True, where=where)
    else:
        layout = LAYOUTS[fmt]
        if model_cfg.preset != layout.preset:
            raise UserError(
                f"{where}: a {layout.title} checkpoint needs model.preset={layout.preset}, "
                f"got {model_cfg.preset!r}"
            )
        drop: tuple[str, ...] = ()
        keep: tuple[str, ...] = ()
        if fmt == "jicdcls" and model_cfg.head != "authors":
            drop, keep = ("projection_head.",), ("proj.",)
            log.info("%s: projection_head dropped (model.head=%s)", where, model_cfg.head)
        state_dict = to_ours(unwrap(payload, where), layout, model.state_dict(), where, drop, keep)
        _load(model, state_dict, strict=not keep, where=where)
    return fmt


def _resolve_format(payload: Any, fmt: str, where: str) -> str:
    """The chosen format, or the detected one for ``auto``."""
    if fmt != "auto":
        return fmt
    found = detect_format(payload)
    if found == "unknown":
        raise UserError(
            f"{where}: unknown checkpoint layout (neither a CompressAI cheng2020-anchor, "
            "ECCV'22 baseline or JICDCLS state dict nor a jicd export); choose --format"
        )
    return found


def read_export(path: str | Path) -> tuple[dict, JointDenoisingCodec, ModelConfig]:
    """``(payload, model, config)`` of a jicd export file, weights and CDF tables as stored.

    Raises:
        UserError: one line, when the file is unreadable or not a jicd export.
    """
    payload = _torch_load(path, f"export {path}")
    if not isinstance(payload, dict) or "format" not in payload:
        raise UserError(
            f"{path} is not a jicd export (convert a published checkpoint first with "
            "'jicd import-checkpoint')"
        )
    model, cfg = _model_from_export(payload, path)
    return payload, model, cfg


def _model_from_export(payload: Any, path: str | Path) -> tuple[JointDenoisingCodec, ModelConfig]:
    if not isinstance(payload, dict):
        raise UserError(f"{path}: not a jicd export (no 'format' key)")
    if payload.get("format") != EXPORT_FORMAT or payload.get("version") != EXPORT_VERSION:
        raise UserError(
            f"{path}: unsupported export format {payload.get('format')!r} "
            f"version {payload.get('version')!r} (expected {EXPORT_FORMAT!r} v{EXPORT_VERSION})"
        )
    try:
        cfg = from_dict(ModelConfig, payload.get("model"), prefix="model")
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    state_dict = payload.get("state_dict") or {}
    # The config sizes the model: check it against the weights before building anything.
    found = state_dict.get(MODEL_N_KEY) if isinstance(state_dict, dict) else None
    if not isinstance(found, Tensor) or found.dim() != 4 or found.size(0) != cfg.num_channels():
        shape = list(found.shape) if isinstance(found, Tensor) else None
        raise UserError(
            f"{path}: the export's config asks for N={cfg.num_channels()} but its weights "
            f"{MODEL_N_KEY!r} have shape {shape}"
        )
    model = build_model_from_config(cfg)
    _load(model, state_dict, strict=True, where=str(path))
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
        return unwrap(_torch_load(source, f"checkpoint {source}"), f"checkpoint {source}")
    return unwrap(source, "checkpoint")


def _torch_load(source: Any, what: str) -> Any:
    return torch_load_plain(source, what)


def _anchor_channels(state_dict: StateDict, where: str = "checkpoint") -> int:
    if ANCHOR_KEY not in state_dict:
        raise UserError(f"{where}: not a cheng2020-anchor state dict (no {ANCHOR_KEY!r})")
    channels = int(state_dict[ANCHOR_KEY].size(0))
    if not 1 <= channels <= MAX_CHANNELS:
        raise UserError(f"{where}: {ANCHOR_KEY!r} asks for N={channels}, at most {MAX_CHANNELS}")
    return channels


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
    """CompressAI's ``load_state_dict`` (resizes CDF buffers) with a one-line error, then
    :func:`check_derived_buffers`."""
    expected = derived_buffers(model)
    try:
        result = model.load_state_dict(state_dict, strict=strict)
    except (RuntimeError, KeyError) as err:  # KeyError: CompressAI's CDF-buffer resizing
        detail = " ".join(str(err).split())
        raise UserError(f"{where}: weights do not fit the model: {detail[:300]}") from None
    check_derived_buffers(model, expected, where)
    return result
