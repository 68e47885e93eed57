"""Weight import (cheng2020-anchor → ga0/ga1), inference export and loading."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from compressai.models import Cheng2020Anchor

from jicd.models import JointDenoisingCodec, ModelConfig, build_model_from_config
from jicd.models.identity import weights_digest
from jicd.models.weights import load_compressai_anchor, load_for_inference, save_export

TINY = 16


def image(height: int = 64, width: int = 128) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))


def tiny_cfg(**kwargs) -> ModelConfig:
    return ModelConfig(quality=1, channels=TINY, **kwargs)


def legacy_key(key: str) -> str:
    """``entropy_bottleneck.matrices.0`` → ``module.entropy_bottleneck._matrices.0``, etc."""
    for new, old in (("matrices", "_matrices"), ("biases", "_biases"), ("factors", "_factors")):
        key = key.replace(f"entropy_bottleneck.{new}.", f"entropy_bottleneck.{old}.")
    return "module." + key.replace(".skip.", ".downsample.")


def test_anchor_weights_load_into_split_analysis(tmp_path):
    torch.manual_seed(0)
    anchor = Cheng2020Anchor(TINY).eval()
    model = build_model_from_config(tiny_cfg()).eval()
    # A file as older tools write it: wrapped, DataParallel prefixes, pre-1.2 key names.
    wrapped = {"state_dict": {legacy_key(k): v for k, v in anchor.state_dict().items()}}
    torch.save(wrapped, tmp_path / "anchor.pth")
    load_compressai_anchor(model, tmp_path / "anchor.pth")
    x = image()
    with torch.no_grad():
        assert torch.equal(model.ga1(model.ga0(x)), anchor.g_a(x))
        assert torch.equal(model.g_s[0].conv1.weight, anchor.g_s[0].conv1.weight)
        eb_anchor, eb_model = anchor.entropy_bottleneck, model.entropy_bottleneck
        assert torch.equal(eb_model.matrices[1], eb_anchor.matrices[1])


def test_anchor_with_other_channels_is_a_clear_error():
    model = build_model_from_config(tiny_cfg())
    with pytest.raises(ValueError, match=r"has N=32 .*expected N=16") as err:
        load_compressai_anchor(model, Cheng2020Anchor(32).state_dict())
    assert "\n" not in str(err.value)


def test_anchor_with_missing_or_extra_keys_is_rejected():
    model = build_model_from_config(tiny_cfg())
    state = Cheng2020Anchor(TINY).state_dict()
    del state["h_a.0.weight"]
    with pytest.raises(ValueError, match="missing keys"):
        load_compressai_anchor(model, state)
    state = Cheng2020Anchor(TINY).state_dict() | {"extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected keys"):
        load_compressai_anchor(model, state)


def test_export_round_trip_codes_real_bitstreams(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(contrastive=False)
    model = build_model_from_config(cfg)
    path = tmp_path / "export" / "model.pt"
    save_export(path, model, cfg)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left
    assert model.gaussian_conditional.quantized_cdf.numel() == 0  # training model untouched

    loaded, identity = load_for_inference(path)
    assert isinstance(loaded, JointDenoisingCodec) and not loaded.training
    assert identity == {
        "arch": "jicd[-contrastive]",
        "quality": 1,
        "channels": TINY,
        "weights_sha256": weights_digest(model.state_dict()),
        "legacy_sha256": [hashlib.sha256(path.read_bytes()).hexdigest()],
        "entropy": "float",
    }
    for key, value in model.state_dict().items():
        if "cdf" not in key and "offset" not in key and "scale_table" not in key:
            assert torch.equal(value, loaded.state_dict()[key]), key
    with torch.no_grad():
        coded = loaded.compress(image())
        decoded = loaded.decompress(coded["strings"], coded["shape"])
    assert len(coded["strings"][0][0]) > 0 and decoded["x_hat"].shape == image().shape


def test_plain_anchor_loads_as_sequential_comparator(tmp_path):
    torch.manual_seed(0)
    anchor = Cheng2020Anchor(TINY)
    torch.save(anchor.state_dict(), tmp_path / "anchor.pth")
    loaded, identity = load_for_inference(tmp_path / "anchor.pth")
    assert type(loaded) is Cheng2020Anchor
    assert (identity["arch"], identity["quality"], identity["channels"]) == (
        "cheng2020-anchor",
        None,
        TINY,
    )
    with torch.no_grad():
        coded = loaded.compress(image())
    assert isinstance(coded["strings"][0][0], bytes) and len(coded["strings"][0][0]) > 0


def test_bad_files_give_one_line_value_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    wrong_version = tmp_path / "v9.pt"
    torch.save(
        {"format": "jicd-export", "version": 9, "model": {}, "state_dict": {}}, wrong_version
    )
    bad_key = tmp_path / "bad_key.pt"
    torch.save(
        {"format": "jicd-export", "version": 1, "model": {"nope": 1}, "state_dict": {}}, bad_key
    )
    wrong_weights = tmp_path / "wrong_weights.pt"
    payload = {"format": "jicd-export", "version": 1, "model": asdict(tiny_cfg())}
    torch.save(payload | {"state_dict": Cheng2020Anchor(TINY).state_dict()}, wrong_weights)
    for path in (tmp_path / "missing.pt", garbage, wrong_version, bad_key, wrong_weights):
        with pytest.raises(ValueError) as err:
            load_for_inference(path)
        assert "\n" not in str(err.value), path.name


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_an_export_written_before_the_layout_change_still_loads() -> None:
    """``fixtures/export_before_layout.pt`` was written by ``trainer.models.io.save_export``
    (revision 660da16, before ``jicd/`` existed): same keys, same outputs after the move."""
    expected = json.loads((FIXTURES / "export_before_layout.json").read_text())
    model, identity = load_for_inference(FIXTURES / "export_before_layout.pt")
    # The tensor digest is pinned: it must never drift.
    assert identity == {**expected["identity"], "entropy": "float"}
    assert len(model.state_dict()) == expected["num_keys"]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_hat = model(x)["x_hat"]
    assert x_hat.flatten()[:8].tolist() == pytest.approx(expected["x_hat_first"], abs=1e-6)
    assert x_hat.double().sum().item() == pytest.approx(expected["x_hat_sum"], abs=1e-3)
