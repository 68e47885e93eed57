"""Compress a noisy photo to a ``.jicd`` file and decode it to the denoised image.

    jicd compress NOISY.png -o OUT.jicd --checkpoint runs/q3/export/model.pt [--coder serial]
    jicd decompress OUT.jicd -o DENOISED.png --checkpoint runs/q3/export/model.pt

The input is the (already noisy) photo as 8-bit RGB of any size: it is replicate-padded
symmetrically to multiples of 64 for coding and cropped back to its original size on decode.
The file records the model's identity (arch, quality, channels, sha256 of the weights) but not
where the weights live, so ``--checkpoint`` is required on both sides; decoding with other weights
is refused. The coder is read from the file. Every failure (missing or non-image input, wrong
checkpoint, truncated or corrupted file) is one line on stderr and exit status 2; outputs are
written to a temp file and renamed, so a failed run leaves no output file.
"""

from __future__ import annotations

import sys

import torch

from jicd.cli import OneLineParser, UserError, run_guarded
from jicd.codec import format as jicd_format
from jicd.codec import get_coder
from jicd.codec.format import CodedImage
from jicd.codec.images import BLOCK, crop_to, load_rgb, pad_to_block, save_png
from jicd.models.checkpoints import load_for_inference

# z is 1/64 of the padded image: 4 stride-2 layers in g_a, 2 more in h_a.
LATENT_STRIDE = 64


def _parser(prog: str, source: str, target: str, coder_option: bool) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help=source)
    parser.add_argument("-o", "--output", required=True, help=target)
    parser.add_argument("--checkpoint", required=True, help="jicd export or Cheng2020 state dict")
    if coder_option:
        parser.add_argument("--coder", default="wavefront", choices=["wavefront", "serial"])
    return parser


@torch.no_grad()
def compress_image(model, identity: dict, x: torch.Tensor, coder_name: str) -> CodedImage:
    """Pad, entropy-code and package one (1, 3, H, W) image in [0, 1]."""
    padded = pad_to_block(x)
    encoded = get_coder(coder_name).compress(model, padded)
    y_strings, z_strings = encoded["strings"]
    return CodedImage(
        arch=identity["arch"],
        quality=int(identity.get("quality") or 0),
        channels=int(identity["channels"]),
        weights_sha256=identity["weights_sha256"],
        coder=coder_name,
        original_size=(x.shape[-2], x.shape[-1]),
        padded_size=(padded.shape[-2], padded.shape[-1]),
        latent_shape=tuple(int(v) for v in encoded["shape"]),
        streams=(y_strings[0], z_strings[0]),
    )


def check_compatible(coded: CodedImage, identity: dict) -> None:
    """Refuse to decode with weights other than the encoder's, or an inconsistent geometry."""
    if coded.weights_sha256 != identity["weights_sha256"]:
        raise UserError(
            f"checkpoint does not match the file: it was written by {coded.arch} q{coded.quality} "
            f"N={coded.channels} with weights sha256 {coded.weights_sha256[:12]}…, the checkpoint "
            f"has {identity['weights_sha256'][:12]}…"
        )
    (height, width), (pad_h, pad_w) = coded.original_size, coded.padded_size
    expected = (pad_h // LATENT_STRIDE, pad_w // LATENT_STRIDE)
    if pad_h % BLOCK or pad_w % BLOCK or pad_h < height or pad_w < width:
        raise UserError(f"corrupted .jicd header: padded size {coded.padded_size}")
    if coded.latent_shape != expected or len(coded.streams) != 2:
        raise UserError(f"corrupted .jicd header: latent shape {coded.latent_shape}")


@torch.no_grad()
def decompress_image(model, coded: CodedImage) -> torch.Tensor:
    """Decode a checked :class:`CodedImage` to (1, 3, H, W) in [0, 1] at its original size."""
    strings = [[stream] for stream in coded.streams]
    x_hat = get_coder(coded.coder).decompress(model, strings, coded.latent_shape)["x_hat"]
    return crop_to(x_hat.clamp(0, 1), *coded.original_size)


def _compress(argv: list[str] | None) -> int:
    args = _parser("jicd compress", "noisy 8-bit RGB image", ".jicd file", True).parse_args(argv)
    x = load_rgb(args.input)
    model, identity = load_for_inference(args.checkpoint)
    coded = compress_image(model, identity, x, args.coder)
    jicd_format.write(args.output, coded)
    bpp = 8.0 * coded.payload_bytes / (x.shape[-2] * x.shape[-1])
    print(f"{args.output}: {coded.payload_bytes} bytes of streams, {bpp:.4f} bpp")
    return 0


def _decompress(argv: list[str] | None) -> int:
    args = _parser("jicd decompress", ".jicd file", "denoised PNG", False).parse_args(argv)
    coded = jicd_format.read(args.input)
    model, identity = load_for_inference(args.checkpoint)
    check_compatible(coded, identity)
    save_png(args.output, decompress_image(model, coded))
    return 0


def compress_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd compress``."""
    return run_guarded("jicd compress", lambda: _compress(argv))


def decompress_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd decompress``."""
    return run_guarded("jicd decompress", lambda: _decompress(argv))


def main(argv: list[str] | None = None) -> int:
    """``python -m jicd.codec.cli compress|decompress ARGS`` (same as the ``jicd`` commands)."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"compress": compress_main, "decompress": decompress_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m jicd.codec.cli {compress,decompress} ARGS", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
