"""Write WebDataset shards of an image folder for training (``jicd prepare-shards``).

Usage::

    python -m data_pipeline.make_shards SRC_DIR OUT_DIR [--min-side 256] [--val-fraction 0.01]
        [--maxcount 1000] [--lossless-format png|jp2] [--workers 0]
    jicd prepare-shards SRC_DIR OUT_DIR ...
    jicd prepare-shards --pairs sidd SIDD_Medium_Srgb/ OUT_DIR --val-fraction 0.05

See :mod:`data_pipeline.shards` for the selection, split and storage rules, and
:mod:`data_pipeline.paired_shards` for noisy/clean pairs (``--pairs``). Skipped files (too small,
undecodable, a pair without its clean twin or of two sizes) are printed and listed in
``OUT_DIR/manifest.json``.
"""

from __future__ import annotations

import sys

from data_pipeline.paired_shards import PAIR_KINDS, prepare_paired_shards
from data_pipeline.shards import ShardConfig, prepare_shards
from jicd.command_line import OneLineParser, run_guarded

PROG = "jicd prepare-shards"


def _parser() -> OneLineParser:
    defaults = ShardConfig()
    parser = OneLineParser(prog=PROG, description="Write WebDataset shards of an image folder.")
    parser.add_argument("src", help="folder searched recursively for images (--pairs: SIDD root)")
    parser.add_argument("out", help="output folder (must not exist or be empty)")
    parser.add_argument("--min-side", type=int, default=defaults.min_side)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--maxcount", type=int, default=defaults.maxcount, help="samples/shard")
    parser.add_argument("--lossless-format", default=defaults.lossless_format, help="png or jp2")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="0 = all cores")
    parser.add_argument(
        "--pairs",
        choices=PAIR_KINDS,
        default=None,
        help="noisy/clean pairs: sidd = SIDD-Medium sRGB scene folders (root or its Data/)",
    )
    return parser


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    cfg = ShardConfig(
        min_side=args.min_side,
        val_fraction=args.val_fraction,
        maxcount=args.maxcount,
        lossless_format=args.lossless_format,
        workers=args.workers,
    )
    if args.pairs:
        manifest = prepare_paired_shards(args.src, args.out, cfg, args.pairs)
    else:
        manifest = prepare_shards(args.src, args.out, cfg)
    _print_summary(manifest, args.out)
    return 0


def _print_summary(manifest: dict, out: str) -> None:
    for reason, entries in manifest["skipped"].items():
        for entry in entries:
            detail = entry.get("error") or "x".join(map(str, entry.get("size", [])))
            print(f"skipped ({reason}): {entry['path']}" + (f" [{detail}]" if detail else ""))
    splits, unit = manifest["splits"], "pairs" if manifest.get("pairs") else "images"
    counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in manifest["skipped"].items())
    print(
        f"wrote {out}: train {splits['train']['num_samples']} {unit} in "
        f"{len(splits['train']['shards'])} shards, val {splits['val']['num_samples']} in "
        f"{len(splits['val']['shards'])}; skipped {counts}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd prepare-shards``; returns the exit status (2 on a user error)."""
    return run_guarded(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
