"""Write a folder of images as WebDataset shards (+ DALI indexes and a manifest).

Layout of ``OUT``::

    train-000000.tar  train-000000.idx  ...  val-000000.tar  val-000000.idx  manifest.json

Selection (the baseline's Flickr2W recipe): every image under ``SRC`` (recursive), minus those
with a side < ``min_side`` (header read only) and those that do not decode (listed in the manifest
under ``skipped`` and printed), sorted by relative path; the first ``1 - val_fraction`` go to
``train``, the rest to ``val`` (at least one when there are two images or more).

Stored format — decided so that no pixel is ever altered and every sample decodes identically in
DALI and in PIL:

* 8-bit RGB or grey JPEG and PNG files without an EXIF rotation are stored **byte for byte**
  (JPEG is what DALI decodes on the GPU; re-encoding would add a second generation of artifacts);
* everything else (palette/alpha/16-bit PNG, WebP, BMP, TIFF, CMYK JPEG, rotated JPEG) is decoded,
  rotated upright, converted to 8-bit RGB and stored **losslessly** as PNG (default: fast to decode
  on the CPU; DALI decodes it on the host) or lossless JPEG 2000 (``lossless_format="jp2"``: DALI
  decodes it on the GPU, bit-exactly). Never as lossy JPEG: that would teach the codec JPEG
  artifacts.

Each sample is one tar member ``<key>.<ext>``; keys are the sanitised relative paths (only
``[A-Za-z0-9_-]``, no dots, unique). Output is deterministic: the same input gives byte-identical
shards (fixed tar mtime/owner/mode, sorted input, fixed shard boundaries). The output folder is
written under a temporary name and renamed at the end, so a crash leaves no half-written output.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import webdataset as wds
from PIL import Image, ImageOps

from data_pipeline.manifest import MANIFEST_NAME, write_dali_index
from data_pipeline.parallel import parallel_map, worker_count
from data_pipeline.verify import Problem, verify_shards
from jicd.errors import UserError
from jicd.files import IMAGE_SUFFIXES, find_images, sha256_file
from jicd.pixels import png_bit_depth, to_rgb8

SPLITS = ("train", "val")
_PASS_THROUGH = {"JPEG": "jpg", "PNG": "png"}
_EXIF_ORIENTATION = 0x0112


@dataclass
class ShardConfig:
    """How ``prepare_shards`` selects, splits and stores images."""

    min_side: int = 256
    """Images with a side shorter than this are dropped (baseline: 256)."""
    val_fraction: float = 0.01
    """Fraction of the sorted images (the last ones) that form the validation split."""
    maxcount: int = 1000
    """Samples per shard (only the last shard of a split is shorter)."""
    lossless_format: str = "png"
    """Storage of re-encoded images: "png" or "jp2" (lossless JPEG 2000)."""
    workers: int = 0
    """Parallel processes for checking and writing; 0 = one per CPU core."""

    def __post_init__(self) -> None:
        if self.lossless_format not in ("png", "jp2"):
            raise UserError(f"lossless_format: 'png' or 'jp2', not {self.lossless_format!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.maxcount < 1 or self.min_side < 1 or self.workers < 0:
            raise UserError("maxcount and min_side must be >= 1 and workers >= 0")

    def stored_name(self, stored_as: str) -> str:
        """A probe's storage ("jpg", "png" or "lossless") as recorded for the sample."""
        return f"lossless-{self.lossless_format}" if stored_as == "lossless" else stored_as


@dataclass
class ProbeResult:
    """What checking one source image found (``status``: "ok", "small" or "corrupt")."""

    status: str
    width: int = 0
    height: int = 0
    stored_as: str = ""  # "jpg"/"png": original bytes; "lossless": to be re-encoded
    error: str = ""


@dataclass
class Sample:
    """One accepted image: its shard key and where it comes from."""

    key: str
    path: str  # relative to SRC, POSIX separators
    width: int
    height: int
    stored_as: str  # "jpg"/"png": source bytes unchanged; "lossless-png"/"lossless-jp2": re-encoded
    split: str = ""

    def members(self, src_dir: str) -> dict[str, bytes]:
        """Tar members of this sample: ``{extension: payload}`` (one image)."""
        ext, payload = stored_bytes(os.path.join(src_dir, self.path), self.stored_as)
        return {ext: payload}


@dataclass
class _ShardJob:
    """A group of consecutive shards written by one process."""

    out_dir: str
    src_dir: str
    split: str
    first_shard: int
    samples: list = field(default_factory=list)
    """:class:`Sample` or anything with ``key`` and ``members(src_dir)`` (a paired sample)."""


def source_images(src_dir: Path) -> list[str]:
    """Relative POSIX paths of all image files under ``src_dir``, sorted."""
    return sorted(p.relative_to(src_dir).as_posix() for p in find_images(src_dir, recursive=True))


def make_keys(rel_paths: list[str]) -> list[str]:
    """Sanitised, unique WebDataset keys: the path without suffix, only ``[A-Za-z0-9_-]``.

    WebDataset and DALI take everything after the first dot of a member name as its extension,
    so dots (and slashes, spaces, ...) become ``_``; clashes get ``-1``, ``-2``, ... in order.
    """
    keys: list[str] = []
    used: set[str] = set()
    for rel in rel_paths:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(rel)[0]) or "img"
        key, n = base, 0
        while key in used:
            n += 1
            key = f"{base}-{n}"
        used.add(key)
        keys.append(key)
    return keys


def probe_image(path: str, min_side: int) -> ProbeResult:
    """Check one image: size from the header, then a full decode to catch corrupt files."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if min(width, height) < min_side:
                return ProbeResult("small", width, height)
            img.load()  # raises on truncated or otherwise undecodable data
            return ProbeResult("ok", width, height, stored_as=_storage_of(img, path))
    except Exception as exc:  # PIL raises many unrelated types for bad data
        return ProbeResult("corrupt", error=f"{type(exc).__name__}: {exc}".splitlines()[0])


def _storage_of(img: Image.Image, path: str) -> str:
    """ "jpg"/"png" when the original bytes can be stored as they are, else "lossless"."""
    ext = _PASS_THROUGH.get(img.format or "")
    rotated = img.getexif().get(_EXIF_ORIENTATION, 1) != 1
    if ext is None or img.mode not in ("RGB", "L") or rotated:
        return "lossless"
    if ext == "png" and png_bit_depth(path) != 8:  # PIL reports 16-bit RGB PNGs as "RGB" too
        return "lossless"
    return ext


def stored_bytes(path: str, stored_as: str) -> tuple[str, bytes]:
    """Tar member extension and payload of one sample (``stored_as`` as in :class:`Sample`)."""
    if not stored_as.startswith("lossless-"):
        with open(path, "rb") as handle:
            return stored_as, handle.read()
    with Image.open(path) as img:
        rgb = to_rgb8(ImageOps.exif_transpose(img))
    buffer = io.BytesIO()
    lossless_format = stored_as.removeprefix("lossless-")
    if lossless_format == "jp2":
        rgb.save(buffer, format="JPEG2000", irreversible=False, no_jp2=False)
    else:
        rgb.save(buffer, format="PNG", compress_level=6)
    return lossless_format, buffer.getvalue()


def _write_shard_group(job: _ShardJob, maxcount: int) -> list[dict]:
    """Write ``job.samples`` as shards ``<split>-<first_shard>...``; return one record per shard."""
    records: list[dict] = []

    def finish(tar_path: str) -> None:
        idx_path = tar_path[: -len(".tar")] + ".idx"
        count = write_dali_index(tar_path, idx_path)
        name = os.path.basename(tar_path)
        records.append({"name": name, "index": os.path.basename(idx_path), "num_samples": count})
        records[-1].update(size=os.path.getsize(tar_path), sha256=sha256_file(tar_path))

    pattern = os.path.join(job.out_dir.replace("%", "%%"), f"{job.split}-%06d.tar")
    # mtime/user/group/mode fixed and encoder off: identical input gives identical bytes.
    with wds.ShardWriter(
        pattern,
        maxcount=maxcount,
        maxsize=float("inf"),
        post=finish,
        start_shard=job.first_shard,
        verbose=0,
        encoder=False,
        mtime=0.0,
        user="jicd",
        group="jicd",
        mode=0o444,
    ) as writer:
        for sample in job.samples:
            writer.write({"__key__": sample.key, **sample.members(job.src_dir)})
    return records


def _shard_jobs(
    samples: list, split: str, cfg: ShardConfig, out_dir: str, src: str
) -> list[_ShardJob]:
    """Cut ``samples`` into groups of whole shards, about one group per worker."""
    n_shards = -(-len(samples) // cfg.maxcount)
    per_job = max(1, -(-n_shards // worker_count(cfg.workers)))
    jobs = []
    for first in range(0, n_shards, per_job):
        chunk = samples[first * cfg.maxcount : (first + per_job) * cfg.maxcount]
        jobs.append(_ShardJob(out_dir, src, split, first, chunk))
    return jobs


def _select(src: Path, cfg: ShardConfig) -> tuple[list[Sample], dict[str, list]]:
    """Probe every image; return the accepted samples (sorted) and the skipped ones."""
    rel_paths = source_images(src)
    if not rel_paths:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}")
    paths = [str(src / rel) for rel in rel_paths]
    probes = list(parallel_map(probe_image, paths, cfg.workers, "check", "img", cfg.min_side))
    skipped: dict[str, list] = {"too_small": [], "corrupt": []}
    accepted = []
    for rel, probe in zip(rel_paths, probes, strict=True):
        if probe.status == "small":
            skipped["too_small"].append({"path": rel, "size": [probe.width, probe.height]})
        elif probe.status == "corrupt":
            skipped["corrupt"].append({"path": rel, "error": probe.error})
        else:
            accepted.append((rel, probe))
    keys = make_keys([rel for rel, _ in accepted])
    samples = [
        Sample(key, rel, probe.width, probe.height, cfg.stored_name(probe.stored_as))
        for key, (rel, probe) in zip(keys, accepted, strict=True)
    ]
    return samples, skipped


def split_samples(samples: list[Sample], val_fraction: float) -> dict[str, list[Sample]]:
    """First ``1 - val_fraction`` of the (sorted) samples -> train, the rest -> val."""
    n_train = max(1, int(len(samples) * (1.0 - val_fraction) + 1e-9))  # train never empty
    if val_fraction > 0 and len(samples) >= 2:
        n_train = min(n_train, len(samples) - 1)
    splits = {"train": samples[:n_train], "val": samples[n_train:]}
    for split, members in splits.items():
        for sample in members:
            sample.split = split
    return splits


def prepare_shards(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ShardConfig | None = None
) -> dict:
    """Write the shards of ``src_dir`` into ``out_dir`` (which must not exist or be empty).

    Returns:
        The manifest (also written as ``out_dir/manifest.json``).

    Raises:
        ValueError: no images under ``src_dir``, or ``out_dir`` not empty.
        FileNotFoundError: ``src_dir`` does not exist.
    """
    cfg = cfg or ShardConfig()
    src, out = Path(src_dir).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src_dir}")
    check_output_folder(out, out_dir)
    samples, skipped = _select(src, cfg)
    return publish(out, lambda tmp: _write_all(samples, skipped, src, tmp, cfg), cfg.workers)


def check_output_folder(out: Path, given: str | os.PathLike) -> None:
    """Refuse an output folder that exists and is not empty (nothing is ever overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output folder exists and is not empty: {given}")


def publish(out: Path, write: Callable[[str], dict], workers: int) -> dict:
    """Write a shard folder under a temporary name, verify it, then rename it to ``out``.

    Args:
        out: the final folder (absent or empty).
        write: writes the shards into the given temporary folder and returns the manifest.
        workers: processes for the verification.

    Returns:
        The manifest (also written as ``out/manifest.json``).
    """
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = write(str(tmp))
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
        # Read back what was written, as `jicd check-shards` does, before the folder appears.
        problems = verify_shards(tmp, workers)["problems"]
        if problems:
            raise UserError(
                f"the shards written do not verify ({len(problems)} problems; first: "
                f"{Problem(**problems[0])})"
            )
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def write_splits(splits: dict[str, list], src: Path, tmp: str, cfg: ShardConfig) -> dict:
    """Write every split's shards into ``tmp`` (in parallel); the manifest's ``splits`` entry."""
    jobs = [job for name in SPLITS for job in _shard_jobs(splits[name], name, cfg, tmp, str(src))]
    groups = parallel_map(_write_shard_group, jobs, cfg.workers, "write", "group", cfg.maxcount)
    shards = [record for group in groups for record in group]
    return {
        name: {
            "num_samples": len(splits[name]),
            "shards": [s for s in shards if s["name"].startswith(f"{name}-")],
        }
        for name in SPLITS
    }


def _write_all(
    samples: list[Sample], skipped: dict[str, list], src: Path, tmp: str, cfg: ShardConfig
) -> dict:
    """Write both splits' shards into ``tmp``; return the manifest."""
    splits = split_samples(samples, cfg.val_fraction)
    return {
        "format": "jicd-shards",
        "version": 1,
        "source": str(src),
        "settings": asdict(cfg),
        "pixel_format": (
            "8-bit RGB (grey JPEG/PNG decode to RGB). 'jpg'/'png' members are the source bytes "
            f"unchanged; other sources were stored as lossless {cfg.lossless_format}."
        ),
        "splits": write_splits(splits, src, tmp, cfg),
        "samples": [asdict(s) for s in samples],
        "skipped": skipped,
    }
