"""Compress noisy photos to ``.jicd`` files and decode them to the denoised images.

    jicd compress NOISY.png -o OUT.jicd --checkpoint runs/q3/export/model.pt [--coder serial]
    jicd compress photos/ more/a.png -o coded/ --checkpoint runs/q3/export/model.pt
    jicd decompress OUT.jicd -o DENOISED.png --checkpoint runs/q3/export/model.pt
    jicd decompress coded/ -o denoised/ --checkpoint runs/q3/export/model.pt

An input is the (already noisy) photo of any size, read as 8-bit RGB (grey, alpha, palette, CMYK
or 16-bit inputs are converted with a one-line notice: :mod:`jicd.pixels`); it is
replicate-padded to multiples of 64 for coding and cropped back on decode. Several inputs, or a
folder (its images, or its ``.jicd`` files, not recursive), go to an output folder as
``<name>.jicd`` / ``<name>.png``; the model is loaded once, a progress bar runs, and a file that
fails is reported on its own line without stopping the others (exit status 2 if any failed).

The file records the model's identity (arch, quality, channels, sha256 of the weights) but not
where the weights live, so ``--checkpoint`` is required on both sides; decoding with other weights
is refused. The coder is read from the file. Arguments and paths are checked before torch and
CompressAI are imported (several seconds), so a wrong command line fails at once. Every failure
is one line on stderr; outputs are written to a temp file and renamed, so a failed file leaves
no output behind, and an output that resolves to an input (the image, the ``.jicd`` file or the
checkpoint) is refused before anything is coded. Images and files larger than the pixel limit
(:mod:`jicd.codec.limits`, ``--max-pixels``) are refused from their headers.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from jicd.command_line import OneLineParser, UserError, is_out_of_memory, one_line, run_guarded
from jicd.files import check_not_input, find_images, protect_inputs


@dataclass(frozen=True)
class _Command:
    prog: str
    verb: str  # "compressed" / "decompressed"
    source: str
    suffix: str  # of the outputs


COMPRESS = _Command("jicd compress", "compressed", "noisy image(s) or folder(s) of images", ".jicd")
DECOMPRESS = _Command("jicd decompress", "decompressed", ".jicd file(s) or folder(s)", ".png")


def _parser(command: _Command) -> OneLineParser:
    parser = OneLineParser(prog=command.prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help=command.source)
    parser.add_argument(
        "-o", "--output", required=True, help=f"{command.suffix} file, or a folder for several"
    )
    parser.add_argument("--checkpoint", required=True, help="jicd export or Cheng2020 state dict")
    if command is COMPRESS:
        parser.add_argument("--coder", default="wavefront", choices=["wavefront", "serial"])
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="largest image accepted (default: 2^25 wavefront, 2^22 serial; $JICD_MAX_PIXELS)",
    )
    return parser


def plan_jobs(
    command: _Command, inputs: list[str], output: str
) -> tuple[list[tuple[str, str]], bool]:
    """``[(input file, output file)]`` and whether this is a batch (output = folder).

    Raises:
        UserError: a missing input, an empty folder, or two inputs that map to one output.
    """
    missing = [path for path in inputs if not os.path.exists(path)]
    if missing:
        raise UserError(f"no such file or folder: {', '.join(missing)}")
    files: list[str] = []
    for path in inputs:
        if os.path.isdir(path):
            found = _folder_inputs(command, path)
            if not found:
                raise UserError(f"{path}: no {'images' if command is COMPRESS else '.jicd files'}")
            files += found
        elif not stat.S_ISREG(os.stat(path).st_mode):
            raise UserError(f"{path} is not a regular file")
        else:
            files.append(path)
    batch = len(inputs) > 1 or os.path.isdir(inputs[0]) or output.endswith(os.sep)
    batch = batch or os.path.isdir(output)
    if not batch:
        return [(files[0], output)], False
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"-o {output}: several inputs need an output folder")
    jobs = [(path, os.path.join(output, Path(path).stem + command.suffix)) for path in files]
    targets: dict[str, str] = {}
    for source, target in jobs:
        if target in targets:
            raise UserError(f"{targets[target]} and {source} would both be written to {target}")
        targets[target] = source
    return jobs, True


def _folder_inputs(command: _Command, folder: str) -> list[str]:
    if command is COMPRESS:
        return [str(path) for path in find_images(folder)]
    return sorted(str(p) for p in Path(folder).iterdir() if p.suffix == ".jicd" and p.is_file())


def _run(command: _Command, argv: list[str] | None) -> int:
    args = _parser(command).parse_args(argv)
    jobs, batch = plan_jobs(command, args.inputs, args.output)
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint {args.checkpoint}: no such file")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise UserError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    with protect_inputs([*(source for source, _ in jobs), args.checkpoint]):
        for _, target in jobs:
            check_not_input(target, "-o")
        return _code(command, args, jobs, batch)


def _code(command: _Command, args, jobs: list[tuple[str, str]], batch: bool) -> int:
    # Everything before this is cheap; from here on torch and CompressAI are imported.
    from jicd.codec.image_coding import decode_file, encode_file
    from jicd.models.weights import load_for_inference

    model, identity = load_for_inference(args.checkpoint)

    def code_one(source: str, target: str, notice=None) -> str:
        if command is COMPRESS:
            return encode_file(model, identity, source, target, args.coder, notice, args.max_pixels)
        return decode_file(model, identity, source, target, args.max_pixels)

    if not batch:
        line = code_one(*jobs[0])
        if command is COMPRESS:
            print(line)
        return 0
    from tqdm import tqdm

    os.makedirs(args.output, exist_ok=True)
    failed = 0
    for source, target in tqdm(jobs, desc=command.verb.removesuffix("ed"), unit="file"):
        try:
            tqdm.write(code_one(source, target, tqdm.write))
        except Exception as exc:  # this file's problem (or memory); the others go on
            if not isinstance(exc, UserError | OSError) and not is_out_of_memory(exc):
                raise
            failed += 1
            tqdm.write(f"{command.prog}: error: {source}: {one_line(exc)}", file=sys.stderr)
    print(
        f"{command.verb} {len(jobs) - failed} of {len(jobs)} files into {args.output}"
        + (f"; {failed} failed (listed above)" if failed else "")
    )
    return 2 if failed else 0


def compress_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd compress``."""
    return run_guarded(COMPRESS.prog, lambda: _run(COMPRESS, argv))


def decompress_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd decompress``."""
    return run_guarded(DECOMPRESS.prog, lambda: _run(DECOMPRESS, argv))


def main(argv: list[str] | None = None) -> int:
    """``python -m jicd.codec.commands compress|decompress ARGS`` (as the ``jicd`` commands)."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"compress": compress_main, "decompress": decompress_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m jicd.codec.commands {compress,decompress} ARGS", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
