"""Real-bitstream evaluation at the published noise levels (the protocol of docs/evaluation.md).

    jicd evaluate --checkpoint runs/q1/export/model.pt runs/q6/export/model.pt \\
        --dataset kodak=/data/kodak clic=/data/clic --levels 1 2 3 4 --output results/
    # sequential comparator: a plain Cheng2020Anchor state dict, optionally after a denoiser
    jicd evaluate --checkpoint anchor_q3.pth --denoiser dncnn.ts --dataset kodak=/data/kodak ...
    # the same, images strided over 8 processes (rank 0 gathers and writes)
    torchrun --nproc_per_node=8 -m jicd.evaluation.evaluate --checkpoint ... --threads 1

Each image is center-cropped to a multiple of 64, corrupted with the seeded noise of each level,
really compressed and decompressed on CPU by the chosen coder, and scored against the clean
image. Outputs in ``--output``: ``{name}-{set}-level{L}.json`` (CompressAI's results layout, one
entry per checkpoint, sorted by quality then bpp) and ``{name}-per_image.{csv,json}``.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from jicd import distributed
from jicd.cli import OneLineParser, UserError, run_guarded
from jicd.codec import get_coder
from jicd.codec.images import center_crop, load_rgb
from jicd.files import IMAGE_SUFFIXES, find_images, write_bytes_atomic, write_json_atomic
from jicd.metrics import image_bpp, ms_ssim_float, psnr_8bit
from jicd.models.checkpoints import load_for_inference
from jicd.noise import TEST_LEVELS, noisy_at_level

METRICS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time", "bpp-estimate")


def build_parser() -> OneLineParser:
    """Command-line options of ``jicd evaluate``."""
    parser = OneLineParser(prog="jicd evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="export(s) or anchors")
    parser.add_argument("--dataset", nargs="+", required=True, metavar="SET=DIR")
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--output", required=True, help="results folder (created)")
    parser.add_argument("--coder", default="wavefront", choices=["wavefront", "serial"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of every image")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--repeats", type=int, default=1, help="coding runs averaged for times")
    parser.add_argument("--denoiser", default=None, help="TorchScript denoiser run before coding")
    parser.add_argument("--name", default=None, help="curve name (default: the model's arch)")
    return parser


def dataset_images(folder: str, limit: int | None) -> list[Path]:
    """Sorted image files directly inside ``folder`` (the first ``limit`` of them)."""
    if not Path(folder).is_dir():
        raise UserError(f"dataset folder not found: {folder}")
    images = find_images(folder)
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in dataset folder {folder}")
    return images[:limit]


def parse_datasets(specs: list[str], limit: int | None) -> dict[str, list[Path]]:
    """``["kodak=DIR", …]`` → ``{"kodak": [image paths]}``."""
    datasets: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--dataset expects SET=DIR, got '{spec}'")
        datasets[name] = dataset_images(folder, limit)
    return datasets


def check_arguments(args) -> None:
    """Reject bad option values before any model is loaded."""
    bad_levels = sorted(set(args.levels) - set(TEST_LEVELS))
    if bad_levels:
        raise UserError(f"unknown noise level(s) {bad_levels}; choose from {sorted(TEST_LEVELS)}")
    for option in ("threads", "repeats", "limit"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option} must be >= 1, got {value}")
    for path in [*args.checkpoint, *([args.denoiser] if args.denoiser else [])]:
        if not Path(path).is_file():
            raise UserError(f"file not found: {path}")


def load_denoiser(path: str | None) -> torch.jit.ScriptModule | None:
    """A TorchScript module mapping (1, 3, H, W) → (1, 3, H, W), or None."""
    if path is None:
        return None
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except RuntimeError as exc:
        raise UserError(f"{path} is not a TorchScript module: {str(exc).splitlines()[0]}") from None


def estimated_bpp(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Likelihood-estimated bpp of (1, 3, H, W) ``x`` (reported only as ``bpp-estimate``)."""
    return float(image_bpp(model(x)["likelihoods"], x.shape[-2] * x.shape[-1]).sum())


def timed(func, repeats: int):
    """Run ``func()`` ``repeats`` times; return its last result and the mean wall time (s)."""
    start = time.perf_counter()
    for _ in range(repeats):
        result = func()
    return result, (time.perf_counter() - start) / repeats


@torch.no_grad()
def code_and_score(model, coder, noisy, clean, denoiser=None, repeats: int = 1) -> dict:
    """Compress ``noisy`` (1, 3, H, W) for real, decompress, and score against ``clean``.

    The optional denoiser runs inside the timed encode, as it is part of the sequential pipeline.
    """

    def encode():
        codec_input = denoiser(noisy).clamp(0, 1) if denoiser is not None else noisy
        return codec_input, coder.compress(model, codec_input)

    (codec_input, enc), enc_time = timed(encode, repeats)
    dec, dec_time = timed(lambda: coder.decompress(model, enc["strings"], enc["shape"]), repeats)
    x_hat = dec["x_hat"].clamp(0, 1)
    num_bytes = sum(len(s) for streams in enc["strings"] for s in streams)
    pixels = clean.shape[-2] * clean.shape[-1]
    return {
        "bytes": num_bytes,
        "bpp": 8.0 * num_bytes / pixels,
        "bpp-estimate": estimated_bpp(model, codec_input),
        "psnr-rgb": psnr_8bit(clean, x_hat),
        "ms-ssim-rgb": ms_ssim_float(clean, x_hat),
        "psnr-noisy": psnr_8bit(clean, noisy),
        "encoding_time": enc_time,
        "decoding_time": dec_time,
    }


def curve_name(args, identity: dict) -> str:
    """Name of the RD curve a checkpoint belongs to."""
    if args.name:
        return args.name
    return identity["arch"] + ("+denoiser" if args.denoiser else "")


def evaluate_checkpoint(args, checkpoint: str, datasets: dict[str, list[Path]], coder) -> list:
    """Per-image rows for one checkpoint over this rank's share of every set and level."""
    model, identity = load_for_inference(checkpoint)
    denoiser = load_denoiser(args.denoiser)
    rank, world = distributed.get_rank(), distributed.get_world_size()
    jobs = [(s, p) for s, paths in datasets.items() for p in paths[rank::world]]
    rows = []
    bar = tqdm(total=len(jobs) * len(args.levels), desc=Path(checkpoint).name, disable=rank != 0)
    for set_name, path in jobs:
        clean = center_crop(load_rgb(str(path)))
        for level in args.levels:
            noisy = noisy_at_level(clean, level, args.seed)
            scores = code_and_score(model, coder, noisy, clean, denoiser, args.repeats)
            rows.append(_row(args, checkpoint, identity, set_name, path, level, clean, scores))
            bar.update(1)
    bar.close()
    return rows


def _row(args, checkpoint, identity, set_name, path, level, clean, scores) -> dict:
    return {
        "name": curve_name(args, identity),
        "checkpoint": str(checkpoint),
        "quality": identity.get("quality"),
        "weights_sha256": identity["weights_sha256"],
        "set": set_name,
        "image": path.name,
        "level": level,
        "coder": args.coder,
        "height": clean.shape[-2],
        "width": clean.shape[-1],
        **scores,
    }


def gather_rows(rows: list[dict]) -> list[dict]:
    """All ranks' rows on rank 0 (an empty list elsewhere); identity on one process."""
    if distributed.get_world_size() == 1:
        return rows
    gathered = [None] * distributed.get_world_size() if distributed.is_main() else None
    dist.gather_object(rows, gathered, dst=0)
    return [row for part in gathered for row in part] if gathered else []


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) else math.nan


def aggregate(rows: list[dict]) -> dict[tuple[str, str, int], dict]:
    """Per-image rows → one CompressAI results dict per (name, set, level).

    Metrics are averaged per checkpoint over the images; entries are sorted by (quality, bpp).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["name"], row["set"], row["level"], row["checkpoint"])].append(row)
    curves: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for (name, set_name, level, checkpoint), members in groups.items():
        point = {m: _mean([r[m] for r in members]) for m in METRICS}
        point.update(checkpoint=checkpoint, quality=members[0]["quality"], images=len(members))
        curves[(name, set_name, level)].append(point)
    return {key: _results_json(key, points) for key, points in curves.items()}


def _results_json(key: tuple[str, str, int], points: list[dict]) -> dict:
    name, set_name, level = key
    points.sort(key=lambda p: (p["quality"] if p["quality"] is not None else -1, p["bpp"]))
    results = {m: [p[m] for p in points] for m in METRICS}
    results.update(quality=[p["quality"] for p in points], images=[p["images"] for p in points])
    return {
        "name": name,
        "description": f"{set_name}, noise level {level}, real bitstreams (ans), PSNR vs clean; "
        "bpp-estimate is the likelihood estimate",
        "set": set_name,
        "level": level,
        "checkpoints": [p["checkpoint"] for p in points],
        "results": results,
    }


def write_results(rows: list[dict], output: Path) -> list[Path]:
    """Write the per-(name, set, level) JSONs and per-image CSV/JSON; return the paths."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for (name, set_name, level), payload in sorted(aggregate(rows).items()):
        written.append(output / f"{name}-{set_name}-level{level}.json")
        write_json_atomic(written[-1], payload)
    for name in sorted({row["name"] for row in rows}):
        mine = [r for r in rows if r["name"] == name]
        mine.sort(key=lambda r: (r["set"], r["image"], r["level"], str(r["quality"])))
        written.append(output / f"{name}-per_image.json")
        write_json_atomic(written[-1], mine)
        written.append(output / f"{name}-per_image.csv")
        write_bytes_atomic(written[-1], _csv_bytes(mine))
    return written


def _csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def run(args) -> int:
    """Evaluate every checkpoint on every set and level; rank 0 writes the results."""
    check_arguments(args)
    datasets = parse_datasets(args.dataset, args.limit)
    torch.set_num_threads(args.threads)
    coder = get_coder(args.coder)
    rows = [
        row for ckpt in args.checkpoint for row in evaluate_checkpoint(args, ckpt, datasets, coder)
    ]
    rows = gather_rows(rows)
    if distributed.is_main():
        written = write_results(rows, Path(args.output))
        print(f"wrote {len(written)} files to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``jicd evaluate`` (also ``python -m jicd.evaluation.evaluate`` under torchrun)."""
    prog = "jicd evaluate"
    under_torchrun = bool(distributed.read_env())
    if under_torchrun:
        distributed.init_distributed()
    try:
        return run_guarded(prog, lambda: run(build_parser().parse_args(argv)))
    finally:
        if under_torchrun:
            distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
