"""Recipes as a base plus deltas: the ``base:`` key, its errors, and the shipped recipes' shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jicd.typed_config import read_recipe, to_dict
from trainer.config import ConfigError, load_config, resolve_config
from trainer.config import flatten as flat
from trainer.train import write_run_metadata

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))

# Values resolve_config derives: written by hand they would silently pin what the quality,
# the world size or the head decide (``data.batch_size_per_gpu`` only with a global batch).
DERIVED = ("train.loss_cap", "loss.lmbda", "loss.normalize", "data.seed")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_delta_changes_only_what_it_names(tmp_path: Path) -> None:
    write(
        tmp_path / "common" / "root.yaml",
        "model: {quality: 2, channels: 16}\noptim: {lr: 0.001, milestones: [5, 7]}\n"
        "train: {init_from: a.pth}\n",
    )
    write(tmp_path / "common" / "mid.yaml", "base: root.yaml\nmodel: {quality: 4}\n")
    leaf = write(
        tmp_path / "leaf.yaml",
        "base: common/mid.yaml\noptim: {milestones: [9]}\ntrain: {init_from: null}\n",
    )
    cfg = load_config(leaf, ["optim.lr=2e-4"])
    assert (cfg.model.quality, cfg.model.channels) == (4, 16)  # mid over root, root kept
    assert cfg.optim.milestones == [9]  # a list replaces the base's, never appends
    assert cfg.train.init_from is None  # null replaces the base's value
    assert cfg.optim.lr == pytest.approx(2e-4)  # command line over the whole chain
    assert "base" not in read_recipe(leaf)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "base: a.yaml\n"}, r"config bases form a cycle: .*a\.yaml -> .*a\.yaml$"),
        (
            {
                "a.yaml": "base: b.yaml\n",
                "b.yaml": "base: sub/c.yaml\n",
                "sub/c.yaml": "base: ../a.yaml\n",
            },
            r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml$",
        ),
        ({"a.yaml": "base: missing.yaml\n"}, r"a\.yaml: base config not found: .*missing\.yaml"),
        (
            {"a.yaml": "base: [x.yaml]\n"},
            r"'base' must be the path of a YAML file, got \['x\.yaml'\]",
        ),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "model: [1\n"}, r"b\.yaml: invalid YAML"),
        ({"a.yaml": "base: b.yaml\nmodel: {qualty: 3}\n", "b.yaml": "{}\n"}, r"'model\.qualty'"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "modle: {}\n"}, r"unknown config key 'modle'"),
        ({"a.yaml": "model: {base: b.yaml}\n"}, r"unknown config key 'model\.base'"),
    ],
    ids=[
        "self",
        "three-cycle",
        "missing",
        "not-a-path",
        "bad-yaml",
        "unknown-in-delta",
        "unknown-in-base",
        "base-inside-a-section",
    ],  # fmt: skip
)
def test_bad_chains_are_one_line_errors(tmp_path: Path, files: dict, message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(info.value)


def test_a_chain_too_deep_is_refused(tmp_path: Path) -> None:
    for i in range(20):
        write(tmp_path / f"c{i}.yaml", f"base: c{i + 1}.yaml\n" if i < 19 else "{}\n")
    with pytest.raises(ConfigError, match="more than 16 nested config bases"):
        load_config(tmp_path / "c0.yaml")


def test_base_is_not_a_command_line_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(None, ["base=configs/q3.yaml"])


def test_jicd_train_reports_a_cycle_in_one_line(tmp_path: Path) -> None:
    config = write(tmp_path / "a.yaml", "base: a.yaml\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jicd", "train", "--config", str(config)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "config bases form a cycle" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_dumped_config_of_a_delta_recipe_is_the_resolved_one(tmp_path: Path) -> None:
    overrides = [f"train.run_dir={tmp_path}", "train.init_from=none"]
    cfg = resolve_config(load_config(CONFIGS / "q4.yaml", overrides), 1)
    write_run_metadata(cfg, tmp_path, [])
    dumped = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "base" not in dumped and dumped == to_dict(cfg)
    assert dumped["train"]["loss_cap"] == 1000.0 and dumped["optim"]["warmup_steps"] == 25660
    assert load_config(tmp_path / "config.yaml") == cfg  # loads back unchanged


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_no_recipe_writes_a_derived_value(path: Path) -> None:
    own = flat(yaml.safe_load(path.read_text()) or {})
    assert not [key for key in DERIVED if key in own]
    chain = flat(read_recipe(path))
    if chain.get("train.global_batch_size") is not None:
        assert "data.batch_size_per_gpu" not in chain


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_a_delta_restates_nothing_of_its_base(path: Path) -> None:
    own = yaml.safe_load(path.read_text()) or {}
    if "base" not in own:
        return
    inherited = flat(read_recipe(path.parent / own.pop("base")))
    repeated = [k for k, v in flat(own).items() if k in inherited and inherited[k] == v]
    assert not repeated, f"{path.name} repeats its base's {repeated}"


def test_recipes_that_were_copies_are_now_deltas() -> None:
    bases = {p.relative_to(CONFIGS).as_posix() for p in SHIPPED if p.parent.name == "base"}
    assert bases == {"base/paper.yaml", "base/sidd.yaml"}
    for path in SHIPPED:
        name = path.relative_to(CONFIGS).as_posix()
        if name.startswith(("q", "baseline_", "sidd_", "ablation/")):
            assert "base" in yaml.safe_load(path.read_text()), name


def test_jicd_train_prints_the_resolved_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.train import main

    argv = ["--config", str(CONFIGS / "sidd_q5.yaml"), "--print-config", "--world-size", "4"]
    assert main([*argv, "train.init_from=none", "optim.lr=2e-4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["noise"]["kind"] == "paired" and printed["model"]["quality"] == 5
    assert printed["train"]["loss_cap"] == 1000.0 and printed["data"]["batch_size_per_gpu"] == 4
    assert printed["optim"]["lr"] == pytest.approx(2e-4) and "base" not in printed
    assert main(["--config", str(CONFIGS / "q1.yaml"), "--print-config"]) == 2  # needs init_from
    assert "train.init_from=FILE" in capsys.readouterr().err
