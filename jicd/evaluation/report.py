"""RD plots and a BD-rate table from ``jicd evaluate`` results and published reference points.

    jicd report results/ --output report/
    jicd report results/ --reference baseline_eccv22 jicdcls_released --output report/

``--reference`` takes JSON files or the names of the bundled copies in
``jicd/evaluation/reference/`` (default: the ECCV'22 baseline). For every (set, level) found in
the results it writes ``rd-{set}-level{L}.png`` (PSNR and MS-SSIM vs bpp) and ``bd_rate.md`` /
``bd_rate.json``: every result curve against every other curve, BD-rates on PSNR and on
MS-SSIM (dB) computed by :mod:`jicd.evaluation.curves`, next to the raw RD points.

Results JSONs come from anyone (:mod:`jicd.evaluation.results_files` checks them): the plot
names go through :func:`jicd.names.safe_name`, so every file lands inside ``--output``; every
output is computed before the first one is written, so a bad input leaves no report behind;
and no output may replace a results or reference file that was read.
"""

from __future__ import annotations

import io
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402

from jicd.command_line import OneLineParser, UserError, guarded_main  # noqa: E402
from jicd.evaluation.curves import (  # noqa: E402
    BdRate,
    Curve,
    as_ms_ssim_db,
    bd_rate,
    has_ms_ssim,
    in_metric,
)
from jicd.evaluation.protocol import PSNR_CONVENTIONS  # noqa: E402
from jicd.evaluation.results_files import (  # noqa: E402
    DEFAULT_REFERENCE,
    load_reference,
    load_results,
    resolve_reference,
)
from jicd.files import protect_inputs, write_bytes_atomic, write_json_atomic  # noqa: E402
from jicd.names import printable, safe_name  # noqa: E402

PSNR_METRICS = tuple(PSNR_CONVENTIONS)  # table columns: psnr, psnr-rgb


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


def _cell(value) -> str:
    """A markdown table cell from file contents: printable, no column breaks."""
    return printable(value, 80).replace("|", "\\|")


def markdown_section(set_name: str, level: int, curves: list[Curve], rates: list[BdRate]) -> str:
    """Raw RD points, then the BD-rates, for one (set, level)."""
    lines = [
        f"## {_cell(set_name)}, level {_cell(level)}",
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
                f"| {_cell(curve.label)} | {_cell(quality)} | {bpp:.4f} | {psnrs} "
                f"| {_fmt(ms_ssim, 5)} |"
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
        names = f"| {_cell(r.test)} | {_cell(r.anchor)} |"
        lines.append(f"{names} {percent} |{compared} {r.method} | {r.note} |")
    return lines


def ms_ssim_section(rates: list[BdRate]) -> str:
    """The MS-SSIM BD-rates of one (set, level), or nothing when no two curves carry MS-SSIM."""
    if not rates:
        return ""
    return "\n".join(rate_table(rates, "BD-rate (MS-SSIM dB)", with_metric=False)) + "\n"


def plot_name(set_name, level) -> str:
    """The RD plot's file name for one (set, level): safe whatever the results file says."""
    return safe_name(f"rd-{set_name}-level{level}") + ".png"


def render_report(results: dict, references: list[dict]) -> dict[str, bytes | list[dict[str, Any]]]:
    """Every report file as ``{file name: bytes}``: one PNG per (set, level), ``bd_rate.md``;
    ``bd_rate.json`` as its JSON table (a list), written by the caller.

    Raises:
        UserError: two (set, level) pairs whose plot names would coincide.
    """
    files: dict[str, bytes | list[dict[str, Any]]] = {}
    sections, table = [], []
    for (set_name, level), ours in sorted(results.items(), key=lambda kv: tuple(map(str, kv[0]))):
        refs = [ref[(set_name, level)] for ref in references if (set_name, level) in ref]
        curves = ours + refs
        rates, ms_rates = _rates(ours, curves)
        name = plot_name(set_name, level)
        if name in files:
            raise UserError(f"two result sets would both be plotted to {name} (set/level names)")
        files[name] = plot_level(printable(set_name, 80), level, curves)
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
    files["bd_rate.md"] = (header + "\n".join(sections)).encode("utf-8")
    files["bd_rate.json"] = table
    return files


def _rates(ours: list[Curve], curves: list[Curve]) -> tuple[list[BdRate], list[BdRate]]:
    """BD-rates of each of ``ours`` against every other curve, on PSNR and on MS-SSIM (dB)."""
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
    return rates, ms_rates


def build_report(results: dict, references: list[dict], output: Path) -> list[Path]:
    """Write one PNG per (set, level) plus ``bd_rate.md`` and ``bd_rate.json``; return paths.

    Everything is rendered first, so an error leaves nothing in ``output``.
    """
    files = render_report(results, references)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        written.append(output / name)
        if isinstance(content, bytes):
            write_bytes_atomic(written[-1], content)
        else:
            write_json_atomic(written[-1], content)
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
    """Load results and references, write the report (never over a file that was read)."""
    paths = [resolve_reference(spec) for spec in args.reference]
    references = [load_reference(path) for path in paths]
    used: list[Path] = []
    results = load_results(Path(args.results), used)
    with protect_inputs([*paths, *used]):
        written = build_report(results, references, Path(args.output))
    print(f"wrote {len(written)} files to {args.output}")
    return 0


main = guarded_main("jicd report", build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
