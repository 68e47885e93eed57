"""``--pipeline SPEC``: parsing, quality sweeps, and the classical rows of ``jicd evaluate``.

``SPEC`` is ``CODEC`` or ``DENOISER+CODEC``: ``CODEC`` a classical codec (``jpeg``, ``webp``,
``avif``, ``jpeg2000``, ``jxl``; :mod:`jicd.evaluation.classical`) or a checkpoint file,
``DENOISER`` one of :mod:`jicd.evaluation.denoisers` (``nlm``, ``bm3d``, ``ffdnet``,
``torchscript:FILE``). Learned codecs are run by ``evaluate.py``; classical ones here, one job per
(image, level) spread over worker processes (the denoiser runs once per job, then every quality of
the sweep codes its output).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from jicd.codec import images
from jicd.errors import UserError
from jicd.evaluation.classical import CODECS, ClassicalCodec, codec_choices, get_codec
from jicd.evaluation.denoisers import (
    build_denoiser,
    denoiser_choices,
    describe_denoiser,
    is_denoiser_spec,
)
from jicd.evaluation.protocol import PairedImage, levels_for, noisy_pairs, quality_scores


@dataclass(frozen=True)
class Pipeline:
    """One parsed ``--pipeline`` SPEC.

    Attributes:
        spec: The SPEC as given.
        denoiser: Denoiser spec, or None.
        codec: Classical codec name or checkpoint path.
    """

    spec: str
    denoiser: str | None
    codec: str

    @property
    def learned(self) -> bool:
        """True when the codec is a checkpoint."""
        return self.codec not in CODECS

    def curve_name(self, arch: str | None = None) -> str:
        """``avif``, ``nlm+avif``, ``nlm+cheng2020-anchor`` (``arch`` names a checkpoint)."""
        base = arch if self.learned else self.codec
        assert base is not None, "a checkpoint's curve is named after its arch"
        if self.denoiser is None:
            return base
        label = self.denoiser
        if label.startswith("torchscript:"):
            label = "ts-" + Path(label.split(":", 1)[1]).stem
        return f"{label}+{base}"


def split_spec(spec: str) -> Pipeline:
    """``[DENOISER+]CODEC`` → its parts, unchecked (a path containing ``+`` stays a codec)."""
    denoiser, plus, codec = spec.partition("+")
    if not plus or Path(spec).is_file():
        return Pipeline(spec, None, spec)
    return Pipeline(spec, denoiser, codec)


def parse_pipeline(spec: str) -> Pipeline:
    """Parse and check one SPEC (codec known and usable, files present, extras installed)."""
    pipe = split_spec(spec)
    denoiser, codec = pipe.denoiser, pipe.codec
    if denoiser is not None and not is_denoiser_spec(denoiser):
        raise UserError(
            f"unknown denoiser '{denoiser}' in --pipeline {spec}; choose from {denoiser_choices()}"
        )
    if codec in CODECS:
        get_codec(codec)
    elif not Path(codec).is_file():
        raise UserError(
            f"unknown codec '{codec}' in --pipeline {spec}; choose from {codec_choices()}"
        )
    if denoiser is not None:
        build_denoiser(denoiser)  # missing extra or bad TorchScript file: fail before any work
    return Pipeline(spec, denoiser, codec)


def parse_qualities(tokens: list[str] | None, pipelines: list[Pipeline]) -> dict[str, tuple]:
    """The quality sweep of every classical codec in ``pipelines``.

    ``tokens``: ``Q …`` (for every classical codec) and/or ``CODEC=Q1,Q2,…`` (for one codec);
    None keeps every codec's default sweep.
    """
    names = sorted({p.codec for p in pipelines if not p.learned}, key=list(CODECS).index)
    if tokens and not names:
        raise UserError("--qualities applies to classical codecs, and --pipeline names none")
    shared: list[float] = []
    own: dict[str, list[float]] = {}
    for token in tokens or []:
        codec, eq, values = token.rpartition("=")
        if eq and codec not in names:
            raise UserError(
                f"--qualities {token}: codec '{codec}' is not in --pipeline "
                f"(classical codecs there: {', '.join(names)})"
            )
        target = own.setdefault(codec, []) if eq else shared
        target += [_number(value, token) for value in values.split(",")]
    sweeps = {}
    for name in names:
        sweep = own.get(name) or shared or list(CODECS[name].qualities)
        sweeps[name] = tuple(sorted({CODECS[name].check_quality(v) for v in sweep}))
    return sweeps


def _number(text: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"--qualities: '{token}' is not a number list (Q … or CODEC=Q1,Q2,…)")
    return value


def to_uint8(image: Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` float in [0, 1] → ``(H, W, 3)`` uint8, rounded as a file stores it."""
    return images.to_uint8(image).numpy()


def code_classical(codec: ClassicalCodec, codec_input: Tensor, quality: float) -> tuple:
    """Encode ``codec_input`` (1, 3, H, W) at ``quality``, decode it.

    Returns:
        ``(decoded (1, 3, H, W) float, file size in bytes, encode s, decode s)``.
    """
    array = to_uint8(codec_input)
    start = time.perf_counter()
    data = codec.encode(array, quality)
    encoded = time.perf_counter()
    decoded = codec.decode(data)
    decode_time = time.perf_counter() - encoded
    if decoded.shape != array.shape:
        raise RuntimeError(f"{codec.name} decoded {decoded.shape}, encoded {array.shape}")
    x_hat = images.from_uint8(decoded)  # a copy: decoders may return read-only arrays
    return x_hat, len(data), encoded - start, decode_time


_CACHE: dict = {}


def _cached(kind: str, spec: str | None):
    """One codec / denoiser object per process (FFDNet loads its weights once)."""
    if spec is None:
        return None
    if (kind, spec) not in _CACHE:
        build = get_codec if kind == "codec" else build_denoiser
        _CACHE[(kind, spec)] = build(spec)
    return _CACHE[(kind, spec)]


def denoise(pipeline: Pipeline, noisy: Tensor) -> tuple[Tensor, float, float | None]:
    """The codec input of ``pipeline``: ``(image, denoise seconds, estimated σ or None)``."""
    denoiser = _cached("denoiser", pipeline.denoiser)
    if denoiser is None:
        return noisy, 0.0, None
    start = time.perf_counter()
    output = denoiser(noisy)
    return output, time.perf_counter() - start, denoiser.last_sigma


def reconstruct_classical(pipeline: Pipeline, quality: float, noisy: Tensor) -> Tensor:
    """The decoded image of ``pipeline`` at ``quality`` (for the panels)."""
    codec_input, _, _ = denoise(pipeline, noisy)
    return code_classical(_cached("codec", pipeline.codec), codec_input, quality)[0]


@dataclass(frozen=True)
class Job:
    """One classical job: every quality of one pipeline on one image at one level."""

    pipeline: Pipeline
    set_name: str
    path: Path | PairedImage
    level: int
    seed: int
    qualities: tuple


def run_job(job: Job) -> list[dict]:
    """Per-image rows of one job (runs in a worker process or in-process)."""
    ((_, clean, noisy),) = noisy_pairs(job.path, [job.level], job.seed)
    codec = _cached("codec", job.pipeline.codec)
    codec_input, denoise_time, sigma = denoise(job.pipeline, noisy)
    rows = []
    for quality in job.qualities:
        x_hat, num_bytes, enc_time, dec_time = code_classical(codec, codec_input, quality)
        rows.append(
            {
                "name": job.pipeline.curve_name(),
                "pipeline": job.pipeline.spec,
                "checkpoint": None,
                "quality": quality,
                "set": job.set_name,
                "image": job.path.name,
                "level": job.level,
                "coder": codec.library(),
                "height": clean.shape[-2],
                "width": clean.shape[-1],
                **quality_scores(clean, x_hat, noisy, num_bytes),
                "bpp-estimate": math.nan,  # no model, no likelihoods
                # The denoiser is part of the encoder, as in the learned sequential pipeline.
                "encoding_time": denoise_time + enc_time,
                "decoding_time": dec_time,
                "denoise_time": denoise_time,
                "denoiser_sigma": sigma,
            }
        )
    return rows


def _init_worker() -> None:
    # One core per process: the workers are the parallelism.
    torch.set_num_threads(1)


def default_workers() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # None: the count is unknown


def _finished(jobs: list[Job], workers: int) -> Iterator[tuple[int, list[dict]]]:
    """``(job index, rows)`` as jobs finish, on ``workers`` processes (in-process for 1)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from ((index, run_job(job)) for index, job in enumerate(jobs))
        return
    # fork (as torch's DataLoader workers): a spawned worker would spend seconds re-importing
    # torch and CompressAI; the initializer drops each child to one intra-op thread.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=get_context(method), initializer=_init_worker
    ) as pool:
        futures = {pool.submit(run_job, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_classical(jobs: list[Job], workers: int, show_progress: bool = True) -> list[dict]:
    """Run ``jobs`` on ``workers`` processes with a progress bar; rows in job order."""
    results: list[list[dict]] = [[] for _ in jobs]
    with tqdm(total=len(jobs), desc="classical pipelines", disable=not show_progress) as bar:
        for index, rows in _finished(jobs, workers):
            results[index] = rows
            bar.update(1)
    return [row for rows in results for row in rows]


def classical_jobs(
    pipelines: list[Pipeline],
    datasets: dict[str, list[Path | PairedImage]],
    levels: list[int],
    seed: int,
    sweeps: dict[str, tuple],
    rank: int = 0,
    world: int = 1,
) -> list[Job]:
    """Every (pipeline, image, level) job of this rank (images strided over ranks)."""
    return [
        Job(pipeline, set_name, path, level, seed, sweeps[pipeline.codec])
        for pipeline in pipelines
        if not pipeline.learned
        for set_name, paths in datasets.items()
        for path in paths[rank::world]
        for level in levels_for(path, levels)
    ]


def describe(spec: str | None) -> dict | None:
    """The results' ``pipeline`` entry of a SPEC: the SPEC, its denoiser and codec in words."""
    if spec is None:
        return None
    pipeline = split_spec(spec)
    if pipeline.learned:
        codec = "learned: the checkpoints listed, real bitstreams of all streams"
    else:
        codec = CODECS[pipeline.codec].describe() + "; bpp from the whole file"
    denoiser = pipeline.denoiser and describe_denoiser(pipeline.denoiser)
    return {"spec": pipeline.spec, "denoiser": denoiser, "codec": codec}
