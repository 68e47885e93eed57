"""Strict configuration: YAML + dotted overrides fill typed dataclasses; bad input is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jicd.typed_config import parse_overrides
from trainer.config import Config, ConfigError, load_config, resolve_config, to_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  quality: 2\noptim:\n  lr: 0.001\n")
    cfg = load_config(path, ["model.quality=5", "optim.lr=2e-4", "engine.kind=ddp"])
    assert cfg.model.quality == 5
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.engine.kind == "ddp"
    assert cfg.loss.temperature == pytest.approx(0.07)  # untouched default


def test_unknown_key_names_key_and_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.qualty.*valid keys: .*quality"):
        load_config(None, ["model.qualty=3"])
    path = tmp_path / "c.yaml"
    path.write_text("modle:\n  quality: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'; valid keys: model"):
        load_config(path)


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.steps: expected int"):
        load_config(None, ["train.steps=1.5"])
    with pytest.raises(ConfigError, match=r"engine\.kind: invalid value 'horovod'.*deepspeed"):
        load_config(None, ["engine.kind=horovod"])


def test_bad_quality_is_an_error() -> None:
    with pytest.raises(ConfigError, match="quality"):
        load_config(None, ["model.quality=7"])


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides(["model.quality"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "smoke.yaml", ["optim.milestones=[5, 7]"])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(to_yaml(cfg))
    assert load_config(dumped) == cfg
    assert yaml.safe_load(dumped.read_text())["optim"]["milestones"] == [5, 7]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_paper_recipe_in_iterations() -> None:
    for q in range(1, 7):
        cfg = load_config(CONFIGS / f"q{q}.yaml")
        assert cfg.model.quality == q and cfg.model.preset == "jicd"
        assert cfg.train.global_batch_size == 16 and cfg.data.patch_size == 256
        assert cfg.train.steps == 600 * 1283
        assert cfg.optim.warmup_steps == 20 * 1283
        assert cfg.optim.milestones == [450 * 1283, 550 * 1283]
        assert (cfg.loss.lambda_g, cfg.loss.lambda_c, cfg.loss.temperature) == (3.0, 1.5, 0.07)
        assert cfg.train.loss_cap is None  # derived at start, written in no recipe
        resolved = resolve_config(load_config(CONFIGS / f"q{q}.yaml", ["train.init_from=none"]), 1)
        assert resolved.train.loss_cap == (100.0 if q <= 3 else 1000.0)
        assert load_config(CONFIGS / f"baseline_q{q}.yaml").model.preset == "baseline"


def test_sidd_recipe_is_the_baselines_with_paired_noise() -> None:
    per_epoch = 320 * 60 // 16  # SIDD-Medium pairs x 60 crops per epoch / batch 16
    for q in range(1, 7):
        sidd, flickr = load_config(CONFIGS / f"sidd_q{q}.yaml"), load_config(CONFIGS / f"q{q}.yaml")
        assert sidd.noise.kind == "paired" and sidd.data.shards == "data/sidd-shards"
        assert sidd.train.steps == 600 * per_epoch and sidd.optim.warmup_steps == 20 * per_epoch
        assert sidd.optim.milestones == [450 * per_epoch, 550 * per_epoch]
        assert (sidd.model, sidd.loss, sidd.train.loss_cap) == (
            flickr.model,
            flickr.loss,
            flickr.train.loss_cap,
        )


def test_resume_check_names_experiment_keys_and_ignores_newer_ones() -> None:
    from jicd.typed_config import to_dict
    from trainer.config import changed_keys

    saved = to_dict(resolve_config(load_config(CONFIGS / "smoke.yaml"), 2))
    del saved["loss"]["distortion"]  # a key added to jicd after this run started
    same = resolve_config(load_config(CONFIGS / "smoke.yaml", ["data.num_threads=3"]), 2)
    assert changed_keys(saved, same) == []
    other = resolve_config(
        load_config(CONFIGS / "smoke.yaml", ["model.channels=24", "train.seed=5"]), 2
    )
    assert changed_keys(saved, other) == ["data.seed", "model.channels", "train.seed"]


def test_an_override_yaml_cannot_parse_is_the_string_typed() -> None:
    """``train.init_from=@w.pt`` raised a yaml.scanner.ScannerError traceback (issue 21)."""
    cfg = load_config(None, ["train.init_from=@w.pt", "train.run_dir=runs/`x`"])
    assert cfg.train.init_from == "@w.pt" and cfg.train.run_dir == "runs/`x`"


@pytest.mark.parametrize("override", ["train.run_dir=runs/a #1", "train.run_dir=#tmp"])
def test_an_override_with_a_yaml_comment_is_refused_not_cut(override: str) -> None:
    """``train.run_dir=runs/a #1`` silently became ``runs/a`` (issue 21)."""
    with pytest.raises(ConfigError, match="as a comment; quote the value"):
        load_config(None, [override])
    cfg = load_config(None, ["train.run_dir='runs/a #1'"])
    assert cfg.train.run_dir == "runs/a #1"


def test_an_override_with_a_yaml_tag_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.run_dir"):
        load_config(None, ["train.run_dir=!!python/object/apply:os.system [echo]"])
