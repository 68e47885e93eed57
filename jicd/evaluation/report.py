"""RD plots and a BD-rate table from ``jicd evaluate`` results and published reference points.

    jicd report results/ --output report/
    jicd report results/ --reference baseline_eccv22 jicdcls_released --output report/

``--reference`` takes JSON files or the names of the bundled copies in
``jicd/evaluation/reference/`` (default: the ECCV'22 baseline). For every (set, level) found in
the results it writes ``rd-{set}-level{L}.png`` (PSNR and MS-SSIM vs bpp) and ``bd_rate.md`` /
``bd_rate.json``: every result curve against every other curve, BD-rates on PSNR and on
MS-SSIM (dB) computed by :mod:`jicd.evaluation.curves`, next to the raw RD points.
"""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402

from jicd.cli import OneLineParser, UserError, guarded_main  # noqa: E402
from jicd.evaluation.curves import (  # noqa: E402
    BdRate,
    Curve,
    as_ms_ssim_db,
    bd_rate,
    has_ms_ssim,
    in_metric,
    sorted_curve,
)
from jicd.evaluation.protocol import PSNR_CONVENTIONS  # noqa: E402
from jicd.files import write_bytes_atomic, write_json_atomic  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
DEFAULT_REFERENCE = "baseline_eccv22"
# A reference file names its PSNR convention ("psnr_metric"); the published denoising-codec
# numbers come from the authors' code, so that is the default.
DEFAULT_REFERENCE_METRIC = "psnr"
PSNR_METRICS = tuple(PSNR_CONVENTIONS)  # table columns: psnr, psnr-rgb


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


def load_reference(path: Path) -> dict[tuple[str, int], Curve]:
    """Published points ``{set: {level: {bpp, psnr[, ms_ssim]}}}`` → curves per (set, level)."""
    payload = _read_json(path)
    curves = {}
    for set_name, levels in payload.items():
        if not isinstance(levels, dict):
            continue
        for level, points in levels.items():
            if not (str(level).isdigit() and isinstance(points, dict) and "bpp" in points):
                continue
            curve = Curve(
                path.stem,
                points["bpp"],
                points["psnr"],
                points.get("ms_ssim"),
                payload.get("qualities"),
                measured=False,
                metric=payload.get("psnr_metric", DEFAULT_REFERENCE_METRIC),
            )
            curves[(set_name, int(level))] = sorted_curve(curve)
    if not curves:
        raise UserError(f"{path} has no {{set: {{level: {{bpp, psnr}}}}}} reference points")
    return curves


def load_results(folder: Path) -> dict[tuple[str, int], list[Curve]]:
    """``jicd evaluate`` JSONs in ``folder`` → our curves per (set, level)."""
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    curves: dict[tuple[str, int], list[Curve]] = {}
    for path in sorted(folder.glob("*.json")):
        payload = _read_json(path)
        if not isinstance(payload, dict) or not {"results", "set", "level"} <= payload.keys():
            continue  # per-image files and foreign JSONs
        res = payload["results"]
        # Older results (or rows without it) have no usable ``psnr``: fall back to psnr-rgb.
        by_metric = {m: res[m] for m in PSNR_CONVENTIONS if _all_numbers(res.get(m))}
        metric = "psnr" if "psnr" in by_metric else "psnr-rgb"
        curve = Curve(
            payload["name"],
            res["bpp"],
            by_metric[metric],
            res.get("ms-ssim-rgb"),
            res.get("quality"),
            metric=metric,
            psnr_by_metric=by_metric,
        )
        curves.setdefault((payload["set"], level_key(payload["level"])), []).append(
            sorted_curve(curve)
        )
    if not curves:
        raise UserError(f"no jicd evaluate results (*-SET-levelL.json) in {folder}")
    return curves


def _all_numbers(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not math.isnan(v) for v in values
    )


def level_key(level: int | str) -> int | str:
    """A results JSON's level: 1-4 as int (matching the reference files), a name as is."""
    return int(level) if str(level).isdigit() else str(level)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def plot_level(set_name: str, level: int, curves: list[Curve]) -> bytes:
    """PNG bytes with PSNR-vs-bpp and MS-SSIM-vs-bpp panels for one (set, level)."""
    fig, (ax_psnr, ax_ssim) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, curve in enumerate(curves):
        # Same colour for a curve in both panels; dashed crosses mark published points.
        style = dict(
            color=f"C{index}",
            marker="o" if curve.measured else "x",
            linestyle="-" if curve.measured else "--",
        )
        ax_psnr.plot(curve.bpp, curve.psnr, label=curve.label, **style)
        if curve.ms_ssim and not any(v is None for v in curve.ms_ssim):
            ax_ssim.plot(curve.bpp, curve.ms_ssim, label=curve.label, **style)
    psnr_label = "PSNR [dB] (" + ", ".join(sorted({c.metric for c in curves})) + ")"
    for axis, ylabel in ((ax_psnr, psnr_label), (ax_ssim, "MS-SSIM (RGB)")):
        axis.set(xlabel="bpp (real bitstreams)", ylabel=ylabel)
        axis.grid(True, alpha=0.4)
        if axis.lines:  # tiny images have no MS-SSIM (needs > 160 px)
            axis.legend(fontsize="small")
    fig.suptitle(f"{set_name}, noise level {level} (metrics against the clean image)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown_section(set_name: str, level: int, curves: list[Curve], rates: list[BdRate]) -> str:
    """Raw RD points, then the BD-rates, for one (set, level)."""
    lines = [
        f"## {set_name}, level {level}",
        "",
        "| curve | q | bpp | psnr [dB] | psnr-rgb [dB] | MS-SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for curve in curves:
        by_metric = curve.psnr_by_metric or {curve.metric: curve.psnr}
        for i, bpp in enumerate(curve.bpp):
            quality = curve.quality[i] if curve.quality else "-"
            ms_ssim = curve.ms_ssim[i] if curve.ms_ssim else None
            psnrs = " | ".join(
                _fmt(by_metric[m][i] if m in by_metric else None, 4) for m in PSNR_METRICS
            )
            lines.append(
                f"| {curve.label} | {quality} | {bpp:.4f} | {psnrs} | {_fmt(ms_ssim, 5)} |"
            )
    lines += rate_table(rates, "BD-rate (PSNR)", with_metric=True)
    return "\n".join(lines) + "\n"


def rate_table(rates: list[BdRate], title: str, with_metric: bool) -> list[str]:
    """Markdown rows of BD-rates (``with_metric``: the PSNR convention compared, a column)."""
    metric = " PSNR compared |" if with_metric else ""
    lines = ["", f"| test | anchor | {title} |{metric} method | note |"]
    lines.append("|---" * (5 + with_metric) + "|")
    for r in rates:
        percent = "n/a" if math.isnan(r.percent) else f"{r.percent:.2f} %"
        compared = f" {r.metric} |" if with_metric else ""
        lines.append(f"| {r.test} | {r.anchor} | {percent} |{compared} {r.method} | {r.note} |")
    return lines


def ms_ssim_section(rates: list[BdRate]) -> str:
    """The MS-SSIM BD-rates of one (set, level), or nothing when no two curves carry MS-SSIM."""
    if not rates:
        return ""
    return "\n".join(rate_table(rates, "BD-rate (MS-SSIM dB)", with_metric=False)) + "\n"


def build_report(results: dict, references: list[dict], output: Path) -> list[Path]:
    """Write one PNG per (set, level) plus ``bd_rate.md`` and ``bd_rate.json``; return paths."""
    output.mkdir(parents=True, exist_ok=True)
    written, sections, table = [], [], []
    for (set_name, level), ours in sorted(results.items(), key=lambda kv: tuple(map(str, kv[0]))):
        refs = [ref[(set_name, level)] for ref in references if (set_name, level) in ref]
        curves = ours + refs
        # Against a curve, ours are read in that curve's PSNR convention (published baseline /
        # JICDCLS: psnr, CompressAI: psnr-rgb); ours against ours in psnr.
        rates = [
            replace(bd_rate(anchor, in_metric(test, anchor.metric)), metric=anchor.metric)
            for test in ours
            for anchor in curves
            if anchor is not test
        ]
        ms_rates = [
            bd_rate(as_ms_ssim_db(anchor), as_ms_ssim_db(test))
            for test in ours
            for anchor in curves
            if anchor is not test and has_ms_ssim(anchor) and has_ms_ssim(test)
        ]
        written.append(output / f"rd-{set_name}-level{level}.png")
        write_bytes_atomic(written[-1], plot_level(set_name, level, curves))
        sections.append(
            markdown_section(set_name, level, curves, rates) + ms_ssim_section(ms_rates)
        )
        table.append(
            {
                "set": set_name,
                "level": level,
                "bd_rate": [vars(r) for r in rates],
                "bd_rate_ms_ssim": [vars(r) for r in ms_rates],
                "points": [vars(c) for c in curves],
            }
        )
    header = (
        "# BD-rate (PSNR, real bitstreams; negative = fewer bits)\n\n"
        "bjontegaard package, pchip interpolation; cubic fit where noted.\n\n"
        + "".join(f"* `{m}`: {text}\n" for m, text in PSNR_CONVENTIONS.items())
        + "\nPublished curves are compared in their own convention (baseline / JICDCLS: "
        "`psnr`, CompressAI: `psnr-rgb`), ours against ours in `psnr`; column "
        "*PSNR compared*.\n\n"
    )
    written.append(output / "bd_rate.md")
    write_bytes_atomic(written[-1], (header + "\n".join(sections)).encode("utf-8"))
    written.append(output / "bd_rate.json")
    write_json_atomic(written[-1], table)
    return written


def build_parser() -> OneLineParser:
    """Command-line options of ``jicd report``."""
    parser = OneLineParser(prog="jicd report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="folder written by jicd evaluate")
    parser.add_argument(
        "--reference",
        nargs="*",
        default=[DEFAULT_REFERENCE],
        help="reference JSON files or bundled names",
    )
    parser.add_argument("--output", required=True, help="report folder (created)")
    return parser


def run(args) -> int:
    """Load results and references, write the report."""
    references = [load_reference(resolve_reference(spec)) for spec in args.reference]
    written = build_report(load_results(Path(args.results)), references, Path(args.output))
    print(f"wrote {len(written)} files to {args.output}")
    return 0


main = guarded_main("jicd report", build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
