"""Entropy-coding speed: CompressAI's serial autoregressive coder vs the wavefront coder.

Run from the repository root::

    .venv/bin/python benchmarks/coding_speed.py                   # N=128 and 192, 1 thread
    .venv/bin/python benchmarks/coding_speed.py --channels 128 --threads 2 --repeats 3
    .venv/bin/python benchmarks/coding_speed.py --image path/to/kodim01.png

Both coders use the same model (same weights) and the same 768×512 input (``kodim01.png`` from
``../shared/data/kodak`` when present, else a seeded random image). The model is a
``Cheng2020Anchor(N)`` with random weights, rescaled so the latent is not trivially zero:
``g_a``'s last layer is scaled until ``std(y) ≈ --latent-std`` and the entropy network predicts
scales around ``--scale`` (a trained model is not available offline). The bare transforms are
timed too (``g_a`` for encoding, ``g_s`` for decoding — the floor no coder can beat); the
*coding overhead* is a coder's total time minus that floor, also measured directly with the
transforms replaced by their cached outputs. Timings are the fastest of ``--repeats`` runs,
after a warm-up on a 64×64 crop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from compressai.models import Cheng2020Anchor
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jicd.codec import get_coder  # noqa: E402

KODAK_IMAGE = REPO.parent / "shared" / "data" / "kodak" / "kodim01.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 192], help="model N")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement")
    parser.add_argument("--image", type=Path, default=None, help="RGB image (default: Kodak 01)")
    parser.add_argument("--latent-std", type=float, default=4.0, help="target std of y")
    parser.add_argument("--scale", type=float, default=2.0, help="typical predicted scale")
    parser.add_argument("--seed", type=int, default=0, help="weights / random image seed")
    return parser.parse_args(argv)


def load_image(path: Path | None, seed: int) -> tuple[torch.Tensor, str]:
    """Return a ``(1, 3, 512, 768)``-like float image in [0, 1] and a description of it."""
    path = path or (KODAK_IMAGE if KODAK_IMAGE.is_file() else None)
    if path is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(1, 3, 512, 768, generator=generator), "random 768x512"
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    height, width = (s - s % 64 for s in image.shape[-2:])  # centre crop to a multiple of 64
    top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
    return image[..., top : top + height, left : left + width].contiguous(), str(path)


@torch.no_grad()
def build_model(channels: int, x: torch.Tensor, args: argparse.Namespace) -> Cheng2020Anchor:
    """Random-weight ``Cheng2020Anchor`` whose latent and predicted scales are non-trivial."""
    torch.manual_seed(args.seed)
    model = Cheng2020Anchor(channels).eval()
    last = model.g_a[-1]
    gain = args.latent_std / float(model.g_a(x).std())
    last.weight.mul_(gain)
    last.bias.mul_(gain)
    head = model.entropy_parameters[-1]
    head.weight[:channels].mul_(0.1)  # context-dependent scales in a realistic range
    head.bias[:channels].add_(args.scale)
    model.update(force=True)
    return model


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest wall time of ``fn`` over ``repeats`` runs (robust to other load), and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


class _Cached(nn.Module):
    """Stands in for a transform: returns a precomputed output, so only coding is timed."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.output.clone()


@contextmanager
def transforms_cached(model: nn.Module, y: torch.Tensor, x_hat: torch.Tensor) -> Iterator[None]:
    """Temporarily replace ``g_a``/``g_s`` by their cached outputs (coding overhead only)."""
    g_a, g_s = model.g_a, model.g_s
    model.g_a, model.g_s = _Cached(y), _Cached(x_hat)
    try:
        yield
    finally:
        model.g_a, model.g_s = g_a, g_s


def time_coder(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Encode/decode totals of one coder, and its bytes and reconstruction."""
    coder = get_coder(name)
    coder.decompress(model, **coder.compress(model, x[..., :64, :64]))  # warm-up, small image
    enc, out = timed(lambda: coder.compress(model, x), repeats)
    dec, rec = timed(lambda: coder.decompress(model, out["strings"], out["shape"]), repeats)
    nbytes = sum(len(s) for strings in out["strings"] for s in strings)
    return {"enc": enc, "dec": dec, "nbytes": nbytes, "x_hat": rec["x_hat"]}


@torch.inference_mode()
def bench_model(model: Cheng2020Anchor, x: torch.Tensor, repeats: int) -> dict[str, dict]:
    """Time the bare transforms, each coder's totals, and each coder's overhead on its own.

    The overhead is measured directly with ``g_a``/``g_s`` replaced by cached outputs, which
    is far less noisy than ``total − transforms`` when the transforms dominate.
    """
    y = model.g_a(x)  # also warms the transforms up
    floor_enc, y = timed(lambda: model.g_a(x), repeats)
    floor_dec, x_hat = timed(lambda: model.g_s(torch.round(y)), repeats)
    figures = {"transforms": {"enc": floor_enc, "dec": floor_dec}}
    for name in ("serial", "wavefront"):
        figures[name] = time_coder(name, model, x, repeats)
        with transforms_cached(model, y, x_hat):
            only = time_coder(name, model, x, repeats)
        figures[name].update(enc_over=only["enc"], dec_over=only["dec"])
    return figures


def report(channels: int, figures: dict[str, dict], pixels: int) -> None:
    """Print totals, coding overheads and the serial/wavefront overhead ratios."""
    floor = figures["transforms"]
    print(f"\nN={channels}: transforms alone  g_a {floor['enc']:.3f} s   g_s {floor['dec']:.3f} s")
    print(
        f"{'coder':<10} {'encode':>8} {'-g_a':>8} {'overhead':>9} "
        f"{'decode':>8} {'-g_s':>8} {'overhead':>9} {'bpp':>8}"
    )
    for name in ("serial", "wavefront"):
        f = figures[name]
        print(
            f"{name:<10} {f['enc']:>7.3f}s {f['enc'] - floor['enc']:>7.3f}s {f['enc_over']:>8.3f}s "
            f"{f['dec']:>7.3f}s {f['dec'] - floor['dec']:>7.3f}s {f['dec_over']:>8.3f}s "
            f"{8 * f['nbytes'] / pixels:>8.4f}"
        )
    serial, ours = figures["serial"], figures["wavefront"]
    diff = float((serial["x_hat"] - ours["x_hat"]).abs().max())
    print(
        f"overhead ratio serial/wavefront: encode {serial['enc_over'] / ours['enc_over']:.1f}x, "
        f"decode {serial['dec_over'] / ours['dec_over']:.1f}x; "
        f"size ratio wavefront/serial {ours['nbytes'] / serial['nbytes']:.5f}; "
        f"max |x_hat diff| {diff:.2e}"
    )
    print("(-g_a / -g_s: total minus transform time; overhead: measured with cached transforms)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.image is not None and not args.image.is_file():
        print(f"error: image not found: {args.image}", file=sys.stderr)
        return 2
    try:
        x, source = load_image(args.image, args.seed)
    except (OSError, ValueError) as error:  # unreadable or not an image
        print(f"error: cannot read image {args.image}: {error}", file=sys.stderr)
        return 2
    if min(x.shape[-2:]) < 64:
        print(f"error: image {args.image} is smaller than 64x64", file=sys.stderr)
        return 2
    print(f"input {source} {tuple(x.shape[-2:])}, threads={args.threads}, repeats={args.repeats}")
    for channels in args.channels:
        model = build_model(channels, x, args)
        report(channels, bench_model(model, x, args.repeats), x.shape[-2] * x.shape[-1])
    # Other processes on the machine inflate every figure; the ratios are measured side by side.
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
