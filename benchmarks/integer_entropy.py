"""The integer entropy path's price (rate) and the float path's risk (cross-ISA, GPU indices).

Run from the repository root (figures and the commands that made them: docs/integer-entropy.md)::

    .venv/bin/python benchmarks/integer_entropy.py rate --checkpoint q3.pt q6.pt \\
        --dataset kodak=../shared/data/kodak bsds=../shared/data/train-mini/bsds500-val \\
        --levels 1 4 --limit 6 [--calibration DIR]
    .venv/bin/python benchmarks/integer_entropy.py cross-isa --checkpoint q3.pt \\
        --dataset kodak=../shared/data/kodak --limit 12
    .venv/bin/python benchmarks/integer_entropy.py gpu-drift --checkpoint q3.pt \\
        --dataset kodak=../shared/data/kodak --limit 12                        # needs a GPU

``rate``: every image (the evaluation protocol's seeded noise of each level, centre crop) is
really coded by the wavefront coder with the float and with the integer path of the same
weights; prints bytes, the rate change and PSNR (vs the clean image) of each path. A float
export is integerized first (``--calibration DIR``, default: the built-in generated images);
an integerized export is used as it is. ``cross-isa``: encodes with the float and the integer
path under ``ONEDNN_MAX_CPU_ISA=AVX2`` (1 thread) and decodes under ``SSE41`` (2 threads) and
``ATEN_CPU_CAPABILITY=default`` (1 thread), in subprocesses; counts files decoded ``exact``
(latent and indices bit for bit), ``close`` (same indices, latent within float noise: the float
path's means), ``refused`` (float path: index checksum) and ``wrong``. ``gpu-drift``: the float
path's CDF indices computed on the GPU (``h_s``, context and head on CUDA in float32,
replaying the CPU encoder's latent) against the CPU's: the share of differing indices and of
images with any (a file whose indices came from the GPU would be refused by a CPU decoder),
with TF32 allowed (PyTorch's default for convolutions) and disabled.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jicd.codec import get_coder  # noqa: E402
from jicd.codec.integer.calibration import (  # noqa: E402
    folder_images,
    generated_images,
    noisy_versions,
)
from jicd.codec.integer.convert import integerize  # noqa: E402
from jicd.codec.integer.export import attach, write_integerized  # noqa: E402
from jicd.codec.integer.isa_check import Setting, run_cross_isa, summarise  # noqa: E402
from jicd.codec.schedule import WavefrontNet  # noqa: E402
from jicd.codec.wavefront import analyse, encode_latent_checked  # noqa: E402
from jicd.distributed import single_thread  # noqa: E402
from jicd.evaluation.protocol import PairedImage, dataset_items, noisy_pairs  # noqa: E402
from jicd.metrics import psnr_8bit  # noqa: E402
from jicd.models.weights import load_for_inference, read_export  # noqa: E402

ENCODER = Setting({"ONEDNN_MAX_CPU_ISA": "AVX2"}, threads=1)
DECODERS = [
    Setting({"ONEDNN_MAX_CPU_ISA": "SSE41"}, threads=2),
    Setting({"ATEN_CPU_CAPABILITY": "default"}, threads=1),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["rate", "cross-isa", "gpu-drift"])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="jicd exports")
    parser.add_argument("--dataset", nargs="+", required=True, metavar="SET=DIR")
    parser.add_argument("--levels", nargs="+", type=int, default=[1], help="noise levels")
    parser.add_argument("--limit", type=int, default=6, help="first N images of each set")
    parser.add_argument("--calibration", default=None, help="calibration folder (float exports)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (rate)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def datasets(specs: list[str], limit: int) -> dict[str, list[Path | PairedImage]]:
    sets = {}
    for spec in specs:
        name, _, folder = spec.partition("=")
        sets[name] = dataset_items(folder, limit)
    return sets


def integer_model(path: str, calibration: str | None):
    """``(model, identity, how)``: the export's integer path, or a fresh calibration of it."""
    model, identity = load_for_inference(path)
    if identity["entropy"] == "integer":
        return model, identity, "export's own"
    clean = folder_images(calibration) if calibration else generated_images()
    net = integerize(model, noisy_versions(clean), description=calibration or "generated")
    attach(model, net.payload(), path)
    return model, identity, f"calibrated on {calibration or 'generated images'}"


def integerized_file(path: str, folder: Path, calibration: str | None) -> str:
    """An integerized copy of a float export (the export itself if it is integerized)."""
    payload, model, _ = read_export(path)
    if payload.get("integer_entropy") is not None:
        return path
    clean = folder_images(calibration) if calibration else generated_images()
    net = integerize(model.eval(), noisy_versions(clean), description=calibration or "generated")
    target = folder / f"{Path(path).stem}-int.pt"
    write_integerized(payload, net, path, target)
    return str(target)


@torch.inference_mode()
def rate(args: argparse.Namespace) -> list[dict]:
    """One row per (checkpoint, set, level): bytes, rate change, PSNR of both paths."""
    coder, rows = get_coder("wavefront"), []
    for checkpoint in args.checkpoint:
        model, identity, how = integer_model(checkpoint, args.calibration)
        for set_name, items in datasets(args.dataset, args.limit).items():
            for level in args.levels:
                totals = {"float": [0, 0.0], "integer": [0, 0.0]}
                largest = 0.0
                for item in items:
                    _, clean, noisy = noisy_pairs(item, [level], seed=0)[0]
                    decoded = {}
                    for path, total in totals.items():
                        out = coder.compress(model, noisy, entropy=path)
                        total[0] += sum(len(s) for part in out["strings"] for s in part)
                        x_hat = coder.decompress(model, out["strings"], out["shape"],
                                                 entropy=path)["x_hat"]  # fmt: skip
                        total[1] += psnr_8bit(clean, x_hat) / len(items)
                        decoded[path] = x_hat
                    diff = (decoded["float"] - decoded["integer"]).abs().max()
                    largest = max(largest, float(diff))
                rows.append({
                    "checkpoint": checkpoint, "quality": identity["quality"], "set": set_name,
                    "level": level, "images": len(items), "integer_model": how,
                    "float_bytes": totals["float"][0], "integer_bytes": totals["integer"][0],
                    "rate_change_percent": 100 * (totals["integer"][0] / totals["float"][0] - 1),
                    "float_psnr": totals["float"][1], "integer_psnr": totals["integer"][1],
                    "max_abs_x_hat_diff": largest,
                })  # fmt: skip
                print(format_rate(rows[-1]), flush=True)
    return rows


def markdown_row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def format_rate(row: dict) -> str:
    return markdown_row(
        Path(row["checkpoint"]).name, row["set"], row["level"], row["images"],
        row["float_bytes"], row["integer_bytes"], f"{row['rate_change_percent']:+.3f} %",
        f"{row['float_psnr']:.3f}", f"{row['integer_psnr']:.3f}",
        f"{row['max_abs_x_hat_diff']:.1e}",
    )  # fmt: skip


def cross_isa(args: argparse.Namespace) -> list[dict]:
    """Files exact / close / refused / wrong per decoder setting, float and integer path."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="jicd-isa-") as tmp:
        folder = Path(tmp)
        exports = {}
        for i, checkpoint in enumerate(args.checkpoint):
            exports[f"{i}-float"] = checkpoint
            exports[f"{i}-integer"] = integerized_file(checkpoint, folder, args.calibration)
        for set_name, items in datasets(args.dataset, args.limit).items():
            for level in args.levels:
                images = [str(p) for p in items]
                work = folder / f"{set_name}-{level}"
                encoded, decoded = run_cross_isa(exports, images, ENCODER, DECODERS, work, level)
                for setting, result in zip(DECODERS, decoded, strict=True):
                    probe_differs = result["probe"] != encoded["probe"]
                    for name, counts in summarise(encoded, result).items():
                        index, path = name.split("-")
                        rows.append({
                            "checkpoint": args.checkpoint[int(index)], "path": path,
                            "set": set_name, "level": level, "decoder": setting.label(),
                            "float32_differs": probe_differs, **counts,
                        })  # fmt: skip
                        print(format_isa(rows[-1]), flush=True)
    return rows


def format_isa(row: dict) -> str:
    return markdown_row(
        Path(row["checkpoint"]).name, row["path"], row["set"], row["level"],
        f"{ENCODER.label()} → {row['decoder']}", row["float32_differs"], row["exact"],
        row["close"], row["refused"], row["wrong"],
    )  # fmt: skip


@torch.inference_mode()
def gpu_drift(args: argparse.Namespace) -> list[dict]:
    """Float-path indices on the GPU vs the CPU, replaying the CPU encoder's latent."""
    if not torch.cuda.is_available():
        raise SystemExit("gpu-drift needs a GPU (torch.cuda.is_available() is False)")
    rows = []
    for checkpoint in args.checkpoint:
        model, _ = load_for_inference(checkpoint)
        gpu = copy.deepcopy(model).cuda()
        for set_name, items in datasets(args.dataset, args.limit).items():
            for tf32 in (True, False):
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
                counts = [0, 0, 0]  # differing indices, all indices, images with any
                for item in items:
                    noisy = noisy_pairs(item, [args.levels[0]], seed=0)[0][2]
                    differ, total = index_drift(model, gpu, noisy)
                    counts = [counts[0] + differ, counts[1] + total, counts[2] + (differ > 0)]
                rows.append({
                    "checkpoint": checkpoint, "set": set_name, "tf32": tf32,
                    "images": len(items), "differing_indices": counts[0],
                    "indices": counts[1], "images_with_any": counts[2],
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    return rows


def index_drift(model, gpu, noisy: torch.Tensor) -> tuple[int, int]:
    """``(differing, total)`` float-path CDF indices of one image, GPU vs CPU."""
    y, z_strings, z_shape, params = analyse(model, noisy)
    _, y_hat, _ = encode_latent_checked(model, y, params)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z_shape)
    with single_thread():
        cpu = replay_indices(model, params, y_hat)
    device = next(gpu.parameters()).device
    gpu_params = gpu.h_s(z_hat.to(device))
    found = replay_indices(gpu, gpu_params, y_hat.to(device)).cpu()
    return int((found != cpu).sum()), cpu.numel()


def replay_indices(model, params: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The float path's indices, wavefront by wavefront, on the device of ``params``."""
    net = WavefrontNet(model, params)
    device = params.device
    schedule = net.schedule
    gather, padded = schedule.gather.to(device), schedule.padded.to(device)
    schedule.gather = gather  # predict() reads the gather indices from the schedule
    rows = y_hat[0].flatten(1).t()[schedule.order.to(device)]
    grid, indices = net.new_grid(device), []
    for step in range(len(schedule.bounds) - 1):
        index, _, span = net.predict(grid, step)
        indices.append(index)
        grid.index_copy_(0, padded[span], rows[span])
    return torch.cat(indices)


def table_head(*names: str) -> str:
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "rate":
        print(table_head("export", "set", "level", "images", "float B", "integer B", "rate",
                         "float PSNR", "integer PSNR", "max abs x_hat diff"))  # fmt: skip
        rows = rate(args)
    elif args.command == "cross-isa":
        print(table_head("export", "path", "set", "level", "encode → decode",
                         "float32 differs", "exact", "close", "refused", "wrong"))  # fmt: skip
        rows = cross_isa(args)
    else:
        rows = gpu_drift(args)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
