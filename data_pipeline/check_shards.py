"""``jicd check-shards DIR``: verify a shard folder and write a report.

    jicd check-shards /data/flickr2w-shards [--report FILE] [--workers 0]

Checks what :mod:`data_pipeline.verify` lists (sizes, checksums, tar headers, DALI index
offsets, decoding of every sample) with one process per core, prints one line per problem and
writes the report as JSON (default ``DIR/check-report.json``). Exit status 0 when every shard is
sound, 1 when a problem was found, 2 on a usage error.
"""

from __future__ import annotations

import os
import sys

from data_pipeline.manifest import MANIFEST_NAME, read_manifest
from data_pipeline.verify import Problem, verify_shards
from jicd.command_line import OneLineParser, run_guarded
from jicd.files import protect_inputs, write_json_atomic

PROG = "jicd check-shards"
REPORT_NAME = "check-report.json"


def _parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Verify WebDataset shards against manifest.json.")
    parser.add_argument("shards", help="folder written by jicd prepare-shards")
    parser.add_argument("--report", help=f"JSON report (default: SHARDS/{REPORT_NAME})")
    parser.add_argument("--workers", type=int, default=0, help="processes, 0 = all cores")
    return parser


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    report = verify_shards(args.shards, args.workers)
    path = args.report or os.path.join(args.shards, REPORT_NAME)
    with protect_inputs(_input_files(args.shards)):
        write_json_atomic(path, report)
    for problem in report["problems"]:
        print(Problem(**problem))
    verdict = "sound" if not report["problems"] else f"{len(report['problems'])} problems"
    print(
        f"{report['shards']} shards, {report['decoded']} of {report['samples']} samples decoded: "
        f"{verdict}; report: {path}"
    )
    return 1 if report["problems"] else 0


def _input_files(shards: str) -> list[str]:
    """The manifest and every shard and index it lists: what ``--report`` must not replace."""
    splits = read_manifest(shards)["splits"].values()
    names = [
        record[key] for split in splits for record in split["shards"] for key in ("name", "index")
    ]
    return [os.path.join(shards, MANIFEST_NAME), *(os.path.join(shards, n) for n in names)]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd check-shards``; returns the exit status."""
    return run_guarded(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
