"""SIDD pair discovery and validation blocks on a tiny SIDD-shaped folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sidd_fixtures import SCENES, make_sidd, make_validation_mats

from jicd.errors import UserError
from jicd.sidd import find_pairs, load_validation_blocks, scene_metadata


def test_pairs_metadata_and_reported_problems(tmp_path: Path) -> None:
    root = make_sidd(tmp_path / "SIDD_Medium_Srgb")
    for src in (root, root / "Data"):  # the dataset root or its Data/ folder
        pairs, problems = find_pairs(src)
        assert [p.key for p in pairs] == [
            f"{SCENES[0]}_010", f"{SCENES[0]}_011", f"{SCENES[1]}_010", f"{SCENES[1]}_011",
            f"{SCENES[2]}_011",
        ]  # fmt: skip
        assert len(problems) == 1 and "no matching GT_SRGB_010.PNG" in problems[0]
    first = pairs[0]
    assert first.noisy.name == "NOISY_SRGB_010.PNG" and first.clean.name == "GT_SRGB_010.PNG"
    assert first.meta == {"instance": "0001", "scene": "001", "camera": "S6", "iso": 100,
                          "shutter": 60, "temperature": 3200, "brightness": "L",
                          "entry": "010"}  # fmt: skip
    assert scene_metadata("holiday_photos") is None
    with pytest.raises(UserError, match="no SIDD scene folders"):
        find_pairs(tmp_path)


def test_validation_blocks(tmp_path: Path) -> None:
    folder = make_validation_mats(tmp_path / "mats")
    noisy, clean = load_validation_blocks(folder)
    assert noisy.shape == clean.shape == (2, 3, 64, 64, 3) and noisy.dtype == np.uint8
    assert np.abs(noisy.astype(int) - clean.astype(int)).max() <= 20
    (folder / "ValidationGtBlocksSrgb.mat").unlink()
    with pytest.raises(UserError, match="ValidationGtBlocksSrgb.mat not found"):
        load_validation_blocks(folder)
