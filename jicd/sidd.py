"""Real camera noise from SIDD (Abdelhamed, Lin, Brown, CVPR 2018): finding noisy/clean pairs.

SIDD-Medium sRGB is a ``Data/`` folder of scene instances named
``<instance>_<scene>_<camera>_<ISO>_<shutter>_<temperature>_<brightness>`` (for example
``0001_001_S6_00100_00060_3200_L``), each holding ``NOISY_SRGB_<k>.PNG`` and ``GT_SRGB_<k>.PNG``
(k = 010, 011). The validation benchmark is two MATLAB files, ``ValidationNoisyBlocksSrgb.mat``
and ``ValidationGtBlocksSrgb.mat``, each a uint8 array ``(40 scenes, 32 blocks, 256, 256, 3)``.

The ECCV'22 baseline's protocol (its ``codes/scripts/sidd_tile_annotations.py``,
``sidd_block.py`` and ``compressai/datasets/SiddDataset.py``), which jicd follows:

* training: every pair of SIDD-Medium sRGB (noisy k paired with GT k, by sorted name), random
  256-px crops taken at the same place in both, uniformly over the whole image (the baseline
  cuts images into a per-camera grid of tiles only to read less per crop; the crop distribution
  is the same); one epoch visits each pair 60 times;
* validation / test: the 40 × 32 validation blocks of the benchmark ``.mat`` files, whole.

jicd's ``prepare-shards --pairs sidd`` additionally holds out ``--val-fraction`` of the scene
*instances* (never a pair of a training instance) for in-training validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jicd.errors import UserError

SCENE_PATTERN = re.compile(r"^(\d{4})_(\d{3})_([A-Z0-9]{2})_(\d+)_(\d+)_(\d+)_([LNH])$")
NOISY_PATTERN = re.compile(r"^NOISY_SRGB_(\d+)\.png$", re.IGNORECASE)
VAL_NOISY_MAT, VAL_GT_MAT = "ValidationNoisyBlocksSrgb.mat", "ValidationGtBlocksSrgb.mat"
VAL_NOISY_KEY, VAL_GT_KEY = "ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb"


@dataclass(frozen=True)
class Pair:
    """One noisy/clean image pair of a scene instance.

    Attributes:
        key: unique sample key, ``<scene folder>_<k>``.
        noisy, clean: the two PNG files.
        meta: scene instance, scene, camera, ISO, shutter, temperature, brightness, entry.
    """

    key: str
    noisy: Path
    clean: Path
    meta: dict


def scene_metadata(folder_name: str) -> dict | None:
    """Fields of a SIDD scene folder name, or None when the name is not one."""
    match = SCENE_PATTERN.match(folder_name)
    if not match:
        return None
    instance, scene, camera, iso, shutter, temperature, brightness = match.groups()
    return {
        "instance": instance,
        "scene": scene,
        "camera": camera,
        "iso": int(iso),
        "shutter": int(shutter),
        "temperature": int(temperature),
        "brightness": brightness,
    }


def data_root(src: Path) -> Path:
    """``src`` itself or its ``Data/`` folder, whichever holds the scene folders."""
    for candidate in (src / "Data", src):
        if candidate.is_dir() and any(
            scene_metadata(p.name) for p in candidate.iterdir() if p.is_dir()
        ):
            return candidate
    raise UserError(
        f"{src}: no SIDD scene folders (like 0001_001_S6_00100_00060_3200_L) in it or in Data/"
    )


def find_pairs(src: Path) -> tuple[list[Pair], list[str]]:
    """All noisy/clean pairs under a SIDD-Medium root, and one line per skipped problem.

    A noisy image without its GT is reported and skipped, never fatal; sizes are checked when
    the shards are written (that needs the image headers).
    """
    root = data_root(src)
    pairs, problems = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = scene_metadata(folder.name)
        if meta is None:
            problems.append(f"{folder}: not a SIDD scene folder name, skipped")
            continue
        files = {p.name.upper(): p for p in folder.iterdir() if p.is_file()}
        noisy = sorted((m.group(1), p) for n, p in files.items() if (m := NOISY_PATTERN.match(n)))
        if not noisy:
            problems.append(f"{folder}: no NOISY_SRGB_*.PNG, skipped")
        for entry, noisy_path in noisy:
            clean_path = files.get(f"GT_SRGB_{entry}.PNG")
            if clean_path is None:
                problems.append(f"{noisy_path}: no matching GT_SRGB_{entry}.PNG, skipped")
                continue
            pairs.append(Pair(f"{folder.name}_{entry}", noisy_path, clean_path,
                              {**meta, "entry": entry}))  # fmt: skip
    if not pairs:
        raise UserError(f"{src}: no complete NOISY/GT pairs found")
    return pairs, problems


def load_validation_blocks(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's validation blocks: ``(noisy, clean)`` uint8 ``(S, K, 256, 256, 3)``.

    Args:
        folder: holds ``ValidationNoisyBlocksSrgb.mat`` and ``ValidationGtBlocksSrgb.mat``.

    Raises:
        UserError: a file is missing, unreadable, lacks its array or the shapes differ.
    """
    from scipy.io import loadmat  # deferred: only SIDD evaluation needs SciPy's MATLAB reader

    arrays = []
    for name, key in ((VAL_NOISY_MAT, VAL_NOISY_KEY), (VAL_GT_MAT, VAL_GT_KEY)):
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} not found (the SIDD benchmark validation blocks)")
        try:
            content = loadmat(str(path))
        except (ValueError, OSError) as err:
            raise UserError(f"{path}: not a readable MATLAB file ({err})") from None
        if key not in content:
            raise UserError(f"{path}: no array {key!r}")
        arrays.append(np.asarray(content[key]))
    noisy, clean = arrays
    if noisy.shape != clean.shape or noisy.ndim != 5 or noisy.shape[-1] != 3:
        raise UserError(
            f"{folder}: validation blocks must be two equal (scenes, blocks, H, W, 3) arrays, "
            f"got {noisy.shape} and {clean.shape}"
        )
    return noisy.astype(np.uint8), clean.astype(np.uint8)


def is_validation_blocks(folder: Path) -> bool:
    return (folder / VAL_NOISY_MAT).is_file() or (folder / VAL_GT_MAT).is_file()


def find_named_pairs(folder: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pairs in any folder tree where a noisy file's name contains ``NOISY`` and its clean
    twin the same name with ``GT`` (SIDD-Medium, or the baseline's block PNGs
    ``<scene>_NOISY_SRGB_<k>.png`` / ``<scene>_GT_SRGB_<k>.png``).

    Returns:
        ``[(name, noisy, clean)]`` sorted by path, and one line per noisy file without a twin.
    """
    pairs, problems = [], []
    for noisy in sorted(p for p in folder.rglob("*") if p.is_file() and "NOISY" in p.name.upper()):
        index = noisy.name.upper().index("NOISY")
        twin = noisy.with_name(noisy.name[:index] + "GT" + noisy.name[index + 5 :])
        if twin.is_file():
            pairs.append((noisy.relative_to(folder).as_posix().replace("/", "_"), noisy, twin))
        else:
            problems.append(f"{noisy}: no clean twin {twin.name}, skipped")
    return pairs, problems
