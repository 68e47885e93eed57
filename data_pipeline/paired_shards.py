"""Shards of noisy/clean image pairs (``jicd prepare-shards --pairs sidd SRC OUT``).

Each sample holds three tar members::

    <key>.noisy.png   the noisy image (source bytes unchanged when 8-bit RGB PNG/JPEG, else
                      lossless, as :mod:`data_pipeline.shards` stores single images)
    <key>.clean.png   its clean twin, pixel-aligned, the same size
    <key>.json        the scene metadata (instance, scene, camera, ISO, shutter, temperature,
                      brightness, entry) of :func:`jicd.sidd.scene_metadata`

and the manifest says ``"pairs": "sidd"``; loaders then deliver ``noisy`` next to ``clean``.

Selection: every NOISY/GT pair of SIDD-Medium sRGB (:func:`jicd.sidd.find_pairs`). Reported and
skipped, never fatal: a noisy image without its GT, a pair whose two images differ in size, a
pair with a side below ``min_side``, an image that does not decode (manifest ``skipped``).

Split (``val_fraction``): whole scene *instances* go to ``val`` — both entries of an instance
and never a pair of a training instance — chosen evenly spaced over the sorted instances so the
held-out ones span the cameras. This in-training validation is jicd's; the baseline trains on
every Medium pair and validates on the benchmark's validation blocks (``jicd evaluate`` on the
``.mat`` folder): use ``--val-fraction 0`` for its exact training set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from data_pipeline.parallel import parallel_map
from data_pipeline.shards import (
    ShardConfig,
    check_output_folder,
    probe_image,
    publish,
    stored_bytes,
    write_splits,
)
from jicd.errors import UserError
from jicd.sidd import Pair, find_pairs

PAIR_KINDS = ("sidd",)
NOISY, CLEAN, META = "noisy", "clean", "json"


@dataclass
class PairSample:
    """One accepted pair: its key, both files (relative to SRC) and how each is stored."""

    key: str
    noisy: str
    clean: str
    width: int
    height: int
    stored_noisy: str
    stored_clean: str
    meta: dict
    split: str = ""

    def members(self, src_dir: str) -> dict[str, bytes]:
        """``{"noisy.<ext>": …, "clean.<ext>": …, "json": …}`` of this sample."""
        out = {}
        for role, rel, stored in ((NOISY, self.noisy, self.stored_noisy),
                                  (CLEAN, self.clean, self.stored_clean)):  # fmt: skip
            ext, payload = stored_bytes(os.path.join(src_dir, rel), stored)
            out[f"{role}.{ext}"] = payload
        out[META] = json.dumps(self.meta, sort_keys=True).encode()
        return out


def probe_pair(pair: Pair, min_side: int) -> tuple[str, str, int, int, tuple[str, str]]:
    """Decode both images of ``pair``.

    Returns:
        ``(status, detail, width, height, (stored_noisy, stored_clean))``; status is "ok",
        "small", "mismatched" or "corrupt" (detail says why).
    """
    probes = [probe_image(str(path), 1) for path in (pair.noisy, pair.clean)]
    for path, probe in zip((pair.noisy, pair.clean), probes, strict=True):
        if probe.status == "corrupt":
            return "corrupt", f"{path.name}: {probe.error}", 0, 0, ("", "")
    noisy, clean = probes
    width, height = noisy.width, noisy.height
    if (width, height) != (clean.width, clean.height):
        detail = f"noisy {width}x{height}, clean {clean.width}x{clean.height}"
        return "mismatched", detail, width, height, ("", "")
    if min(width, height) < min_side:
        return "small", f"{width}x{height}", width, height, ("", "")
    return "ok", "", width, height, (noisy.stored_as, clean.stored_as)


def split_by_instance(samples: list[PairSample], val_fraction: float) -> dict[str, list]:
    """Whole scene instances to ``val``: ``round(val_fraction · n)`` of the ``n`` sorted ones
    (at least one when the fraction is positive and there are two instances or more), evenly
    spaced; the rest to ``train``."""
    instances = sorted({s.meta["instance"] for s in samples})
    count = round(val_fraction * len(instances))
    if val_fraction > 0 and len(instances) >= 2:
        count = min(max(count, 1), len(instances) - 1)
    held = {instances[int((i + 0.5) * len(instances) / count)] for i in range(count)}
    splits: dict[str, list] = {"train": [], "val": []}
    for sample in samples:
        sample.split = "val" if sample.meta["instance"] in held else "train"
        splits[sample.split].append(sample)
    return splits


def _select(src: Path, cfg: ShardConfig) -> tuple[list[PairSample], dict[str, list], Path]:
    pairs, problems = find_pairs(src)
    root = pairs[0].noisy.parents[1]  # the folder holding the scene folders
    probes = list(parallel_map(probe_pair, pairs, cfg.workers, "check", "pair", cfg.min_side))
    incomplete = [{"path": p.removesuffix(", skipped"), "error": ""} for p in problems]
    skipped: dict[str, list] = {"incomplete": incomplete, "too_small": [], "mismatched": [],
                                "corrupt": []}  # fmt: skip
    reasons = {"small": "too_small", "mismatched": "mismatched", "corrupt": "corrupt"}
    samples = []
    for pair, (status, detail, width, height, stored) in zip(pairs, probes, strict=True):
        rel = pair.noisy.relative_to(root).as_posix()
        if status != "ok":
            skipped[reasons[status]].append({"path": rel, "error": detail})
            continue
        stored_noisy, stored_clean = (cfg.stored_name(s) for s in stored)
        clean = pair.clean.relative_to(root).as_posix()
        samples.append(
            PairSample(pair.key, rel, clean, width, height, stored_noisy, stored_clean, pair.meta)
        )
    if not samples:
        raise UserError(f"{src}: no usable pairs ({sum(map(len, skipped.values()))} skipped)")
    return samples, skipped, root


def prepare_paired_shards(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ShardConfig | None = None,
    kind: str = "sidd",
) -> dict:
    """Write the pair shards of a SIDD-Medium sRGB folder (root or ``Data/``) into ``out_dir``.

    Returns:
        The manifest (also ``out_dir/manifest.json``); ``skipped`` lists every problem found.

    Raises:
        UserError: no SIDD scene folders, no usable pair, or ``out_dir`` not empty.
    """
    if kind not in PAIR_KINDS:
        raise UserError(f"--pairs: unknown kind {kind!r}; choose from {', '.join(PAIR_KINDS)}")
    cfg = cfg or ShardConfig()
    src, out = Path(src_dir).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src_dir}")
    check_output_folder(out, out_dir)
    samples, skipped, root = _select(src, cfg)

    def write(tmp: str) -> dict:
        splits = split_by_instance(samples, cfg.val_fraction)
        return {
            "format": "jicd-shards",
            "version": 1,
            "pairs": kind,
            "source": str(root),
            "settings": asdict(cfg),
            "pixel_format": (
                "8-bit RGB pairs: <key>.noisy.<ext> and <key>.clean.<ext>, pixel-aligned, "
                "the same size; <key>.json holds the scene metadata."
            ),
            "splits": write_splits(splits, root, tmp, cfg),
            "samples": [asdict(s) for s in samples],
            "skipped": skipped,
        }

    return publish(out, write, cfg.workers)
