"""Cross-instruction-set check: encode under one CPU setting, decode under others.

    python -m jicd.codec.integer.isa_check JOB.json        (the worker; see run_cross_isa)

oneDNN and ATen pick their float kernels from the CPU's instruction set when a process starts
(``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``), so each setting needs its own process.
:func:`run_cross_isa` starts one encoder and several decoders and :func:`summarise` compares
what they derived: integer-path files must decode to the encoder's latent and CDF indices;
float-path files decode to the encoder's latent or are refused (their index checksum). Each
worker also hashes a few float32 operations (``probe``), which shows whether the settings
really computed float32 differently. Used by the cross-ISA tests and by
``benchmarks/integer_entropy.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from jicd.codec import format as jicd_format
from jicd.codec import wavefront
from jicd.codec.image_coding import check_compatible, compress_image
from jicd.codec.images import load_rgb, pad_to_block
from jicd.codec.integer import coder as integer_coder
from jicd.codec.integer.gemm import kernel_for
from jicd.codec.placement import analysis_transforms
from jicd.errors import UserError

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
REPO = Path(__file__).resolve().parents[3]
FLOAT_NOISE = 1e-3  # float path: same symbols, means differing in their last bits


@dataclass(frozen=True)
class Setting:
    """A process's CPU arithmetic: ISA environment variables and a thread count."""

    env: dict[str, str] = field(default_factory=dict)
    threads: int = 1

    def label(self) -> str:
        return " ".join([f"{k}={v}" for k, v in self.env.items()] + [f"threads={self.threads}"])


def run_cross_isa(
    exports: dict[str, str],
    images: list[str],
    encoder: Setting,
    decoders: list[Setting],
    folder: Path,
    level: int | None = None,
    timeout: float = 3600,
) -> tuple[dict, list[dict]]:
    """Encode every image with every export under ``encoder``; decode under each decoder.

    Args:
        exports: name → export path (float or integerized: each codes with its default path).
        images: image files; with ``level`` the protocol's noisy centre crop is coded.
        folder: scratch folder (``.jicd`` files and the workers' results).

    Returns:
        ``(encoded, [decoded per decoder])``: worker results (:func:`worker`).
    """
    job = {"exports": exports, "images": images, "level": level}
    folder.mkdir(parents=True, exist_ok=True)
    encoded = _finish(_start(job, encoder, folder, "encode"), folder, "encode", timeout)
    running = []
    for i, setting in enumerate(decoders):
        sub = folder / f"decoder{i}"
        sub.mkdir(exist_ok=True)
        for coded in folder.glob("*.jicd"):
            (sub / coded.name).write_bytes(coded.read_bytes())
        running.append((_start(job, setting, sub, "decode"), sub))
    return encoded, [_finish(proc, sub, "decode", timeout) for proc, sub in running]


def summarise(encoded: dict, decoded: dict) -> dict[str, dict[str, int]]:
    """Per export, files decoded ``exact`` (latent and indices bit for bit), ``close`` (same
    indices, latent within float noise: the float path's means), ``refused`` and ``wrong``."""
    summary: dict[str, dict[str, int]] = {}
    for key, result in decoded.items():
        if not isinstance(result, dict):
            continue
        counts = summary.setdefault(
            key.split("/")[0], {"exact": 0, "close": 0, "refused": 0, "wrong": 0}
        )
        counts[_outcome(result, encoded[key])] += 1
    return summary


def _outcome(decoded: dict, encoded: dict) -> str:
    if decoded["error"] is not None:
        return "refused"
    if not torch.equal(decoded["indices"], encoded["indices"]):
        return "wrong"
    if torch.equal(decoded["latent"], encoded["latent"]):
        return "exact"
    difference = (decoded["latent"].double() - encoded["latent"].double()).abs().max()
    return "close" if float(difference) < FLOAT_NOISE else "wrong"


def _start(job: dict, setting: Setting, folder: Path, mode: str) -> subprocess.Popen:
    job = {**job, "mode": mode, "threads": setting.threads, "folder": str(folder)}
    job_path = folder / f"{mode}-job.json"
    job_path.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    python_path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(setting.env, PYTHONPATH=python_path, OMP_NUM_THREADS=str(setting.threads))
    return subprocess.Popen(
        [sys.executable, "-m", "jicd.codec.integer.isa_check", str(job_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, folder: Path, mode: str, timeout: float) -> dict:
    output, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed ({proc.returncode}):\n{output[-3000:]}")
    return torch.load(folder / f"{mode}.pt", weights_only=False)


def float_probe() -> str:
    """Digest of a float32 5×5 convolution, matmul and reduction: shows the arithmetic in use."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 16, 16, generator=generator)
    w = torch.randn(64, 32, 5, 5, generator=generator)
    a = torch.randn(128, 256, generator=generator)
    parts = [F.conv2d(x, w, padding=2), a @ a.t(), a.exp().sum(1)]
    return hashlib.sha256(b"".join(p.numpy().tobytes() for p in parts)).hexdigest()


def worker(job_path: str) -> int:
    """Encode (write ``.jicd`` files) or decode them; save ``<mode>.pt`` with, per
    ``"<export>/<image>"``, the ``latent`` (``y_int`` or float ``y_hat``), the ``indices``
    (integer path: all CDF indices in coding order; float path: their CRC32) and ``error``."""
    from jicd.models.weights import load_for_inference

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(job["threads"]))
    folder = Path(job["folder"])
    results: dict = {
        "probe": float_probe(),
        "threads": torch.get_num_threads(),
        "gemm": kernel_for(torch.device("cpu")),  # which exact kernel this setting allows
    }
    for name, export in job["exports"].items():
        model, identity = load_for_inference(export)
        for image in map(Path, job["images"]):
            key = f"{name}/{image.stem}"
            target = folder / f"{name}-{image.stem}.jicd"
            if job["mode"] == "encode":
                x = input_image(image, job.get("level"))
                results[key] = encode_file_latent(model, identity, x, target)
            else:
                results[key] = decode_file_latent(model, identity, target)
    torch.save(results, folder / f"{job['mode']}.pt")
    return 0


def input_image(path: Path, level: int | None) -> torch.Tensor:
    """The image (``level`` None) or the evaluation protocol's noisy centre crop at ``level``."""
    if level is None:
        return load_rgb(str(path))
    from jicd.evaluation.protocol import noisy_pairs

    return noisy_pairs(path, [level], seed=0)[0][2]


def replayed_indices(net, params: torch.Tensor, y_int: torch.Tensor) -> torch.Tensor:
    """The CDF indices of every wavefront of a coded latent ``(1, M, H, W)``, in coding order."""
    front = integer_coder.IntegerWavefront(net, params)
    rows = y_int[0].flatten(1).t()[front.order]
    indices = []
    for step in range(front.steps):
        index, _, span = front.predict(step)
        indices.append(index)
        front.store(span, rows[span])
    return torch.cat(indices).cpu()


@torch.inference_mode()
def encode_file_latent(model, identity: dict, x: torch.Tensor, target: Path) -> dict:
    """Write ``x``'s ``.jicd`` file; return the encoder's latent and indices (as :func:`worker`)."""
    coded = compress_image(model, identity, x, "wavefront")
    jicd_format.write(str(target), coded)
    y, z = analysis_transforms(model, pad_to_block(x))
    if coded.entropy == "integer":
        net = model.integer_entropy
        params = net.hyper_params(integer_coder.encode_z(net, z)[1])
        string, y_int, check = integer_coder.encode_latent(net, y, params)
        result = {"latent": y_int.cpu(), "indices": replayed_indices(net, params, y_int)}
    else:
        params = wavefront.analyse(model, pad_to_block(x))[3]
        string, y_hat, check = wavefront.encode_latent_checked(model, y, params)
        result = {"latent": y_hat, "indices": torch.tensor(check)}
    if string != coded.streams[0] or check != coded.index_check:
        raise RuntimeError("the encoder is not deterministic within one process")
    return {**result, "error": None}


@torch.inference_mode()
def decode_file_latent(model, identity: dict, path: Path) -> dict:
    """Decode a ``.jicd`` file's latent and indices, or record the refusal's message."""
    coded = jicd_format.read(str(path))
    check_compatible(coded, identity)
    try:
        if coded.entropy == "integer":
            net = model.integer_entropy
            params = net.hyper_params(
                integer_coder.decode_z(net, coded.streams[1], coded.latent_shape)
            )
            y_int = integer_coder.decode_latent(net, coded.streams[0], params, coded.index_check)
            return {"latent": y_int.cpu(), "indices": replayed_indices(net, params, y_int),
                    "error": None}  # fmt: skip
        z_hat = model.entropy_bottleneck.decompress([coded.streams[1]], coded.latent_shape)
        params = wavefront.hyper_params(model, z_hat)
        y_hat = wavefront.decode_latent(model, coded.streams[0], params, coded.index_check)
        return {"latent": y_hat, "indices": torch.tensor(coded.index_check), "error": None}
    except UserError as err:
        return {"latent": None, "indices": None, "error": str(err)}


@torch.inference_mode()
def cross_device_round_trip(model, x: torch.Tensor, encoder: str, decoder: str) -> dict:
    """Encode ``x (1, 3, H, W)`` with the integer path on one device, decode on another.

    ``model`` carries an integer entropy model; copies of it are moved to ``encoder`` and
    ``decoder`` (e.g. "cuda" and "cpu"). Returns ``{"bytes", "same_params", "same_latent",
    "indices"}``: whether the decoder's ``h_s`` output and latent equal the encoder's, bit for
    bit (the integer path's promise), and how many distinct CDF indices the image used.
    """
    sides = {}
    for role, device in (("enc", encoder), ("dec", decoder)):
        sides[role] = copy.deepcopy(model).to(device).integer_entropy
    net = sides["enc"]
    y, z = analysis_transforms(copy.deepcopy(model).to(encoder), x)
    z_string, z_int = integer_coder.encode_z(net, z)
    params = net.hyper_params(z_int)
    string, y_int, check = integer_coder.encode_latent(net, y, params)
    other = sides["dec"]
    z_back = integer_coder.decode_z(other, z_string, (z.shape[-2], z.shape[-1]))
    params_back = other.hyper_params(z_back)
    y_back = integer_coder.decode_latent(other, string, params_back, check)
    return {
        "bytes": len(string) + len(z_string),
        "same_params": torch.equal(params_back.cpu(), params.cpu()),
        "same_latent": torch.equal(y_back.cpu(), y_int.cpu()),
        "indices": int(replayed_indices(net, params, y_int).unique().numel()),
    }


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
