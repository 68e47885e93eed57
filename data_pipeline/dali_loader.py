"""DALI training loader: decode + crop + augment in one pipeline per rank.

Each rank reads ``1 / world_size`` of the training samples (``shard_id`` = global rank; DALI
moves every rank to the next part after each epoch), shuffled in a buffer, padded and with the
last partial batch dropped, so every rank gets the same number of full batches per epoch (the
contrastive all-gather needs identical batch sizes). Per sample:

* ``clean``: one random ``P x P`` crop, decoded directly (``decoders.image_crop`` decodes only
  the crop region of a JPEG) — the target; the trainer adds noise to it, pixel-aligned;
* ``noisy`` (paired shards only): the noisy member cropped at the same position;
* ``augmented``: from the same crop, a random resized crop back to ``P``, colour jitter
  (brightness/contrast/saturation factors in ``[1 - x, 1 + x]``, hue ``±360 h`` degrees) and a
  random horizontal flip (fused into the final normalisation).

The graph is :mod:`data_pipeline.dali_graph`. The decoder runs on the GPU ("mixed") when the
training device is CUDA, else on the CPU. The reader and every random operator are
checkpointed: ``state_dict()`` after ``n`` batches, restored into a fresh loader, gives exactly
batch ``n + 1`` of the uninterrupted run. Undecodable samples and resumes on another world size:
see :class:`DaliTrainLoader`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from data_pipeline.contract import LoaderPlace, TrainBatch, check_loader_state
from data_pipeline.dali_graph import OUTPUTS, PAIRED_OUTPUTS, READER_NAME, train_pipeline
from data_pipeline.data_config import DataConfig
from data_pipeline.manifest import (
    SplitFiles,
    check_split,
    filtered_split,
    load_split,
    split_member_name,
)
from data_pipeline.undecodable import BadSample, bad_sample, parse_dali_error
from data_pipeline.verify import find_undecodable
from jicd.errors import UserError

log = logging.getLogger(__name__)


def _keys_from_sources(source: torch.Tensor) -> list[str]:
    """Sample keys from ``(B, L)`` uint8 zero-padded ``source_info`` strings."""
    names = [bytes(row).rstrip(b"\0").decode().rsplit(":", 1)[-1] for row in source.cpu().numpy()]
    return [split_member_name(name)[0] for name in names]


class DaliTrainLoader:
    """Infinite DALI training loader of one rank (contract: :mod:`data_pipeline.contract`).

    Undecodable samples: DALI's decoder error names the sample (``<tar>:<offset>:<member>``);
    the pipeline is then dead, so the loader returns a placeholder batch reporting it, and
    ``exclude`` rebuilds the pipeline from the reader checkpoint taken after the last good batch,
    with DALI indexes that leave the excluded samples out (written to a private temporary
    folder; the shards are not touched). Every rank rebuilds with the same indexes, so the
    per-rank batch counts stay equal. The rebuilt reader continues the same epoch, but its
    shuffle buffer refills from the changed index, so the samples that follow differ from what
    an undamaged shard would have given. A resume restores exactly when the run's exclusions are
    the ones of the checkpoint; samples excluded after it are left out from the start, and the
    batches from there differ from the first attempt's.
    """

    def __init__(self, cfg: DataConfig, place: LoaderPlace, seed: int) -> None:
        rank, world_size, excluded = place.rank, place.world_size, place.excluded
        if cfg.augment.per_batch:
            raise UserError(
                "data.augment.per_batch=true (the authors' one augmentation per batch) needs "
                "data.backend=torch"
            )
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, place.device
        self.base_seed = seed
        self.pipeline_seed = seed + rank
        self.source = load_split(cfg.shards, "train")
        check_split(self.source, "train", cfg.patch_size, cfg.batch_size_per_gpu * world_size)
        self._locations = {loc.key: loc for loc in self.source.locations()}
        self._tmp = tempfile.TemporaryDirectory(prefix="jicd-dali-index-")
        self.excluded: set[str] = set()
        self.remainder: dict[str, Any] | None = None  # {"epoch", "fraction"} after a W change
        self.epoch = self.batch = self._first_batch = 0
        self._checkpoint: bytes | None = None  # reader state after the last batch handed out
        self._pending: list[BadSample] = []  # reported, not yet excluded
        self.excluded |= set(excluded) & self._locations.keys()
        self._iterator: DALIGenericIterator | _FailedIterator | None = self._build(checkpoint=None)

    def _split(self) -> SplitFiles:
        """The indexes this pipeline reads: all samples but the excluded ones (and, in the part
        epoch after a world-size change, only the seeded remainder subset)."""
        if not self.excluded and self.remainder is None:
            return self.source
        subset = self._remainder_keys() if self.remainder is not None else None
        files = filtered_split(
            self.source,
            lambda key: key not in self.excluded and (subset is None or key in subset),
            tempfile.mkdtemp(dir=self._tmp.name),
        )
        check_split(files, "train", self.cfg.patch_size, self.global_batch)
        return files

    def _remainder_keys(self) -> set[str]:
        """A seeded random ``1 - fraction`` of all training samples (excluded ones drop out later,
        so the subset does not change when more samples are excluded)."""
        assert self.remainder is not None
        keys = sorted(self._locations)
        seed = _epoch_seed(self.base_seed, -1, self.remainder["epoch"])  # the same on every rank
        order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
        count = max(self.global_batch, round((1.0 - self.remainder["fraction"]) * len(keys)))
        return {keys[i] for i in order[:count]}

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size_per_gpu * self.world_size

    @property
    def decoder(self) -> str:
        """DALI's decoder device: "mixed" (nvJPEG on the GPU) for CUDA training, else "cpu"."""
        return "mixed" if self.device.type == "cuda" else "cpu"

    def _build(self, checkpoint: bytes | None) -> DALIGenericIterator | _FailedIterator:
        files = self._split()
        pipe = train_pipeline(
            files,
            self.rank,
            self.world_size,
            self.cfg,
            decoder=self.decoder,
            batch_size=self.cfg.batch_size_per_gpu,
            num_threads=self.cfg.threads(),
            device_id=self._device_id(),
            seed=self.pipeline_seed,
            prefetch_queue_depth=self.cfg.prefetch,
            checkpoint=checkpoint,
        )
        self._checkpoint = checkpoint
        try:
            return DALIGenericIterator(
                [pipe],
                PAIRED_OUTPUTS if files.paired else OUTPUTS,
                reader_name=READER_NAME,
                last_batch_policy=LastBatchPolicy.DROP,
                auto_reset=True,
            )
        except RuntimeError as exc:  # the iterator decodes its first batch while being built
            per_rank = files.num_samples // self.world_size // self.cfg.batch_size_per_gpu
            return _FailedIterator(exc, per_rank)

    def _device_id(self) -> int | None:
        """The local CUDA device for the "mixed" decoder; None makes a CPU-only pipeline."""
        if self.device.type != "cuda":
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def __iter__(self) -> DaliTrainLoader:
        return self

    def __next__(self) -> TrainBatch:
        if self._pending:  # the caller did not exclude what was reported: do it locally
            self.exclude([bad.key for bad in self._pending])
        try:
            out = self._next_output()
        except RuntimeError as exc:
            return self._failed(exc)
        self.batch += 1
        # the iterator just handed out a batch: neither a failed one nor closed
        self._checkpoint = bytes(cast(DALIGenericIterator, self._iterator).checkpoints()[0])
        batch: TrainBatch = {
            "clean": out["clean"].to(self.device, non_blocking=True),
            "augmented": out["augmented"].to(self.device, non_blocking=True),
            "keys": _keys_from_sources(out["source"]),
            "bad_samples": [],
        }
        if "noisy" in out:
            batch["noisy"] = out["noisy"].to(self.device, non_blocking=True)
        return batch

    def _next_output(self) -> dict[str, torch.Tensor]:
        assert self._iterator is not None  # a closed loader is not read again
        try:
            return next(self._iterator)[0]
        except StopIteration:  # end of epoch; auto_reset already rewound the reader
            self.epoch, self.batch, self._first_batch = self.epoch + 1, 0, 0
            if self.remainder is not None:  # the part epoch after a W change is over
                self.remainder = None
                self.pipeline_seed = _epoch_seed(self.base_seed, self.rank, self.epoch)
                self._iterator = self._build(checkpoint=None)
            return next(self._iterator)[0]

    def _failed(self, exc: RuntimeError) -> TrainBatch:
        """A placeholder batch reporting the sample(s) DALI could not decode."""
        message = str(exc).split("encountered:", 1)[-1].strip().splitlines()[0]
        named = parse_dali_error(str(exc))
        member = None
        if named is not None:
            location = self._locations.get(split_member_name(named[2])[0])
            images = location.images() if location is not None else []
            member = next((im for im in images if im.offset == named[1]), None)
        if member is not None:  # the noisy or the clean image of a paired sample
            self._pending = [bad_sample("train", member, f"DALI: {message}")]
        else:
            self._pending = self._scan_for_undecodable(exc, message)
        empty = torch.zeros(
            (self.cfg.batch_size_per_gpu, 3, self.cfg.patch_size, self.cfg.patch_size),
            device=self.device,
        )
        batch: TrainBatch = {
            "clean": empty,
            "augmented": empty,
            "keys": [],
            "bad_samples": self._pending,
        }
        if self.source.paired:
            batch["noisy"] = empty
        return batch

    def _scan_for_undecodable(self, exc: RuntimeError, message: str) -> list[BadSample]:
        """DALI's error does not always name the sample (a damaged PNG header gives only
        "nvImageCodec failure"): decode every sample still in use with PIL to find it."""
        log.warning("DALI decoding failed (%s) without naming the sample: scanning", message)
        candidates = [loc for key, loc in self._locations.items() if key not in self.excluded]
        found = find_undecodable(candidates, self.cfg.threads())
        if not found:
            raise exc  # nothing undecodable: a real pipeline error, not a bad sample
        return [bad_sample("train", loc, f"DALI: {message}; PIL: {why}") for loc, why in found]

    def close(self) -> None:
        """Free the pipelines, which stops DALI's executor and prefetch threads now, not at
        interpreter exit (where a thread still running races the process's teardown)."""
        self._iterator = None  # a closed loader is not read again

    def exclude(self, keys: Iterable[str]) -> None:
        """Never read these samples again (call with the same keys on every rank): rebuilds the
        pipeline from the last good batch with indexes that leave them out."""
        new = set(keys) & self._locations.keys() - self.excluded
        if not new and not self._pending:
            return
        self.excluded |= new
        self._pending = []
        self._iterator = self._build(checkpoint=self._checkpoint)

    @property
    def batches_per_epoch(self) -> int:
        """Full batches of the current epoch (identical on every rank)."""
        assert self._iterator is not None  # a closed loader is not read again
        return self._first_batch + len(self._iterator)

    def state_dict(self) -> dict[str, Any]:
        """Reader + RNG state after the batches consumed so far (per rank), and the position."""
        return {
            "backend": "dali",
            "decoder": self.decoder,  # a CPU-decoder state cannot drive a "mixed" pipeline
            "rank": self.rank,
            "world_size": self.world_size,
            "checkpoint": self._checkpoint,
            "epoch": self.epoch,
            "batch": self.batch,
            "batches_per_epoch": self.batches_per_epoch,
            "first_batch": self._first_batch,
            "remainder": self.remainder,
            "pipeline_seed": self.pipeline_seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the pipeline from ``state``; the next batch continues the saved run exactly.

        A state of another world size continues at the same epoch and fraction: the rest of
        that epoch is a seeded random subset of ``1 - fraction`` of the samples.
        """
        saved_decoder = state.get("decoder", "cpu")  # states without it: CPU-only runs
        if saved_decoder != self.decoder:
            raise UserError(
                f"loader state was saved with the {saved_decoder!r} JPEG decoder, this run uses "
                f"{self.decoder!r} (train.device changed): resume on the same kind of device"
            )
        if check_loader_state(state, "dali", self.rank, self.world_size):
            fraction = state["batch"] / max(1, state["batches_per_epoch"])
            self.epoch = int(state["epoch"])
            self.remainder = {"epoch": self.epoch, "fraction": fraction}
            self.pipeline_seed = _epoch_seed(self.base_seed, self.rank, self.epoch)
            full = self.source.num_samples - len(self.excluded)
            self._first_batch = self.batch = int(fraction * (full // self.global_batch))
            self._iterator = self._build(checkpoint=None)
            return
        self.epoch, self.batch = int(state.get("epoch", 0)), int(state.get("batch", 0))
        self._first_batch = int(state.get("first_batch", 0))
        self.remainder = state.get("remainder")
        self.pipeline_seed = int(state.get("pipeline_seed", self.pipeline_seed))
        checkpoint = state["checkpoint"]
        self._iterator = self._build(checkpoint=None if checkpoint is None else bytes(checkpoint))


class _FailedIterator:
    """Stands in for an iterator whose construction failed: raises that error when read."""

    def __init__(self, error: RuntimeError, length: int) -> None:
        self.error, self.length = error, length

    def __next__(self) -> Any:
        raise self.error

    def __len__(self) -> int:
        return self.length


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Pipeline seed of a reader started afresh at ``epoch`` (not epoch 0's shuffle again)."""
    entropy = [seed & 0xFFFFFFFF, rank + 1, epoch]  # rank -1: a stream shared by all ranks
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
