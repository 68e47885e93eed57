"""Reading results and reference JSONs, which travel between people: checked field by field.

``jicd evaluate`` writes one results JSON per (curve, set, level)::

    {"name": str, "set": str, "level": int | str, "results": {"bpp": [...], "psnr": [...],
     "psnr-rgb": [...], "ms-ssim-rgb": [...], "quality": [...], ...}, ...}

and the bundled references hold ``{set: {level: {"bpp", "psnr"[, "ms_ssim"]}}}``. A file that is
not of this shape is a one-line error naming the file and the field: every rate must be a finite
number, every metric list as long as the rates. Names from these files (``name``, ``set``,
``level``) become file names only through :func:`jicd.names.safe_name`.
"""

from __future__ import annotations

import math
from pathlib import Path

from jicd.errors import UserError
from jicd.evaluation.curves import Curve, sorted_curve
from jicd.evaluation.protocol import PSNR_CONVENTIONS
from jicd.files import read_json
from jicd.names import safe_name

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
DEFAULT_REFERENCE = "baseline_eccv22"
# A reference file names its PSNR convention ("psnr_metric"); the published denoising-codec
# numbers come from the authors' code, so that is the default.
DEFAULT_REFERENCE_METRIC = "psnr"
MAX_RESULTS_BYTES = 64 * 2**20


def results_file_name(name: str, set_name: str, level: int | str) -> str:
    """``{name}-{set}-level{L}.json``, the file ``jicd evaluate`` writes per curve, made safe."""
    return safe_name(f"{name}-{set_name}-level{level}") + ".json"


def resolve_reference(spec: str) -> Path:
    """A reference file path, or the name of a bundled one (``baseline_eccv22``)."""
    path = Path(spec)
    if path.is_file():
        return path
    bundled = REFERENCE_DIR / f"{path.stem}.json"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in REFERENCE_DIR.glob("*.json")))
    raise UserError(f"reference not found: {spec} (bundled: {names})")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(values, where: str, length: int | None = None, finite: bool = True) -> list:
    """``values`` as a list of numbers (``None`` allowed where not ``finite``), checked."""
    if not isinstance(values, list) or not values:
        raise UserError(f"{where} must be a non-empty list of numbers")
    if length is not None and len(values) != length:
        raise UserError(f"{where} has {len(values)} values, the rates have {length}")
    for value in values:
        ok = _is_number(value) and (math.isfinite(value) or not finite)
        if not (ok or (value is None and not finite)):
            raise UserError(f"{where} holds {str(value)[:40]!r}, not a finite number")
    return values


def _optional(values, where: str, length: int) -> list | None:
    return None if values is None else _numbers(values, where, length, finite=False)


def level_key(level: int | str) -> int | str:
    """A results JSON's level: 1-4 as int (matching the reference files), a name as is."""
    return int(level) if str(level).isdigit() else str(level)


def load_reference(path: Path) -> dict[tuple[str, int], Curve]:
    """Published points ``{set: {level: {bpp, psnr[, ms_ssim]}}}`` → curves per (set, level)."""
    payload = read_json(path, MAX_RESULTS_BYTES, "reference file")
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not a {{set: {{level: {{bpp, psnr}}}}}} reference file")
    qualities = payload.get("qualities")
    metric = payload.get("psnr_metric", DEFAULT_REFERENCE_METRIC)
    if metric not in PSNR_CONVENTIONS:
        known = ", ".join(PSNR_CONVENTIONS)
        raise UserError(f"{path}: psnr_metric {str(metric)[:40]!r} is not one of {known}")
    curves = {}
    for set_name, levels in payload.items():
        if not isinstance(levels, dict):
            continue
        for level, points in levels.items():
            if not (str(level).isdigit() and isinstance(points, dict) and "bpp" in points):
                continue
            where = f"{path}: {set_name} level {level}"
            bpp = _numbers(points["bpp"], f"{where} bpp")
            psnr = _numbers(points.get("psnr"), f"{where} psnr", len(bpp))
            ms_ssim = _optional(points.get("ms_ssim"), f"{where} ms_ssim", len(bpp))
            if not (isinstance(qualities, list) and len(qualities) == len(bpp)):
                qualities = None
            curve = Curve(path.stem, bpp, psnr, ms_ssim, qualities, measured=False, metric=metric)
            curves[(set_name, int(level))] = sorted_curve(curve)
    if not curves:
        raise UserError(f"{path} has no {{set: {{level: {{bpp, psnr}}}}}} reference points")
    return curves


def results_curve(payload: dict, path: Path) -> Curve:
    """The curve of one ``jicd evaluate`` results JSON (checked: see the module docstring)."""
    name, res = payload.get("name"), payload["results"]
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: 'name' must be a non-empty string")
    if not isinstance(payload["set"], str) or not isinstance(payload["level"], int | str):
        raise UserError(f"{path}: 'set' must be a string and 'level' a number or a string")
    if not isinstance(res, dict):
        raise UserError(f"{path}: 'results' must be a mapping of metric lists")
    bpp = _numbers(res.get("bpp"), f"{path}: results.bpp")
    # Older results (or rows without it) have no usable ``psnr``: fall back to psnr-rgb.
    by_metric = {
        m: res[m]
        for m in PSNR_CONVENTIONS
        if isinstance(res.get(m), list)
        and len(res[m]) == len(bpp)
        and all(_is_number(v) and not math.isnan(v) for v in res[m])
    }
    if not by_metric:
        raise UserError(f"{path}: no PSNR list (psnr or psnr-rgb) as long as results.bpp")
    metric = "psnr" if "psnr" in by_metric else "psnr-rgb"
    return Curve(
        name,
        bpp,
        by_metric[metric],
        _optional(res.get("ms-ssim-rgb"), f"{path}: results.ms-ssim-rgb", len(bpp)),
        quality
        if isinstance(quality := res.get("quality"), list) and len(quality) == len(bpp)
        else None,
        metric=metric,
        psnr_by_metric=by_metric,
    )


def load_results(
    folder: Path, used: list[Path] | None = None
) -> dict[tuple[str, int | str], list[Curve]]:
    """``jicd evaluate`` JSONs in ``folder`` → our curves per (set, level).

    Files without the ``results``/``set``/``level`` keys (per-image files, foreign JSONs) are
    skipped; the files read as results are appended to ``used``.
    """
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    curves: dict[tuple[str, int | str], list[Curve]] = {}
    for path in sorted(folder.glob("*.json")):
        payload = read_json(path, MAX_RESULTS_BYTES, "results file")
        if not isinstance(payload, dict) or not {"results", "set", "level"} <= payload.keys():
            continue  # per-image files and foreign JSONs
        curve = results_curve(payload, path)
        if used is not None:
            used.append(path)
        key = (payload["set"], level_key(payload["level"]))
        curves.setdefault(key, []).append(sorted_curve(curve))
    if not curves:
        raise UserError(f"no jicd evaluate results (*-SET-levelL.json) in {folder}")
    return curves
