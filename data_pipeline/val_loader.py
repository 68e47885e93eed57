"""The validation loader (both training backends): deterministic center crops decoded in PIL.

Validation is small and must give the same pixels whichever training backend is used, so one
implementation serves both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from data_pipeline.contract import LoaderPlace, ValBatch
from data_pipeline.data_config import DataConfig
from data_pipeline.manifest import SampleLocation, check_split, load_split
from data_pipeline.torch_loader import loader_kwargs, read_sample, to_device_float, to_uint8_chw
from data_pipeline.undecodable import BadSample


class _ValSamples(Dataset):
    """Map-style dataset of center crops: val position -> ``(clean uint8 | None, noisy uint8 |
    None, key, position, bad | None)`` (``noisy`` for paired shards; None and a report for an
    undecodable sample)."""

    def __init__(self, locations: list[SampleLocation], patch: int) -> None:
        self.locations, self.patch = locations, patch

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> tuple:
        location = self.locations[index]
        images, bad = read_sample(location, "val")
        if bad is not None:
            return None, None, location.key, index, bad
        width, height = images[0].size
        left = int(round((width - self.patch) / 2.0))  # torchvision CenterCrop rounding
        top = int(round((height - self.patch) / 2.0))
        crops = [to_uint8_chw(im.crop((left, top, left + self.patch, top + self.patch)))
                 for im in images]  # fmt: skip
        return crops[-1], crops[0] if location.pair else None, location.key, index, None


class ValLoader:
    """Finite validation loader: rank r gets val positions r, r + W, ... (uneven counts allowed).

    An undecodable sample is left out of its batch (validation sums are all-reduced once at the
    end, so ranks may hold different counts) and reported in :attr:`bad_samples`; the caller
    merges the reports of all ranks and calls :meth:`exclude`.
    """

    def __init__(self, cfg: DataConfig, place: LoaderPlace) -> None:
        rank, world_size, excluded = place.rank, place.world_size, place.excluded
        self.cfg, self.device = cfg, place.device
        files = load_split(cfg.shards, "val")
        check_split(files, "val", cfg.patch_size, 0)
        self.dataset = _ValSamples(files.locations(), cfg.patch_size)
        self.all_positions = list(range(rank, len(self.dataset), world_size))
        self.bad_samples: list[BadSample] = []
        self.excluded: set[str] = set()
        self.exclude(excluded)

    def exclude(self, keys: Iterable[str]) -> None:
        """Leave these samples out of every later validation."""
        self.excluded |= set(keys)
        locations = self.dataset.locations
        self.positions = [p for p in self.all_positions if locations[p].key not in self.excluded]
        self.loader = DataLoader(
            torch.utils.data.Subset(self.dataset, self.positions),
            batch_size=self.cfg.val_batch_size,
            collate_fn=_collate_val,
            **loader_kwargs(self.cfg, self.device),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[ValBatch]:
        for raw in self.loader:
            self.bad_samples += raw["bad_samples"]
            if not raw["keys"]:
                continue  # every sample of this batch was undecodable
            clean = to_device_float(raw["clean"], self.device)
            batch = ValBatch(clean=clean, keys=raw["keys"], index=raw["index"])
            if "noisy" in raw:
                batch["noisy"] = to_device_float(raw["noisy"], self.device)
            yield batch


def _collate_val(samples: list[tuple]) -> dict[str, Any]:
    good = [s for s in samples if s[0] is not None]
    bad = [s[4] for s in samples if s[0] is None]
    if not good:
        return {"keys": [], "bad_samples": bad}
    clean, noisy, keys, index, _ = zip(*good, strict=True)
    batch = {
        "clean": torch.stack(clean),
        "keys": list(keys),
        "index": torch.tensor(index),
        "bad_samples": bad,
    }
    if noisy[0] is not None:
        batch["noisy"] = torch.stack(noisy)
    return batch
