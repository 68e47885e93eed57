"""``jicd import-checkpoint``: a published checkpoint → our inference export.

    jicd import-checkpoint checkpoint_best_loss.pth.tar -o baseline_q3.pt --quality 3
    jicd import-checkpoint JICDCLS_q6.pth.tar -o jicdcls_q6.pt --quality 6 --format jicdcls
    jicd evaluate --checkpoint baseline_q3.pt --dataset kodak=/data/kodak --output results/

Formats: ``compressai`` (a cheng2020-anchor state dict), ``baseline`` (ECCV'22
DenoiseCompression), ``jicdcls`` (JICDS), ``export`` (ours, re-checked); ``auto`` tells them
apart by their keys. The training wrapper and the plain (``checkpoint_updated``) state dict both
work. Baseline / JICDCLS / export files become a jicd export (model config + weights with fresh
CDF tables + the source file's sha256); a cheng2020-anchor becomes its plain state dict with
fresh CDF tables (what ``--checkpoint`` takes as the sequential comparator).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jicd.command_line import OneLineParser, UserError, guarded_main
from jicd.files import check_not_input, protect_inputs, sha256_file, torch_save_atomic
from jicd.models.identity import ALIASES_KEY
from jicd.models.presets import QUALITIES
from jicd.models.released import FORMATS
from jicd.models.weights import export_file_digests, import_checkpoint, save_export


def build_parser() -> OneLineParser:
    """Command-line options of ``jicd import-checkpoint``."""
    parser = OneLineParser(prog="jicd import-checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the published checkpoint file")
    parser.add_argument("-o", "--output", required=True, help="export file to write")
    parser.add_argument("--quality", type=int, required=True, choices=sorted(QUALITIES))
    parser.add_argument("--format", default="auto", choices=FORMATS, help="default: from keys")
    return parser


def run(args) -> int:
    """Import, then write the export atomically (never over the source)."""
    source, output = Path(args.source), Path(args.output)
    if not source.is_file():
        raise UserError(f"file not found: {source}")
    with protect_inputs([source]):
        check_not_input(output, "-o")
        return _import(source, output, args)


def _import(source: Path, output: Path, args) -> int:
    model, cfg, fmt = import_checkpoint(source, args.quality, args.format)
    provenance = {
        "file": source.name,
        "format": fmt,
        "sha256": sha256_file(source),
    }
    if cfg is None:  # cheng2020-anchor: the comparator's plain state dict
        anchor: Any = model  # CompressAI's Cheng2020Anchor (untyped): update() fills its CDFs
        anchor.update(force=True)
        torch_save_atomic(model.state_dict(), output)
    else:
        extra: dict = {"imported_from": provenance}
        if fmt == "export":  # .jicd files written before v3 name the source file's digest
            extra[ALIASES_KEY] = export_file_digests(source)
        save_export(output, model, cfg, extra=extra)
    digest = sha256_file(output)
    arch = cfg.arch_name() if cfg is not None else "cheng2020-anchor"
    print(f"{source} ({fmt}) -> {output}: {arch}, quality {args.quality}, sha256 {digest}")
    return 0


main = guarded_main("jicd import-checkpoint", build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
