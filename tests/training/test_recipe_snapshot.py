"""Every recipe in ``configs/`` resolves to exactly the config recorded in the snapshot.

The snapshot (``fixtures/resolved_recipes/<recipe path>``) is each recipe's fully resolved
config — ``resolve_config(load_config(recipe), world_size=1)``, the ``config.yaml`` a one-rank
run would dump — written when the recipes were still full copies of each other, before they
became a base plus deltas. A recipe edit that changes what runs fails here; after an
intentional change, regenerate and review the diff:

    python tests/training/test_recipe_snapshot.py --write

Files under ``configs/base/`` are bases of other recipes, not recipes themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script: import this tree's packages
    sys.path.insert(0, str(REPO))

from jicd import distributed as D  # noqa: E402
from jicd.typed_config import to_dict  # noqa: E402
from trainer.config import load_config, resolve_config  # noqa: E402

CONFIGS = REPO / "configs"
SNAPSHOT = Path(__file__).resolve().parent / "fixtures" / "resolved_recipes"
PLACEHOLDER_INIT = "<init_from>"
SNAPSHOT_CORES = 9  # a rank's cores, for the loader counts a recipe leaves to the machine


def recipe_names() -> list[str]:
    """Every recipe, as its path under ``configs/`` (``q3.yaml``, ``ablation/row2_cl.yaml``)."""
    paths = sorted(CONFIGS.rglob("*.yaml"))
    return [p.relative_to(CONFIGS).as_posix() for p in paths if p.parent.name != "base"]


def resolved(name: str) -> dict:
    """The recipe's resolved config on one rank, ``train.init_from`` exactly as the file says.

    A fine-tuning recipe refuses to resolve without ``train.init_from``, so a placeholder is
    given for the resolution and the file's own value put back afterwards. Loader workers and
    threads are sized from the machine's cores when a recipe leaves them unset: the snapshot
    is taken as on a rank with ``SNAPSHOT_CORES`` cores.
    """
    loaded = load_config(CONFIGS / name)
    overrides = [f"train.init_from={PLACEHOLDER_INIT}"] if loaded.train.require_init_from else []
    with mock.patch.object(D, "cpus_per_local_rank", lambda: SNAPSHOT_CORES):
        cfg = resolve_config(load_config(CONFIGS / name, overrides), world_size=1)
    cfg.train.init_from = loaded.train.init_from
    return to_dict(cfg)


def write_snapshot() -> None:
    """Replace the snapshot with the recipes' current resolved configs."""
    for old in SNAPSHOT.rglob("*.yaml"):
        old.unlink()
    for name in recipe_names():
        path = SNAPSHOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(resolved(name), sort_keys=False))


def test_every_recipe_has_a_snapshot_and_every_snapshot_a_recipe() -> None:
    recorded = sorted(p.relative_to(SNAPSHOT).as_posix() for p in SNAPSHOT.rglob("*.yaml"))
    assert recipe_names() == recorded


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_resolves_to_its_snapshot(name: str) -> None:
    expected = yaml.safe_load((SNAPSHOT / name).read_text())
    assert resolved(name) == expected


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/training/test_recipe_snapshot.py --write")
    write_snapshot()
    print(f"wrote {len(recipe_names())} resolved recipes to {SNAPSHOT.relative_to(REPO)}")
