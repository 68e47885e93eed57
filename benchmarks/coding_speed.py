"""Entropy-coding speed: CompressAI's serial coder vs the wavefront coder's float and integer paths.

Run from the repository root::

    .venv/bin/python benchmarks/coding_speed.py                   # N=128 and 192, 1 thread
    .venv/bin/python benchmarks/coding_speed.py --channels 128 --threads 2 --repeats 3
    .venv/bin/python benchmarks/coding_speed.py --image path/to/kodim01.png --size 256x384
    .venv/bin/python benchmarks/coding_speed.py --device cuda --repeats 5      # on a GPU

Rows: ``serial`` (CompressAI's position-by-position loop, CPU only), ``wavefront`` (the float
path: float32 entropy parameters on a CPU copy, one thread) and ``integer`` (the integer path of
:mod:`jicd.codec.integer`: fixed-point entropy parameters on the model's device, any thread
count; its exact GEMMs use int8 planes where this CPU's int8 GEMM is exact, else float64) and
``integer-f64`` (the same path with the float64 GEMM kernel forced: same bytes, the kernel's
share of the time). ``--coders`` picks rows (serial is slow: leave it out to keep runs short); with
``--device cuda`` the transforms and the integer path run on the GPU and the serial row is
dropped. All rows use the same model (same weights) and the same input (``kodim01.png`` from
``../shared/data/kodak`` when present, else a seeded random image; ``--size HxW`` centre-crops
it). The model is a ``Cheng2020Anchor(N)`` with random weights, rescaled so the latent is not
trivially zero: ``g_a``'s last layer is scaled until ``std(y) ≈ --latent-std`` and the entropy
network predicts scales around ``--scale`` (a trained model is not available offline); its
integer entropy model is calibrated on generated images. The bare transforms are timed too
(``g_a`` for encoding, ``g_s`` for decoding — the floor no coder can beat); the *coding
overhead* is a coder's total time minus that floor, also measured directly with the transforms
replaced by their cached outputs. Timings are the fastest of ``--repeats`` runs, after a
warm-up on a 64×64 crop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import torch
from compressai.models import Cheng2020Anchor
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jicd.codec import get_coder  # noqa: E402
from jicd.codec.integer.calibration import generated_images, noisy_versions  # noqa: E402
from jicd.codec.integer.convert import integerize  # noqa: E402
from jicd.codec.integer.gemm import forced_kernel  # noqa: E402

KODAK_IMAGE = REPO.parent / "shared" / "data" / "kodak" / "kodim01.png"
CODERS = ("serial", "wavefront", "integer", "integer-f64")  # integer*: the integer path
DEFAULT_CODERS = ["serial", "wavefront", "integer"]

T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 192], help="model N")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement")
    parser.add_argument("--image", type=Path, default=None, help="RGB image (default: Kodak 01)")
    parser.add_argument("--size", default=None, help="centre crop HxW (multiples of 64)")
    parser.add_argument("--device", default="cpu", help="model device: cpu or cuda")
    parser.add_argument("--coders", nargs="+", default=DEFAULT_CODERS, choices=CODERS)
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


def crop(x: torch.Tensor, size: str | None) -> torch.Tensor:
    """Centre crop to ``HxW`` (unchanged for None)."""
    if size is None:
        return x
    height, width = (int(v) for v in size.lower().split("x"))
    if height % 64 or width % 64 or height > x.shape[-2] or width > x.shape[-1]:
        raise ValueError(f"--size {size}: multiples of 64, at most {tuple(x.shape[-2:])}")
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width].contiguous()


@torch.no_grad()
def build_model(channels: int, x: torch.Tensor, args: argparse.Namespace) -> Cheng2020Anchor:
    """Random-weight ``Cheng2020Anchor`` whose latent and predicted scales are non-trivial,
    with its integer entropy model (calibrated on generated images) attached."""
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
    model.integer_entropy = integerize(model, noisy_versions(generated_images(4, 256)))
    return model


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], repeats: int, device: torch.device | None = None) -> tuple[float, T]:
    """Fastest wall time of ``fn`` over ``repeats`` runs (robust to other load), and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, cast(T, result)  # the last run's result (repeats >= 1)


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
    """Encode/decode totals of one coder row, and its bytes and reconstruction."""
    coder = get_coder("serial" if name == "serial" else "wavefront")
    entropy = "integer" if name.startswith("integer") else "float"
    kernel = forced_kernel("float64") if name == "integer-f64" else nullcontext()
    device = next(model.parameters()).device

    def encode(image: torch.Tensor) -> dict:
        return coder.compress(model, image, entropy=entropy)

    def decode(out: dict) -> dict:
        return coder.decompress(model, out["strings"], out["shape"], entropy=entropy)

    with kernel:
        decode(encode(x[..., :64, :64]))  # warm-up, small image
        enc, out = timed(lambda: encode(x), repeats, device)
        dec, rec = timed(lambda: decode(out), repeats, device)
    nbytes = sum(len(s) for strings in out["strings"] for s in strings)
    return {"enc": enc, "dec": dec, "nbytes": nbytes, "x_hat": rec["x_hat"]}


@torch.inference_mode()
def bench_model(
    model: Cheng2020Anchor, x: torch.Tensor, repeats: int, coders: list[str]
) -> dict[str, dict]:
    """Time the bare transforms, each coder's totals, and each coder's overhead on its own.

    The overhead is measured directly with ``g_a``/``g_s`` replaced by cached outputs, which
    is far less noisy than ``total − transforms`` when the transforms dominate.
    """
    device = next(model.parameters()).device
    x = x.to(device)
    y = model.g_a(x)  # also warms the transforms up
    floor_enc, y = timed(lambda: model.g_a(x), repeats, device)
    floor_dec, x_hat = timed(lambda: model.g_s(torch.round(y)), repeats, device)
    figures = {"transforms": {"enc": floor_enc, "dec": floor_dec}}
    for name in coders:
        figures[name] = time_coder(name, model, x, repeats)
        with transforms_cached(model, y, x_hat):
            only = time_coder(name, model, x, repeats)
        figures[name].update(enc_over=only["enc"], dec_over=only["dec"])
    return figures


def report(channels: int, figures: dict[str, dict], pixels: int) -> None:
    """Print totals, coding overheads and the overhead and size ratios between rows."""
    floor = figures["transforms"]
    print(f"\nN={channels}: transforms alone  g_a {floor['enc']:.4f} s   g_s {floor['dec']:.4f} s")
    print(
        f"{'coder':<12} {'encode':>8} {'-g_a':>8} {'overhead':>9} "
        f"{'decode':>8} {'-g_s':>8} {'overhead':>9} {'bpp':>8}"
    )
    rows = [name for name in CODERS if name in figures]
    for name in rows:
        f = figures[name]
        print(
            f"{name:<12} {f['enc']:>7.4f}s {f['enc'] - floor['enc']:>7.4f}s {f['enc_over']:>8.4f}s "
            f"{f['dec']:>7.4f}s {f['dec'] - floor['dec']:>7.4f}s {f['dec_over']:>8.4f}s "
            f"{8 * f['nbytes'] / pixels:>8.4f}"
        )
    pairs = [("serial", "wavefront"), ("wavefront", "integer"), ("serial", "integer")]
    for slow, fast in [*pairs, ("integer-f64", "integer")]:
        if slow in figures and fast in figures:
            print(ratio_line(slow, fast, figures[slow], figures[fast]))
    print("(-g_a / -g_s: total minus transform time; overhead: measured with cached transforms)")


def ratio_line(slow: str, fast: str, a: dict, b: dict) -> str:
    """Overhead ratio ``a/b``, size ratio ``b/a`` and the largest reconstruction difference."""
    diff = float((a["x_hat"] - b["x_hat"]).abs().max())
    return (
        f"overhead ratio {slow}/{fast}: encode {a['enc_over'] / b['enc_over']:.2f}x, "
        f"decode {a['dec_over'] / b['dec_over']:.2f}x; size ratio {fast}/{slow} "
        f"{b['nbytes'] / a['nbytes']:.5f}; max |x_hat diff| {diff:.2e}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.image is not None and not args.image.is_file():
        print(f"error: image not found: {args.image}", file=sys.stderr)
        return 2
    try:
        x, source = load_image(args.image, args.seed)
        x = crop(x, args.size)
    except (OSError, ValueError) as error:  # unreadable, not an image, or a bad --size
        print(f"error: cannot use image {args.image or source}: {error}", file=sys.stderr)
        return 2
    if min(x.shape[-2:]) < 64:
        print(f"error: image {args.image} is smaller than 64x64", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    coders = [c for c in args.coders if not (c == "serial" and device.type != "cpu")]
    print(
        f"input {source} {tuple(x.shape[-2:])}, device={device}, threads={args.threads}, "
        f"repeats={args.repeats}, rows={' '.join(coders)}"
    )
    for channels in args.channels:
        model = build_model(channels, x, args).to(device)
        report(channels, bench_model(model, x, args.repeats, coders), x.shape[-2] * x.shape[-1])
    # Other processes on the machine inflate every figure; the ratios are measured side by side.
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
