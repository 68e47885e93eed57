"""DALI training loader: decode + crop + augment in one pipeline per rank.

Each rank reads ``1 / world_size`` of the training samples (``shard_id`` = global rank; DALI
moves every rank to the next part after each epoch), shuffled in a buffer, padded and with the
last partial batch dropped, so every rank gets the same number of full batches per epoch (the
contrastive all-gather needs identical batch sizes). Per sample:

* ``clean``: one random ``P x P`` crop, decoded directly (``decoders.image_crop`` decodes only
  the crop region of a JPEG) — the target; the trainer adds noise to it, pixel-aligned;
* ``augmented``: from the same crop, a random resized crop back to ``P``, colour jitter
  (brightness/contrast/saturation factors in ``[1 - x, 1 + x]``, hue ``±360 h`` degrees) and a
  random horizontal flip (fused into the final normalisation).

The decoder runs on the GPU ("mixed") when the training device is CUDA, else on the CPU. The
reader and every random operator are checkpointed: ``state_dict()`` after ``n`` batches, restored
into a fresh loader, gives exactly batch ``n + 1`` of the uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from data_pipeline.config import AugmentConfig, DataConfig
from data_pipeline.contract import check_loader_state
from data_pipeline.manifest import SplitFiles, check_split, load_split, split_member_name
from data_pipeline.shards import STORED_EXTENSIONS

READER_NAME = "Reader"
OUTPUTS = ["clean", "augmented", "source"]


def _uniform(low: float, high: float) -> Any:
    """A per-sample draw from ``[low, high]``, or the constant when the range is empty."""
    return fn.random.uniform(range=[low, high]) if high > low else low


def _uniform_around_one(amount: float) -> Any:
    """Factor drawn from ``[1 - amount, 1 + amount]`` (torchvision ColorJitter), floored at 0."""
    return _uniform(max(0.0, 1.0 - amount), 1.0 + amount)


def _to_float_chw(images: Any, mirror: Any = 0) -> Any:
    """uint8 HWC -> float32 CHW in [0, 1], optionally mirrored horizontally."""
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", mean=[0.0], std=[255.0], mirror=mirror
    )


def _augment(clean: Any, patch: int, aug: AugmentConfig) -> Any:
    """Positive view of the uint8 ``clean`` crops: RRC, colour jitter, flip -> float CHW."""
    view = fn.random_resized_crop(
        clean,
        size=[patch, patch],
        random_area=aug.crop_scale,
        random_aspect_ratio=aug.crop_ratio,
        antialias=True,
    )
    view = fn.color_twist(
        view,
        brightness=_uniform_around_one(aug.brightness),
        contrast=_uniform_around_one(aug.contrast),
        saturation=_uniform_around_one(aug.saturation),
        hue=_uniform(-360.0 * aug.hue, 360.0 * aug.hue),  # torchvision: turns; DALI: degrees
    )
    return _to_float_chw(view, mirror=fn.random.coin_flip(probability=aug.flip_probability))


@pipeline_def(enable_checkpointing=True)
def train_pipeline(
    files: SplitFiles, shard_id: int, num_shards: int, cfg: DataConfig, decoder: str
) -> tuple[Any, Any, Any]:
    """DALI graph: read -> random crop decode -> (clean, augmented, padded source_info)."""
    encoded = fn.readers.webdataset(
        paths=files.tar_paths,
        index_paths=files.index_paths,
        ext=[";".join(STORED_EXTENSIONS)],
        shard_id=shard_id,
        num_shards=num_shards,
        random_shuffle=True,
        initial_fill=cfg.shuffle_buffer,
        pad_last_batch=True,
        name=READER_NAME,
    )
    # "<tar>:<offset>:<member>", zero-padded to the batch's longest so it stacks into a tensor.
    source = fn.pad(fn.get_property(encoded, key="source_info"), fill_value=0)
    clean = fn.decoders.image_crop(
        encoded,
        device=decoder,
        output_type=types.RGB,
        crop=[cfg.patch_size, cfg.patch_size],
        crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
        crop_pos_y=fn.random.uniform(range=[0.0, 1.0]),
        adjust_orientation=False,  # shards hold upright pixels; PIL (torch backend) agrees
        jpeg_fancy_upsampling=True,  # libjpeg's default chroma upsampling, as PIL: same pixels
    )
    return _to_float_chw(clean), _augment(clean, cfg.patch_size, cfg.augment), source


def _keys_from_sources(source: torch.Tensor) -> list[str]:
    """Sample keys from ``(B, L)`` uint8 zero-padded ``source_info`` strings."""
    names = [bytes(row).rstrip(b"\0").decode().rsplit(":", 1)[-1] for row in source.cpu().numpy()]
    return [split_member_name(name)[0] for name in names]


class DaliTrainLoader:
    """Infinite DALI training loader of one rank (contract: :mod:`data_pipeline.contract`)."""

    def __init__(
        self, cfg: DataConfig, rank: int, world_size: int, device: torch.device, seed: int
    ) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.seed = seed + rank
        self.files = load_split(cfg.shards, "train")
        check_split(self.files, "train", cfg.patch_size, cfg.batch_size_per_gpu * world_size)
        self._iterator = self._build(checkpoint=None)

    def _build(self, checkpoint: bytes | None) -> DALIGenericIterator:
        on_gpu = self.device.type == "cuda"
        pipe = train_pipeline(
            self.files,
            self.rank,
            self.world_size,
            self.cfg,
            decoder="mixed" if on_gpu else "cpu",
            batch_size=self.cfg.batch_size_per_gpu,
            num_threads=self.cfg.num_threads,
            device_id=self._device_id(),
            seed=self.seed,
            prefetch_queue_depth=self.cfg.prefetch,
            checkpoint=checkpoint,
        )
        return DALIGenericIterator(
            [pipe],
            OUTPUTS,
            reader_name=READER_NAME,
            last_batch_policy=LastBatchPolicy.DROP,
            auto_reset=True,
        )

    def _device_id(self) -> int | None:
        """The local CUDA device for the "mixed" decoder; None makes a CPU-only pipeline."""
        if self.device.type != "cuda":
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def __iter__(self) -> DaliTrainLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            out = next(self._iterator)[0]
        except StopIteration:  # end of epoch; auto_reset already rewound the reader
            out = next(self._iterator)[0]
        return {
            "clean": out["clean"].to(self.device, non_blocking=True),
            "augmented": out["augmented"].to(self.device, non_blocking=True),
            "keys": _keys_from_sources(out["source"]),
        }

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch (identical on every rank)."""
        return len(self._iterator)

    def state_dict(self) -> dict[str, Any]:
        """Reader + RNG state after the batches consumed so far (per rank)."""
        checkpoint = self._iterator.checkpoints()[0]
        return {
            "backend": "dali",
            "rank": self.rank,
            "world_size": self.world_size,
            "checkpoint": bytes(checkpoint),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the pipeline from ``state``; the next batch continues the saved run exactly."""
        check_loader_state(state, "dali", self.rank, self.world_size)
        self._iterator = self._build(checkpoint=bytes(state["checkpoint"]))
