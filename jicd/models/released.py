"""The two papers' released checkpoints, renamed into ``JointDenoisingCodec`` key by key.

Layouts (``tests/library/fixtures/checkpoint_layouts.json`` lists every key and shape):

* ``baseline`` — ECCV'22 ``MultiscaleDecomp`` of ``felixcheng97/DenoiseCompression``
  (``build_model("baseline", q)``): ``g_a_block1/2`` → ``ga0/ga1``, ``denoise_module_1/2`` →
  ``d0/d1``; 236 keys.
* ``jicdcls`` — the ICIP'24 authors' ``MultiscaleDecomp`` of ``xinxinyuxin/JICDCS``
  (``build_model("jicd", q, head="authors")``): the same, plus the multi-scale front end
  (``conv0.k`` → ``front.branches.k``), CBAM split into channel/spatial halves and
  ``projection_head`` → ``proj.mlp``; 268 keys.

Both save CompressAI 1.1 entropy-bottleneck names (``_matrix0`` …), which CompressAI's
``remap_old_keys`` turns into ``matrices.0`` …; every other key keeps its name. Files are either
the training wrapper ``{"epoch", "iter", "state_dict", "optimizer", …}`` or the plain state dict
that the authors' ``test.py`` writes after ``update(force=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compressai.models.utils import remap_old_keys
from compressai.zoo.pretrained import load_pretrained
from torch import Tensor

from jicd.errors import UserError
from jicd.models.presets import QUALITIES

StateDict = dict[str, Tensor]
Rules = tuple[tuple[str, str], ...]

EXPORT_FORMAT = "jicd-export"
ANCHOR_KEY = "g_a.0.conv1.weight"  # CompressAI Cheng2020Anchor: g_a not split
RELEASED_KEY = "g_a_block1.0.conv1.weight"  # both authors' MultiscaleDecomp
MODEL_N_KEY = "h_a.0.weight"  # conv3x3(N, N) in every Cheng2020Anchor: size(0) is N
JICDCLS_MARKERS = ("projection_head.", "denoise_module_1.conv0.")
FORMATS = ("auto", "compressai", "baseline", "jicdcls", "export")

# Sized by the data, not the architecture: CompressAI's load_state_dict resizes them, and
# update(force=True) recomputes them after loading.
CDF_BUFFERS = frozenset(
    f"{module}.{name}"
    for module, names in (
        ("entropy_bottleneck", ("_offset", "_quantized_cdf", "_cdf_length")),
        ("gaussian_conditional", ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")),
    )
    for name in names
)

# Module prefixes, literally: the authors' name → ours (and back for messages).
_MODULES = (
    ("g_a_block1.", "ga0."),
    ("g_a_block2.", "ga1."),
    ("denoise_module_1.", "d0."),
    ("denoise_module_2.", "d1."),
)
_PREFIXES: Rules = tuple(("^" + re.escape(theirs), ours) for theirs, ours in _MODULES)
_JICDCLS: Rules = (
    (r"^(d[01])\.conv0\.(\d+)\.", r"\1.front.branches.\2."),
    (r"^(d[01])\.conv_a\.([13])\.mlp\.", r"\1.conv_a.\2.0.mlp."),  # CBAM channel half
    (r"^(d[01])\.conv_a\.([13])\.conv\.", r"\1.conv_a.\2.1.conv."),  # CBAM spatial half
    (r"^projection_head\.", "proj.mlp."),
)
# The same renames backwards, to name a missing key the way the authors' file would.
_PREFIXES_BACK: Rules = (
    *(("^" + re.escape(ours), theirs) for theirs, ours in _MODULES),
    (r"^entropy_bottleneck\.matrices\.", "entropy_bottleneck._matrix"),
    (r"^entropy_bottleneck\.biases\.", "entropy_bottleneck._bias"),
    (r"^entropy_bottleneck\.factors\.", "entropy_bottleneck._factor"),
)
_JICDCLS_BACK: Rules = (
    (r"^(d[01])\.front\.branches\.(\d+)\.", r"\1.conv0.\2."),
    (r"^(d[01])\.conv_a\.([13])\.0\.mlp\.", r"\1.conv_a.\2.mlp."),
    (r"^(d[01])\.conv_a\.([13])\.1\.conv\.", r"\1.conv_a.\2.conv."),
    (r"^proj\.mlp\.", "projection_head."),
)


@dataclass(frozen=True)
class Layout:
    """One released state-dict layout and how its names map to ours."""

    name: str
    title: str
    preset: str
    rules: Rules = ()
    rules_back: Rules = ()

    def ours(self, key: str) -> str:
        """Our name of the authors' ``key`` (given CompressAI 1.2 entropy-bottleneck names)."""
        return _apply(_apply(key, _PREFIXES), self.rules)

    def theirs(self, key: str) -> str:
        """The authors' name of our ``key`` (for messages about missing keys)."""
        return _apply(_apply(key, self.rules_back), _PREFIXES_BACK)


LAYOUTS = {
    "baseline": Layout(
        "baseline", "ECCV'22 baseline (felixcheng97/DenoiseCompression)", "baseline"
    ),
    "jicdcls": Layout("jicdcls", "JICDCLS (xinxinyuxin/JICDCS)", "jicd", _JICDCLS, _JICDCLS_BACK),
}


def _apply(key: str, rules: Rules) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key, count=1)
    return key


def unwrap(payload: Any, where: str) -> StateDict:
    """The flat state dict of a wrapper or plain file: ``module.`` stripped, 1.2 EB names.

    Raises:
        UserError: the payload holds no mapping of names to tensors.
    """
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # the training wrapper {"epoch", "iter", "state_dict", …}
    if not isinstance(payload, dict) or not payload:
        raise UserError(f"{where}: not a state dict (expected a mapping of names to tensors)")
    bad = next((k for k, v in payload.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise UserError(f"{where}: not a state dict ({bad!r} is not a tensor)")
    # load_pretrained strips "module." (DataParallel); remap_old_keys: _matrix0 → matrices.0.
    return dict(remap_old_keys("entropy_bottleneck", load_pretrained(payload)))


def detect_format(payload: Any) -> str:
    """``export``, ``compressai``, ``baseline`` or ``jicdcls`` from the keys; ``unknown`` else."""
    if isinstance(payload, dict) and payload.get("format") == EXPORT_FORMAT:
        return "export"
    try:
        keys = unwrap(payload, "").keys()
    except UserError:
        return "unknown"
    if ANCHOR_KEY in keys:
        return "compressai"
    if RELEASED_KEY in keys:
        return "jicdcls" if any(k.startswith(JICDCLS_MARKERS) for k in keys) else "baseline"
    return "unknown"


def file_channels(state_dict: StateDict) -> int | None:
    """N of a released or anchor state dict (output channels of the first analysis conv)."""
    for key in (RELEASED_KEY, ANCHOR_KEY):
        if key in state_dict:
            return int(state_dict[key].size(0))
    return None


def qualities_of(channels: int) -> str:
    """``quality 1-3`` for N=128, … (``no standard quality`` for other N)."""
    qualities = [q for q, (n, _) in QUALITIES.items() if n == channels]
    return f"quality {qualities[0]}-{qualities[-1]}" if qualities else "no standard quality"


def to_ours(
    state_dict: StateDict,
    layout: Layout,
    target: StateDict,
    where: str,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
) -> StateDict:
    """Rename a released state dict into ``target``'s names, strictly.

    Every key must map onto a key of ``target`` (or start with one of the ``drop`` prefixes,
    authors' names), every key of ``target`` must be filled, and shapes must agree except for the
    CDF buffers (resized on load).

    Args:
        state_dict: the authors' tensors (after :func:`unwrap`).
        layout: which authors' layout ``state_dict`` is in.
        target: ``model.state_dict()`` of the model to fill (names and shapes).
        where: file name for the messages.
        drop: authors' key prefixes to leave out on purpose.
        keep: our key prefixes that may stay as initialised (the counterparts of ``drop``).

    Returns:
        ``{our key: tensor}`` with ``target``'s keys (those under ``keep`` may be absent).

    Raises:
        UserError: one line naming the first key that is missing, extra or of another shape,
            with both shapes and the likely cause.
    """
    drop, keep = tuple(drop), tuple(keep)
    mapped: dict[str, tuple[str, Tensor]] = {}
    problems: list[str] = []
    for key, value in state_dict.items():
        if drop and key.startswith(drop):
            continue
        ours = layout.ours(key)
        if ours not in target:
            shown = layout.theirs(ours)  # the file's own spelling (1.1 entropy-bottleneck names)
            problems.append(f"unexpected key {shown!r} (no counterpart in {layout.title})")
        else:
            mapped[ours] = (key, value)
    missing = [k for k in target if k not in mapped and not (keep and k.startswith(keep))]
    problems += [f"key {layout.theirs(k)!r} missing (needed for our {k!r})" for k in missing]
    channels = file_channels(state_dict), int(target[MODEL_N_KEY].size(0))
    for ours, (key, value) in mapped.items():
        expected = target[ours].shape
        if ours not in CDF_BUFFERS and value.shape != expected:
            cause = _shape_cause(key, list(value.shape), list(expected), layout, *channels)
            problems.append(
                f"{layout.theirs(ours)!r} has shape {list(value.shape)} but our {ours!r} needs "
                f"{list(expected)} ({cause})"
            )
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{where}: {layout.name} checkpoint: {problems[0]}{more}")
    return {ours: value for ours, (_, value) in mapped.items()}


def _shape_cause(
    key: str, found: list[int], expected: list[int], layout: Layout, file_n: int | None, n: int
) -> str:
    """The likeliest reason why one tensor has another shape."""
    if key.startswith("projection_head.0."):
        return "the authors' width-axis projection head: build the model with model.head=authors"
    if layout.name == "jicdcls" and ".mlp." in key and file_n == 192 and 128 in found:
        return (
            "the authors' code builds CBAMLayer with its default channel=128 at N=192; "
            "such a model cannot run, a usable q4-q6 file has CBAM(192)"
        )
    if file_n is not None and file_n != n:
        other = file_n
    else:  # one odd tensor: which N would give its shape?
        ratios = {f / e for f, e in zip(found, expected, strict=False) if f != e and e}
        if len(found) != len(expected) or len(ratios) != 1:
            return "a different architecture or a damaged file"
        other = round(n * ratios.pop())
    return (
        f"a tensor of an N={other} model ({qualities_of(other)}); this model has "
        f"N={n} ({qualities_of(n)}): check --quality / model.quality"
    )
