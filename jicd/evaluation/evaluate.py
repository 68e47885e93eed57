"""Real-bitstream evaluation at the published noise levels (the protocol of docs/evaluation.md).

    jicd evaluate --checkpoint runs/q1/export/model.pt runs/q6/export/model.pt \\
        --dataset kodak=/data/kodak clic=/data/clic --levels 1 2 3 4 --output results/
    # sequential comparator: a plain Cheng2020Anchor state dict, optionally after a denoiser
    jicd evaluate --checkpoint anchor_q3.pth --denoiser dncnn.ts --dataset kodak=/data/kodak ...
    # the same, images strided over 8 processes (rank 0 gathers and writes)
    torchrun --nproc_per_node=8 -m jicd.evaluation.evaluate --checkpoint ... --threads 1
    # classical codecs and denoise-then-compress, through the same protocol (pipelines.py)
    jicd evaluate --pipeline avif jxl nlm+avif nlm+anchor_q3.pth --dataset kodak=/data/kodak ...

Each image is corrupted with the seeded noise of each level, then center-cropped to a multiple
of 64 (the authors' order, ``jicd.evaluation.protocol``), really compressed and decompressed on
CPU by the chosen coder, and scored against the clean crop (``psnr``: the authors' 8-bit
truncation; ``psnr-rgb``: CompressAI's rounding). Every results JSON records this protocol.
The papers' timing (Tables 2-3): ``--coder serial --threads 1 --repeats 3``. Outputs in
``--output``: ``{name}-{set}-level{L}.json`` (CompressAI's results layout, one entry per
checkpoint or classical quality, sorted by quality then bpp) and ``{name}-per_image.{csv,json}``;
``--save-images`` adds side-by-side pictures in ``panels/`` (``panels.py``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from jicd import distributed
from jicd.codec import get_coder
from jicd.command_line import OneLineParser, UserError, run_guarded
from jicd.evaluation import panels, pipelines
from jicd.evaluation.denoisers import TorchScriptDenoiser
from jicd.evaluation.protocol import (
    PairedImage,
    dataset_items,
    noisy_pairs,
    protocol_record,
    quality_scores,
)
from jicd.evaluation.results_files import results_file_name
from jicd.files import protect_inputs, write_bytes_atomic, write_json_atomic
from jicd.metrics import image_bpp
from jicd.models.weights import load_for_inference
from jicd.names import safe_name
from jicd.noise import EVALUATION_CHOICES, parse_noise

METRICS = (
    "psnr",
    "psnr-rgb",
    "ms-ssim-rgb",
    "bpp",
    "encoding_time",
    "decoding_time",
    "bpp-estimate",
)


def build_parser() -> OneLineParser:
    """Command-line options of ``jicd evaluate``."""
    parser = OneLineParser(prog="jicd evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", default=[], help="export(s) or anchors")
    parser.add_argument(
        "--pipeline",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="CODEC or DENOISER+CODEC; CODEC: jpeg webp avif jpeg2000 jxl or a checkpoint; "
        "DENOISER: nlm bm3d ffdnet torchscript:FILE",
    )
    parser.add_argument("--qualities", nargs="+", metavar="Q", help="Q … or CODEC=Q1,Q2,…")
    parser.add_argument("--workers", type=int, default=None, help="processes for classical rows")
    parser.add_argument("--save-images", action="store_true", help="side-by-side panels")
    parser.add_argument("--dataset", nargs="+", required=True, metavar="SET=DIR")
    parser.add_argument(
        "--levels",
        nargs="+",
        default=[1, 2, 3, 4],
        help=f"noise levels: {', '.join(EVALUATION_CHOICES)} (real pairs: their own noise)",
    )
    parser.add_argument("--output", required=True, help="results folder (created)")
    parser.add_argument("--coder", default="wavefront", choices=["wavefront", "serial"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of every image")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--repeats", type=int, default=1, help="coding runs averaged for times")
    parser.add_argument("--denoiser", default=None, help="TorchScript denoiser run before coding")
    parser.add_argument("--name", default=None, help="curve name (default: the model's arch)")
    return parser


def parse_datasets(specs: list[str], limit: int | None) -> dict[str, list[Path | PairedImage]]:
    """``["kodak=DIR", …]`` → ``{"kodak": [images or real pairs]}`` (:func:`dataset_items`)."""
    datasets: dict[str, list[Path | PairedImage]] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--dataset expects SET=DIR, got '{spec}'")
        datasets[name] = dataset_items(folder, limit)
    return datasets


def check_arguments(args) -> None:
    """Reject bad option values before any model is loaded."""
    args.levels = [parse_noise(level) for level in args.levels]
    if not args.checkpoint and not args.pipeline:
        raise UserError("nothing to evaluate: give --checkpoint FILE … and/or --pipeline SPEC …")
    for option in ("threads", "repeats", "limit", "workers"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option} must be >= 1, got {value}")
    for path in [*args.checkpoint, *([args.denoiser] if args.denoiser else [])]:
        if not Path(path).is_file():
            raise UserError(f"file not found: {path}")


def load_denoiser(path: str | None) -> TorchScriptDenoiser | None:
    """A TorchScript module mapping (1, 3, H, W) → (1, 3, H, W), or None."""
    return None if path is None else TorchScriptDenoiser(path)


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
def code_and_score(
    model, coder, noisy, clean, denoiser=None, repeats: int = 1, keep_image: bool = False
):
    """Compress ``noisy`` (1, 3, H, W) for real, decompress, and score against ``clean``.

    The optional denoiser runs inside the timed encode, as it is part of the sequential pipeline.
    Returns the scores, and with ``keep_image`` also the decoded (1, 3, H, W) image.
    """

    def encode():
        codec_input = denoiser(noisy).clamp(0, 1) if denoiser is not None else noisy
        return codec_input, coder.compress(model, codec_input)

    (codec_input, enc), enc_time = timed(encode, repeats)
    dec, dec_time = timed(lambda: coder.decompress(model, enc["strings"], enc["shape"]), repeats)
    num_bytes = sum(len(s) for streams in enc["strings"] for s in streams)
    scores = {
        **quality_scores(clean, dec["x_hat"], noisy, num_bytes),
        "bpp-estimate": estimated_bpp(model, codec_input),
        "encoding_time": enc_time,
        "decoding_time": dec_time,
        "entropy": enc.get("entropy", "float"),  # integer path when the export carries one
    }
    return (scores, dec["x_hat"].clamp(0, 1)) if keep_image else scores


def curve_name(args, identity: dict) -> str:
    """Name of the RD curve a checkpoint belongs to."""
    if args.name:
        return args.name
    return identity["arch"] + ("+denoiser" if args.denoiser else "")


def evaluate_checkpoint(
    args, checkpoint: str, datasets: dict[str, list[Path | PairedImage]], coder, pipe=None
):
    """Per-image rows for one checkpoint over this rank's share of every set and level.

    ``pipe``: the ``--pipeline`` this checkpoint comes from (its denoiser and curve name);
    None for ``--checkpoint`` (``--denoiser`` and ``--name``).
    """
    model, identity = load_for_inference(checkpoint)
    if pipe is None:
        denoiser, name = load_denoiser(args.denoiser), curve_name(args, identity)
        spec = f"torchscript:{args.denoiser}+{checkpoint}" if args.denoiser else checkpoint
    else:
        denoiser = pipelines.build_denoiser(pipe.denoiser) if pipe.denoiser else None
        name, spec = pipe.curve_name(identity["arch"]), pipe.spec
    rank, world = distributed.get_rank(), distributed.get_world_size()
    jobs = [(s, p) for s, paths in datasets.items() for p in paths[rank::world]]
    rows = []
    total = len(jobs) * len(args.levels)
    # closed on an error too, so that the error line starts on a line of its own
    with tqdm(total=total, desc=Path(checkpoint).name, disable=rank != 0) as bar:
        for set_name, path in jobs:
            for level, clean, noisy in noisy_pairs(path, args.levels, args.seed):
                scores = code_and_score(model, coder, noisy, clean, denoiser, args.repeats)
                row = _row(args, checkpoint, identity, set_name, path, level, clean, scores)
                rows.append({**row, "name": name, "pipeline": spec})
                bar.update(1)
    return rows


def _row(args, checkpoint, identity, set_name, path, level, clean, scores) -> dict:
    return {
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
    # on rank 0, gather_object replaces every None by that rank's list of rows
    gathered: list[Any] | None = (
        [None] * distributed.get_world_size() if distributed.is_main() else None
    )
    dist.gather_object(rows, gathered, dst=0)
    return [row for part in gathered for row in part] if gathered else []


def _mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) else math.nan


def aggregate(rows: list[dict]) -> dict[tuple[str, str, int], dict]:
    """Per-image rows → one CompressAI results dict per (name, set, level).

    Metrics are averaged per checkpoint over the images; entries are sorted by (quality, bpp).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        # A point is a checkpoint (learned) or a quality of the sweep (classical).
        key = (row["name"], row["set"], row["level"], row["checkpoint"], row["quality"])
        groups[key].append(row)
    curves: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for (name, set_name, level, checkpoint, quality), members in groups.items():
        point: dict[str, Any] = {m: _mean([r.get(m) for r in members]) for m in METRICS}
        point.update(checkpoint=checkpoint, quality=quality, images=len(members))
        point.update(pipeline=members[0].get("pipeline"))
        curves[(name, set_name, level)].append(point)
    return {key: _results_json(key, points) for key, points in curves.items()}


def _results_json(key: tuple[str, str, int], points: list[dict]) -> dict:
    name, set_name, level = key
    points.sort(key=lambda p: (p["quality"] if p["quality"] is not None else -1, p["bpp"]))
    results = {m: [p[m] for p in points] for m in METRICS}
    results.update(quality=[p["quality"] for p in points], images=[p["images"] for p in points])
    return {
        "name": name,
        "description": f"{set_name}, noise level {level}, {_coded(points)}, PSNR vs clean; "
        "bpp-estimate is the likelihood estimate",
        "set": set_name,
        "level": level,
        "checkpoints": [p["checkpoint"] for p in points],
        "pipeline": pipelines.describe(points[0]["pipeline"]),
        "results": results,
    }


def _coded(points: list[dict]) -> str:
    # Learned points have a checkpoint and ANS bitstreams; classical ones a whole image file.
    return "real bitstreams (ans)" if points[0]["checkpoint"] else "real files (classical codec)"


def write_results(rows: list[dict], output: Path, protocol: dict | None = None) -> list[Path]:
    """Write the per-(name, set, level) JSONs and per-image CSV/JSON; return the paths.

    ``protocol`` (``jicd.evaluation.protocol.protocol_record``) goes into every results JSON.
    """
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for (name, set_name, level), payload in sorted(
        aggregate(rows).items(), key=lambda kv: tuple(map(str, kv[0]))
    ):
        if protocol is not None:
            payload["protocol"] = protocol
        written.append(output / results_file_name(name, set_name, level))
        write_json_atomic(written[-1], payload)
    for name in sorted({row["name"] for row in rows}):
        mine = [r for r in rows if r["name"] == name]
        mine.sort(key=lambda r: (r["set"], r["image"], str(r["level"]), str(r["quality"])))
        written.append(output / (safe_name(f"{name}-per_image") + ".json"))
        write_json_atomic(written[-1], mine)
        written.append(output / (safe_name(f"{name}-per_image") + ".csv"))
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
    specs = [pipelines.parse_pipeline(spec) for spec in args.pipeline]
    sweeps = pipelines.parse_qualities(args.qualities, specs)
    rows = [
        row for ckpt in args.checkpoint for row in evaluate_checkpoint(args, ckpt, datasets, coder)
    ]
    for pipe in (p for p in specs if p.learned):
        rows += evaluate_checkpoint(args, pipe.codec, datasets, coder, pipe)
    rows += run_classical_rows(args, specs, datasets, sweeps)
    rows = gather_rows(rows)
    if distributed.is_main():
        with protect_inputs(input_files(args, datasets)):
            protocol = protocol_record(args.coder, args.seed, args.repeats, args.threads)
            written = write_results(rows, Path(args.output), protocol)
            if args.save_images:
                written += save_panels(args, rows, datasets, coder)
        print(f"wrote {len(written)} files to {args.output}")
    return 0


def input_files(args, datasets: dict[str, list]) -> list:
    """Every file this evaluation read: checkpoints, the denoiser, the images (never outputs)."""
    files = [*args.checkpoint, *([args.denoiser] if args.denoiser else [])]
    for items in datasets.values():
        for item in items:
            files += [item] if isinstance(item, Path) else [item.noisy, item.clean]
    return [path for path in files if path is not None]


def run_classical_rows(args, specs, datasets, sweeps) -> list[dict]:
    """This rank's rows of the classical pipelines, on ``--workers`` processes."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    jobs = pipelines.classical_jobs(specs, datasets, args.levels, args.seed, sweeps, rank, world)
    if not jobs:
        return []
    workers = args.workers or (pipelines.default_workers() if world == 1 else 1)
    start = time.perf_counter()
    rows = pipelines.run_classical(jobs, workers, show_progress=rank == 0)
    if rank == 0:
        seconds = time.perf_counter() - start
        print(f"classical pipelines: {len(rows)} rows in {seconds:.1f} s on {workers} process(es)")
    return rows


def save_panels(args, rows: list[dict], datasets, coder) -> list[Path]:
    """``--save-images``: side-by-side pictures of every image and level (rank 0)."""
    models: dict[str, torch.nn.Module] = {}

    def reconstruct(row: dict, noisy: torch.Tensor) -> torch.Tensor:
        pipe = pipelines.parse_pipeline(row["pipeline"])
        if not pipe.learned:
            return pipelines.reconstruct_classical(pipe, row["quality"], noisy)
        if row["checkpoint"] not in models:
            models[row["checkpoint"]] = load_for_inference(row["checkpoint"])[0]
        denoiser = pipelines.build_denoiser(pipe.denoiser) if pipe.denoiser else None
        model = models[row["checkpoint"]]
        return code_and_score(model, coder, noisy, noisy, denoiser, keep_image=True)[1]

    names = list(dict.fromkeys(row["name"] for row in rows))
    folder = Path(args.output) / "panels"
    written = panels.write_panels(rows, datasets, names, args.seed, folder, reconstruct)
    for path in written:
        print(f"panel: {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    """``jicd evaluate`` (also ``python -m jicd.evaluation.evaluate`` under torchrun)."""
    prog = "jicd evaluate"
    under_torchrun = bool(distributed.read_env())
    if under_torchrun:
        # Coding runs on the CPU: one process per core, whatever GPUs the node has.
        distributed.init_distributed(device="cpu")
    try:
        return run_guarded(prog, lambda: run(build_parser().parse_args(argv)))
    finally:
        if under_torchrun:
            distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
