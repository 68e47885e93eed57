"""The DALI graph of the training loader: read, random-crop decode, augment (one per rank).

Per sample ``clean`` (the crop, decoded directly), ``augmented`` (RRC + colour jitter + flip of
the same crop), the reader's ``source`` info, and for paired shards ``noisy`` (the noisy member
at the same crop position). :mod:`data_pipeline.dali_loader` runs it and keeps the contract.
"""

from __future__ import annotations

from typing import Any, cast

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.data_node import DataNode

from data_pipeline.data_config import AugmentConfig, DataConfig
from data_pipeline.manifest import STORED_EXTENSIONS, SplitFiles

READER_NAME = "Reader"
OUTPUTS = ["clean", "augmented", "source"]
PAIRED_OUTPUTS = [*OUTPUTS, "noisy"]


def _uniform(low: float, high: float) -> Any:
    """A per-sample draw from ``[low, high]``, or the constant when the range is empty."""
    return fn.random.uniform(range=[low, high]) if high > low else low


def _uniform_around_one(amount: float) -> Any:
    """Factor drawn from ``[1 - amount, 1 + amount]`` (torchvision ColorJitter), floored at 0."""
    return _uniform(max(0.0, 1.0 - amount), 1.0 + amount)


def _to_float_chw(images: Any, mirror: Any = 0) -> Any:
    """uint8 HWC -> float32 CHW in [0, 1], optionally mirrored horizontally."""
    return fn.crop_mirror_normalize(
        images,
        dtype=types.DALIDataType.FLOAT,
        output_layout="CHW",
        mean=[0.0],
        std=[255.0],
        mirror=mirror,
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


def _decode_crop(encoded: Any, cfg: DataConfig, decoder: str, pos_x: Any, pos_y: Any) -> Any:
    """uint8 HWC ``P x P`` crop at relative position ``(pos_x, pos_y)``, decoded directly."""
    return fn.decoders.image_crop(
        encoded,
        device=decoder,
        output_type=types.DALIImageType.RGB,
        crop=[cfg.patch_size, cfg.patch_size],
        crop_pos_x=pos_x,
        crop_pos_y=pos_y,
        adjust_orientation=False,  # shards hold upright pixels; PIL (torch backend) agrees
        jpeg_fancy_upsampling=True,  # libjpeg's default chroma upsampling, as PIL: same pixels
    )


def _member_exts(role: str | None) -> str:
    """The reader's extension set of one output: any stored image format of that member."""
    prefix = f"{role}." if role else ""
    return ";".join(prefix + ext for ext in STORED_EXTENSIONS)


@pipeline_def(enable_checkpointing=True)
def train_pipeline(
    files: SplitFiles, shard_id: int, num_shards: int, cfg: DataConfig, decoder: str
) -> tuple[Any, ...]:
    """DALI graph: read -> random crop decode -> (clean, augmented, padded source_info[, noisy]).

    Paired shards: the noisy and the clean member are decoded with the *same* crop position
    (one pair of random draws feeds both decoders; the two images have the same size, so the
    crop windows coincide pixel for pixel).
    """
    roles = ("noisy", "clean") if files.paired else (None,)
    encoded = fn.readers.webdataset(
        paths=files.tar_paths,
        index_paths=files.index_paths,
        ext=[_member_exts(role) for role in roles],
        shard_id=shard_id,
        num_shards=num_shards,
        random_shuffle=True,
        initial_fill=cfg.shuffle_buffer,
        pad_last_batch=True,
        name=READER_NAME,
    )
    # a reader has outputs: the stubs' None (and Sequence) are for other operators
    encoded = encoded if isinstance(encoded, list | tuple) else [cast(DataNode, encoded)]
    # "<tar>:<offset>:<member>", zero-padded to the batch's longest so it stacks into a tensor.
    source = fn.pad(fn.get_property(encoded[0], key="source_info"), fill_value=0)
    pos_x, pos_y = fn.random.uniform(range=[0.0, 1.0]), fn.random.uniform(range=[0.0, 1.0])
    crops = [_decode_crop(member, cfg, decoder, pos_x, pos_y) for member in encoded]
    clean = crops[-1]
    outputs = (_to_float_chw(clean), _augment(clean, cfg.patch_size, cfg.augment), source)
    return outputs + ((_to_float_chw(crops[0]),) if files.paired else ())
