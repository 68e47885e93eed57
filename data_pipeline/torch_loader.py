"""Pure-torch loaders (PIL + torchvision) with the same batch contract as the DALI loader.

Training sampling is an exact function of ``(seed, epoch, excluded samples, rank, W)``: epoch
``e`` is a permutation of the training samples drawn from the *base* seed (identical on every
rank) without the samples excluded when the epoch began, rank ``r`` takes positions
``r, r + W, ...`` cut to ``n // W`` samples, and the rank's batches are the full ``batch_size``
slices of that (the rest is dropped). So ranks see disjoint samples, every rank has the same
number of batches per epoch, global batch ``b`` is permutation positions ``[b·G, (b + 1)·G)``
whatever the world size, and a resume only needs ``(epoch, batch)`` and the epoch's exclusions.
Each sample's crop and augmentation come from its own seed ``(seed, epoch, global position)``,
independent of worker count, prefetching and world size.

An undecodable sample does not raise: its batch comes back with ``bad_samples`` (see
:mod:`data_pipeline.undecodable`) and the caller drops it on every rank and calls ``exclude``.

Why not ``wds.WebDataset(resampled=True, nodesplitter=split_by_node)``: in webdataset 1.0.2 a
resampled shard stream is drawn with replacement from a time-seeded RNG, so ranks read
overlapping shards and a resume cannot be exact. Samples are instead read by random access,
using the offsets in the DALI ``.idx`` file written next to every shard (same shards, no copy).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from data_pipeline.contract import LoaderPlace, TrainBatch, check_loader_state
from data_pipeline.data_config import DataConfig
from data_pipeline.manifest import SampleLocation, check_split, load_split
from data_pipeline.undecodable import BadSample, bad_sample, error_line
from jicd.distributed import single_thread


def read_image(location: SampleLocation) -> Image.Image:
    """Decode one stored sample into an RGB PIL image (no EXIF rotation: shards are upright)."""
    return Image.open(io.BytesIO(location.read_bytes())).convert("RGB")


def read_sample(
    location: SampleLocation, split: str = "train"
) -> tuple[list[Image.Image], BadSample | None]:
    """Every image of a sample, fully decoded (``[image]``, or ``[noisy, clean]`` when paired),
    or ``([], report)`` naming the member that failed; a pair of two sizes is reported too."""
    images: list[Image.Image] = []
    for member in location.images():
        try:
            image = read_image(member)
            image.load()
        except Exception as exc:  # PIL raises many unrelated types for bad data
            return [], bad_sample(split, member, error_line(exc))
        images.append(image)
    if len({image.size for image in images}) > 1:
        sizes = " vs ".join("x".join(map(str, image.size)) for image in images)
        return [], bad_sample(split, location, f"noisy and clean differ in size ({sizes})")
    return images, None


def to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` uint8 tensor of an RGB PIL image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_device_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, 3, P, P)`` -> float32 in [0, 1] on ``device`` (sent as uint8: 4x fewer bytes)."""
    return images.to(device, non_blocking=True).float().div_(255.0)


_ORDER_STREAM, _SAMPLE_STREAM, _BATCH_AUGMENT_STREAM = 0, 1, 2


def _derived_seed(stream: int, seed: int, epoch: int, position: int = 0) -> int:
    """Independent 32-bit seed for one (purpose, seed, epoch, position)."""
    entropy = [stream, seed & 0xFFFFFFFF, epoch, position]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def epoch_order(num_samples: int, seed: int, epoch: int, excluded: AbstractSet[int] = frozenset()):
    """Every sample of ``epoch`` in reading order (one permutation, the same on every rank)."""
    generator = torch.Generator().manual_seed(_derived_seed(_ORDER_STREAM, seed, epoch))
    order = torch.randperm(num_samples, generator=generator).tolist()
    return [i for i in order if i not in excluded]


def rank_epoch_order(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    excluded: AbstractSet[int] = frozenset(),
) -> list[int]:
    """Sample indices rank ``rank`` reads in ``epoch``: disjoint across ranks, equal counts.

    Rank ``r`` takes positions ``r, r + W, ...`` of :func:`epoch_order`, so global batch ``b``
    (all ranks' batch ``b`` together) is positions ``[b·G, (b + 1)·G)`` for any W with the same
    global batch G.
    """
    order = epoch_order(num_samples, seed, epoch, excluded)
    return order[rank::world][: len(order) // world]


class _Item(NamedTuple):
    """What the batch plan asks the dataset for: one sample of one batch."""

    sample: int  # index into the dataset's locations
    seed: int
    excluded: bool  # known undecodable: not read, the batch is dropped
    epoch: int
    batch: int
    augment_seed: int | None = None  # augment.per_batch: the batch's one augmentation draw


class _TrainSamples(Dataset):
    """Map-style dataset: :class:`_Item` -> ``(clean, augmented, noisy | None, key, bad | None,
    item)`` (``noisy``: the pixel-aligned noisy crop of a paired sample)."""

    def __init__(self, locations: list[SampleLocation], cfg: DataConfig) -> None:
        self.locations, self.patch = locations, cfg.patch_size
        aug = cfg.augment
        self.per_batch = aug.per_batch
        self.augment = v2.Compose(
            [
                v2.RandomResizedCrop(
                    self.patch, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True
                ),
                v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue),
                v2.RandomHorizontalFlip(aug.flip_probability),
            ]
        )

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, item: _Item) -> tuple:
        location = self.locations[item.sample]
        images: list[Image.Image]
        bad: BadSample | None
        if item.excluded:
            images, bad = [], bad_sample("train", location, "excluded earlier in this run")
        else:
            images, bad = read_sample(location)
        if bad is not None:
            empty = torch.zeros(3, self.patch, self.patch, dtype=torch.uint8)
            return empty, empty, empty if location.pair else None, location.key, bad, item
        # A private RNG stream per sample: results do not depend on workers or prefetching.
        with torch.random.fork_rng(devices=[]), single_thread():
            torch.manual_seed(item.seed)
            left = int(torch.randint(images[0].width - self.patch + 1, ()))
            top = int(torch.randint(images[0].height - self.patch + 1, ()))
            box = (left, top, left + self.patch, top + self.patch)
            # one crop for every image of the sample: noisy and clean stay pixel-aligned
            crops = [to_uint8_chw(image.crop(box)) for image in images]
            clean = crops[-1]
            if item.augment_seed is not None:
                # Every crop is P×P, so the same seed draws the same RRC / jitter / flip for
                # every image of the batch: one parameter set per batch.
                torch.manual_seed(item.augment_seed)
            augmented = self.augment(clean)  # the positive view: of the clean crop
        noisy = crops[0] if location.pair else None
        return clean, augmented, noisy, location.key, None, item


class _BatchPlan:
    """Infinite batch sampler from ``(epoch, batch)``: lists of :class:`_Item`.

    ``excluded`` is the live set of excluded sample indices; each epoch's order leaves out the
    ones known when the epoch was entered (``snapshots[epoch]``): a sample excluded later in that
    epoch cannot come again in it (an epoch reads each sample once), and if it was scheduled
    before its exclusion (a resume from an older checkpoint) it is marked, not read.
    """

    def __init__(self, num_samples: int, cfg: DataConfig, seed: int, rank: int, world: int):
        self.num_samples, self.batch, self.seed = num_samples, cfg.batch_size_per_gpu, seed
        self.per_batch = cfg.augment.per_batch
        self.rank, self.world = rank, world
        self.excluded: set[int] = set()
        self.snapshots: dict[int, frozenset[int]] = {}
        self.start = (0, 0)

    def batches_in(self, epoch: int) -> int:
        """Full batches of ``epoch`` on every rank (fewer once samples are excluded)."""
        snapshot = self.snapshots.get(epoch, frozenset(self.excluded))
        return (self.num_samples - len(snapshot)) // (self.world * self.batch)

    def __iter__(self):
        epoch, first = self.start
        while True:
            snapshot = self.snapshots.setdefault(epoch, frozenset(self.excluded))
            order = rank_epoch_order(
                self.num_samples, self.seed, epoch, self.rank, self.world, snapshot
            )
            for b in range(first, len(order) // self.batch):
                items = []
                # global batch b is the same on every rank: one augmentation draw per global batch
                aug = (
                    _derived_seed(_BATCH_AUGMENT_STREAM, self.seed, epoch, b)
                    if self.per_batch
                    else None
                )
                for p in range(b * self.batch, (b + 1) * self.batch):
                    # Seed of the sample's crop and augmentation: its global position in the
                    # epoch, so the same global batch gets the same crops at any world size.
                    g = self.rank + self.world * p
                    seed = _derived_seed(_SAMPLE_STREAM, self.seed, epoch, g)
                    index = order[p]
                    items.append(_Item(index, seed, index in self.excluded, epoch, b, aug))
                yield items
            epoch, first = epoch + 1, 0


def _collate_train(samples: list[tuple]) -> dict[str, Any]:
    clean, augmented, noisy, keys, bad, items = zip(*samples, strict=True)
    batch = {
        "clean": torch.stack(clean),
        "augmented": torch.stack(augmented),
        "keys": list(keys),
        "bad_samples": [b for b in bad if b is not None],
        "position": (items[0].epoch, items[0].batch),
    }
    if noisy[0] is not None:
        batch["noisy"] = torch.stack(noisy)
    return batch


def loader_kwargs(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    workers = cfg.workers()
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs["prefetch_factor"] = cfg.prefetch
    return kwargs


class TorchTrainLoader:
    """Infinite torch training loader of one rank (contract: :mod:`data_pipeline.contract`)."""

    def __init__(self, cfg: DataConfig, place: LoaderPlace, seed: int) -> None:
        rank, world_size, excluded = place.rank, place.world_size, place.excluded
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, place.device
        files = load_split(cfg.shards, "train")
        check_split(files, "train", cfg.patch_size, cfg.batch_size_per_gpu * world_size)
        self.dataset = _TrainSamples(files.locations(), cfg)
        self._index = {loc.key: i for i, loc in enumerate(self.dataset.locations)}
        self.plan = _BatchPlan(len(self.dataset), cfg, seed, rank, world_size)
        self.position = (0, 0)  # (epoch, batch) of the next batch handed to the caller
        self._batches: Any = None
        self.exclude(excluded)

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size_per_gpu * self.world_size

    def __iter__(self) -> TorchTrainLoader:
        return self

    def __next__(self) -> TrainBatch:
        if self._batches is None:
            self.plan.start = self.position
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.plan,
                collate_fn=_collate_train,
                **loader_kwargs(self.cfg, self.device),
            )
            self._batches = iter(loader)
        raw = next(self._batches)
        epoch, index = raw["position"]
        self.position = (epoch, index + 1)
        for done in [e for e in self.plan.snapshots if e < epoch]:
            del self.plan.snapshots[done]  # finished epochs: their exclusions are not needed
        batch: TrainBatch = {
            "clean": to_device_float(raw["clean"], self.device),
            "augmented": to_device_float(raw["augmented"], self.device),
            "keys": raw["keys"],
            "bad_samples": raw["bad_samples"],
        }
        if "noisy" in raw:
            batch["noisy"] = to_device_float(raw["noisy"], self.device)
        return batch

    def close(self) -> None:
        """Stop the worker processes (the next batch would start new ones)."""
        self._batches = None

    def exclude(self, keys: Iterable[str]) -> None:
        """Never read these samples again (call with the same keys on every rank).

        Prefetched batches are dropped, so what follows depends only on the position and the
        excluded set, as after a resume.
        """
        new = {self._index[k] for k in keys if k in self._index} - self.plan.excluded
        if new:
            self.plan.excluded |= new
            self._batches = None

    @property
    def batches_per_epoch(self) -> int:
        """Full batches of the current epoch (identical on every rank)."""
        return self.plan.batches_in(self.position[0])

    def state_dict(self) -> dict[str, Any]:
        """Position (epoch, batch) and the exclusions the current epoch started with."""
        epoch, batch = self.position
        snapshot = self.plan.snapshots.get(epoch, frozenset(self.plan.excluded))
        return {
            "backend": "torch",
            "rank": self.rank,
            "world_size": self.world_size,
            "global_batch": self.global_batch,
            "epoch": epoch,
            "batch": batch,
            "epoch_excluded": sorted(self.dataset.locations[i].key for i in snapshot),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the saved position; prefetched batches of the old run are dropped.

        Another world size continues at the same epoch and the same number of samples into it
        (the same global batches when the global batch is unchanged; see the contract).
        """
        check_loader_state(state, "torch", self.rank, self.world_size)
        if "epoch" not in state:  # written before positions were (epoch, batch)
            per_epoch = len(self.dataset) // self.global_batch
            epoch, batch = divmod(int(state["step"]), per_epoch)
            snapshot: frozenset[int] = frozenset()
        else:
            epoch, batch = int(state["epoch"]), int(state["batch"])
            batch = batch * int(state.get("global_batch", self.global_batch)) // self.global_batch
            snapshot = frozenset(
                self._index[k] for k in state["epoch_excluded"] if k in self._index
            )
        self.plan.snapshots = {epoch: snapshot}
        self.position = (epoch, batch)
        self._batches = None
