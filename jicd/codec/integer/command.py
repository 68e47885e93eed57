"""``jicd integerize``: a float export → an export that codes with the integer entropy path.

    jicd integerize runs/q3/export/model.pt -o q3-int.pt                        # generated images
    jicd integerize runs/q3/export/model.pt -o q3-int.pt --calibration photos/ --images 16
    jicd integerize runs/q3/export/model.pt -o q3-int.pt --calibration photos/ --finetune-steps 500

The fixed-point scales are calibrated on a few noisy images (the first ``--images`` of
``--calibration DIR``, centre-cropped to ≤ 512 px, with the seeded test noise of levels 1-4;
without a folder, built-in generated images). The output is the source export plus the integer
entropy model (:mod:`jicd.codec.integer.export`); ``jicd compress``/``decompress``/``evaluate``
then use the integer path, whose ``.jicd`` files (format version 4) decode bit-exactly on any
CPU or GPU. ``--finetune-steps N`` then fine-tunes the entropy side for N steps with the integer
path in the loop (:mod:`jicd.codec.integer.finetune`; the float weights in the export stay the
source's). The command ends by loading what it wrote, coding the calibration images with both
paths and printing the integer path's rate against the float path's (the same latents).
"""

from __future__ import annotations

import sys
from pathlib import Path

from jicd.command_line import OneLineParser, UserError, guarded_main


def build_parser() -> OneLineParser:
    """Command-line options of ``jicd integerize``."""
    parser = OneLineParser(prog="jicd integerize", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="jicd export to convert (float entropy path)")
    parser.add_argument("-o", "--output", required=True, help="integerized export to write")
    parser.add_argument("--calibration", default=None, help="folder of calibration photos")
    parser.add_argument("--images", type=int, default=8, help="calibration images (default 8)")
    parser.add_argument("--margin", type=float, default=2.0, help="headroom over the peaks")
    parser.add_argument(
        "--finetune-steps", type=int, default=0, help="integer-in-the-loop steps (default 0)"
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-5, help="Adam learning rate")
    parser.add_argument("--finetune-crop", type=int, default=256, help="crop side (px, 64k)")
    return parser


def check_arguments(args) -> None:
    """Reject bad values before torch is imported."""
    source, output = Path(args.source), Path(args.output)
    if not source.is_file():
        raise UserError(f"file not found: {source}")
    if output.resolve() == source.resolve():
        raise UserError(f"-o {output} would overwrite the source export")
    if not 1 <= args.images <= 256:
        raise UserError(f"--images must be in 1..256, got {args.images}")
    if not 1.0 <= args.margin <= 16.0:
        raise UserError(f"--margin must be in [1, 16], got {args.margin}")
    if args.calibration is not None and not Path(args.calibration).is_dir():
        raise UserError(f"--calibration {args.calibration}: no such folder")
    if not 0 <= args.finetune_steps <= 100_000:
        raise UserError(f"--finetune-steps must be in 0..100000, got {args.finetune_steps}")
    if not 0 < args.finetune_lr <= 1e-2:
        raise UserError(f"--finetune-lr must be in (0, 0.01], got {args.finetune_lr}")
    if args.finetune_crop % 64 or not 64 <= args.finetune_crop <= 1024:
        raise UserError(f"--finetune-crop must be a multiple of 64 in 64..1024, got "
                        f"{args.finetune_crop}")  # fmt: skip


def run(args) -> int:
    """Calibrate, convert (fine-tune), write, then report both paths' rates on the calibration."""
    check_arguments(args)
    from jicd.codec.integer.calibration import folder_images, generated_images, noisy_versions
    from jicd.codec.integer.convert import calibrate, quantize
    from jicd.codec.integer.export import write_integerized
    from jicd.models.weights import load_for_inference, read_export

    payload, model, cfg = read_export(args.source)
    model.eval()
    if args.calibration is None:
        clean, what = generated_images(args.images), f"{args.images} generated images"
    else:
        clean = folder_images(args.calibration, args.images)
        what = f"{len(clean)} images of {args.calibration}"
    images = noisy_versions(clean)
    calibration = calibrate(model, images, args.margin, description=what)
    net = quantize(model, calibration)
    if args.finetune_steps:
        net = _finetuned(model, net, images, calibration, args)
    write_integerized(payload, net, args.source, args.output)
    written, _ = load_for_inference(args.output)  # as a later load will see it
    float_bytes = _stream_bytes(written, images, "float")
    integer_bytes = _stream_bytes(written, images, "integer")
    change = 100.0 * (integer_bytes / float_bytes - 1.0)
    print(
        f"{args.source} -> {args.output}: {cfg.arch_name()} q{cfg.quality} with the integer "
        f"entropy path (y at 2^-{net.y_bits}, z at 2^-{net.z_bits}), calibrated on {what}; "
        f"on them the integer path codes {integer_bytes} bytes vs {float_bytes} float "
        f"({change:+.2f} %)"
    )
    return 0


def _finetuned(model, net, images, calibration, args):
    """Fine-tune with the integer path in the loop; print and record the change."""
    from jicd.codec.integer.finetune import finetune

    model.integer_entropy = net
    before = _stream_bytes(model, images, "integer")
    del model.integer_entropy
    tuned, report = finetune(
        model, images, calibration, args.finetune_steps, args.finetune_lr, args.finetune_crop
    )
    tuned.calibration["finetune"] = {
        "steps": report.steps,
        "lr": args.finetune_lr,
        "crop": args.finetune_crop,
        "bpp_before": report.bpp_before,
        "bpp_after": report.bpp_after,
        "integer_bytes_before": before,
    }
    print(
        f"fine-tuned {report.steps} steps with the integer path in the loop: y "
        f"{report.bpp_before:.4f} -> {report.bpp_after:.4f} bpp (estimate) on the "
        f"calibration images; integer path before it: {before} bytes"
    )
    return tuned


def _stream_bytes(model, images, entropy: str) -> int:
    """Total stream bytes (y and z) of ``images`` coded with the ``entropy`` path."""
    from jicd.codec import get_coder

    coder = get_coder("wavefront")
    coded = [coder.compress(model, x, entropy=entropy)["strings"] for x in images]
    return sum(len(s) for strings in coded for part in strings for s in part)


main = guarded_main("jicd integerize", build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
