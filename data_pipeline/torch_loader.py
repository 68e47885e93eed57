"""Pure-torch loaders (PIL + torchvision) with the same batch contract as the DALI loader.

Training sampling is an exact function of ``(seed, epoch, rank)``: epoch ``e`` is a permutation
of all training samples drawn from the *base* seed (identical on every rank), rank ``r`` takes
positions ``r, r + W, ...`` cut to ``N // W`` samples, and the rank's batches are the full
``batch_size`` slices of that (the rest is dropped). So ranks see disjoint samples, every rank has
the same number of batches per epoch, and a resume only needs the number of batches consumed.
Each sample's crop and augmentation come from its own seed ``(seed + rank, epoch, position)``,
independent of worker count and prefetching.

Why not ``wds.WebDataset(resampled=True, nodesplitter=split_by_node)``: in webdataset 1.0.2 a
resampled shard stream is drawn with replacement from a time-seeded RNG, so ranks read
overlapping shards and a resume cannot be exact. Samples are instead read by random access,
using the offsets in the DALI ``.idx`` file written next to every shard (same shards, no copy).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from data_pipeline.config import DataConfig
from data_pipeline.contract import check_loader_state
from data_pipeline.manifest import SampleLocation, check_split, load_split
from jicd.distributed import single_thread


def read_image(location: SampleLocation) -> Image.Image:
    """Decode one stored sample into an RGB PIL image (no EXIF rotation: shards are upright)."""
    with open(location.tar_path, "rb") as handle:
        handle.seek(location.offset)
        payload = handle.read(location.size)
    return Image.open(io.BytesIO(payload)).convert("RGB")


def _to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` uint8 tensor of an RGB PIL image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def _to_device_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, 3, P, P)`` -> float32 in [0, 1] on ``device`` (sent as uint8: 4x fewer bytes)."""
    return images.to(device, non_blocking=True).float().div_(255.0)


_ORDER_STREAM, _SAMPLE_STREAM = 0, 1


def _derived_seed(stream: int, seed: int, epoch: int, position: int = 0) -> int:
    """Independent 32-bit seed for one (purpose, seed, epoch, position)."""
    entropy = [stream, seed & 0xFFFFFFFF, epoch, position]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def rank_epoch_order(num_samples: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """Sample indices rank ``rank`` reads in ``epoch``: disjoint across ranks, equal counts."""
    generator = torch.Generator().manual_seed(_derived_seed(_ORDER_STREAM, seed, epoch))
    order = torch.randperm(num_samples, generator=generator)
    return order[rank::world][: num_samples // world].tolist()


class _TrainSamples(Dataset):
    """Map-style dataset: ``(sample index, sample seed)`` -> ``(clean, augmented, key)``."""

    def __init__(self, locations: list[SampleLocation], cfg: DataConfig) -> None:
        self.locations, self.patch = locations, cfg.patch_size
        aug = cfg.augment
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

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        index, seed = item
        image = read_image(self.locations[index])
        # A private RNG stream per sample: results do not depend on workers or prefetching.
        with torch.random.fork_rng(devices=[]), single_thread():
            torch.manual_seed(seed)
            left = int(torch.randint(image.width - self.patch + 1, ()))
            top = int(torch.randint(image.height - self.patch + 1, ()))
            clean = _to_uint8_chw(image.crop((left, top, left + self.patch, top + self.patch)))
            augmented = self.augment(clean)
        return clean, augmented, self.locations[index].key


class _BatchPlan:
    """Infinite batch sampler from global step ``start``: lists of ``(index, seed)``."""

    def __init__(self, num_samples: int, cfg: DataConfig, seed: int, rank: int, world: int):
        self.num_samples, self.batch, self.seed = num_samples, cfg.batch_size_per_gpu, seed
        self.rank, self.world = rank, world
        self.batches_per_epoch = (num_samples // world) // self.batch
        self.start = 0

    def __iter__(self):
        step = self.start
        while True:
            epoch, first = divmod(step, self.batches_per_epoch)
            order = rank_epoch_order(self.num_samples, self.seed, epoch, self.rank, self.world)
            for b in range(first, self.batches_per_epoch):
                positions = range(b * self.batch, (b + 1) * self.batch)
                # Augmentation seed: base + rank (distinct streams per rank), epoch, position.
                yield [
                    (order[p], _derived_seed(_SAMPLE_STREAM, self.seed + self.rank, epoch, p))
                    for p in positions
                ]
            step = (epoch + 1) * self.batches_per_epoch


def _collate_train(samples: list[tuple[torch.Tensor, torch.Tensor, str]]) -> dict[str, Any]:
    clean, augmented, keys = zip(*samples, strict=True)
    return {"clean": torch.stack(clean), "augmented": torch.stack(augmented), "keys": list(keys)}


def _loader_kwargs(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    if cfg.num_workers > 0:
        kwargs["prefetch_factor"] = cfg.prefetch
    return kwargs


class TorchTrainLoader:
    """Infinite torch training loader of one rank (contract: :mod:`data_pipeline.config`)."""

    def __init__(
        self, cfg: DataConfig, rank: int, world_size: int, device: torch.device, seed: int
    ) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        files = load_split(cfg.shards, "train")
        check_split(files, "train", cfg.patch_size, cfg.batch_size_per_gpu * world_size)
        self.dataset = _TrainSamples(files.locations(), cfg)
        self.plan = _BatchPlan(len(self.dataset), cfg, seed, rank, world_size)
        self.step = 0  # batches handed to the caller (not the ones prefetched)
        self._batches: Any = None

    def __iter__(self) -> TorchTrainLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._batches is None:
            self.plan.start = self.step
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.plan,
                collate_fn=_collate_train,
                **_loader_kwargs(self.cfg, self.device),
            )
            self._batches = iter(loader)
        batch = next(self._batches)
        self.step += 1
        batch["clean"] = _to_device_float(batch["clean"], self.device)
        batch["augmented"] = _to_device_float(batch["augmented"], self.device)
        return batch

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch (identical on every rank)."""
        return self.plan.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Batches consumed so far: with the config and seed, all a resume needs."""
        return {
            "backend": "torch",
            "rank": self.rank,
            "world_size": self.world_size,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after batch ``state["step"]``; prefetched batches of the old run are dropped."""
        check_loader_state(state, "torch", self.rank, self.world_size)
        self.step = int(state["step"])
        self._batches = None


class _ValSamples(Dataset):
    """Map-style dataset of center crops: val position -> ``(clean uint8, key, position)``."""

    def __init__(self, locations: list[SampleLocation], patch: int) -> None:
        self.locations, self.patch = locations, patch

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        image = read_image(self.locations[index])
        left = int(round((image.width - self.patch) / 2.0))  # torchvision CenterCrop rounding
        top = int(round((image.height - self.patch) / 2.0))
        crop = image.crop((left, top, left + self.patch, top + self.patch))
        return _to_uint8_chw(crop), self.locations[index].key, index


class ValLoader:
    """Finite validation loader: rank r gets val positions r, r + W, ... (uneven counts allowed)."""

    def __init__(self, cfg: DataConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        files = load_split(cfg.shards, "val")
        check_split(files, "val", cfg.patch_size, 0)
        dataset = _ValSamples(files.locations(), cfg.patch_size)
        self.positions = list(range(rank, len(dataset), world_size))
        self.loader = DataLoader(
            torch.utils.data.Subset(dataset, self.positions),
            batch_size=cfg.val_batch_size,
            collate_fn=_collate_val,
            **_loader_kwargs(cfg, device),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            batch["clean"] = _to_device_float(batch["clean"], self.device)
            yield batch


def _collate_val(samples: list[tuple[torch.Tensor, str, int]]) -> dict[str, Any]:
    clean, keys, index = zip(*samples, strict=True)
    return {"clean": torch.stack(clean), "keys": list(keys), "index": torch.tensor(index)}
