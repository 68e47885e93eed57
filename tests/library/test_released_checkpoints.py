"""Importing the papers' released checkpoints: four formats, wrapper and plain, strictly."""

from __future__ import annotations

import pytest
import torch
from released_layouts import (
    LAYOUT_FILES,
    layout,
    layout_format,
    synthetic_state_dict,
    wrapped,
)

from jicd.errors import UserError
from jicd.models import build_model
from jicd.models.released import CDF_BUFFERS, LAYOUTS, detect_format, unwrap
from jicd.models.weights import (
    import_checkpoint,
    load_for_inference,
    load_weights_for_finetuning,
)
from trainer.testing import make_anchor_state_dict, make_export

# Hand-written from the mapping table of the layout notes (not from jicd.models.released), so
# a wrong rename rule fails here: (authors' key, our key).
COMMON_PAIRS = [
    ("g_a_block1.0.conv1.weight", "ga0.0.conv1.weight"),
    ("g_a_block1.2.gdn.gamma", "ga0.2.gdn.gamma"),
    ("g_a_block2.3.weight", "ga1.3.weight"),
    ("denoise_module_1.conv_b.3.weight", "d0.conv_b.3.weight"),
    ("denoise_module_2.conv_b.0.conv.2.weight", "d1.conv_b.0.conv.2.weight"),
    ("g_s.0.conv1.weight", "g_s.0.conv1.weight"),
    ("g_s.7.0.weight", "g_s.7.0.weight"),
    ("entropy_bottleneck._matrix2", "entropy_bottleneck.matrices.2"),
    ("entropy_bottleneck._factor1", "entropy_bottleneck.factors.1"),
    ("entropy_bottleneck.quantiles", "entropy_bottleneck.quantiles"),
    ("entropy_parameters.4.weight", "entropy_parameters.4.weight"),
    ("context_prediction.weight", "context_prediction.weight"),
    ("h_s.4.weight", "h_s.4.weight"),
]
JICDCLS_PAIRS = [
    ("denoise_module_1.conv0.2.weight", "d0.front.branches.2.weight"),
    ("denoise_module_2.conv0.3.bias", "d1.front.branches.3.bias"),
    ("denoise_module_2.conv_a.1.mlp.0.weight", "d1.conv_a.1.0.mlp.0.weight"),
    ("denoise_module_1.conv_a.3.conv.weight", "d0.conv_a.3.1.conv.weight"),
    ("denoise_module_2.conv_a.0.conv.2.weight", "d1.conv_a.0.conv.2.weight"),
    ("projection_head.0.weight", "proj.mlp.0.weight"),
    ("projection_head.2.bias", "proj.mlp.2.bias"),
]
BASELINE_PAIRS = [("denoise_module_2.conv_a.0.conv.0.weight", "d1.conv_a.0.conv.0.weight")]
FAST = [pytest.param(name) for name in LAYOUT_FILES if name.endswith("q1")]
SLOW = [pytest.param(name, marks=pytest.mark.slow) for name in LAYOUT_FILES if name.endswith("q4")]


def quality_of(name: str) -> int:
    return int(name[-1])


def pairs_of(name: str) -> list[tuple[str, str]]:
    return COMMON_PAIRS + (JICDCLS_PAIRS if layout_format(name) == "jicdcls" else BASELINE_PAIRS)


@pytest.mark.parametrize("form", ["wrapper", "plain"])
@pytest.mark.parametrize("name", FAST + SLOW)
def test_released_layout_imports_with_every_tensor_in_place(tmp_path, name, form) -> None:
    source = synthetic_state_dict(name, seed=7)
    assert list(source) == list(layout(name)["state_dict"])  # exactly the layout's keys
    payload = wrapped(source) if form == "wrapper" else source
    if form == "wrapper":
        assert set(payload) == set(layout(name)["wrapper_keys"])
    torch.save(payload, tmp_path / "released.pth.tar")
    assert detect_format(payload) == layout_format(name)

    model, cfg, fmt = import_checkpoint(tmp_path / "released.pth.tar", quality_of(name))
    assert fmt == layout_format(name) and cfg.preset == LAYOUTS[fmt].preset
    state = model.state_dict()
    for theirs, ours in pairs_of(name):
        assert torch.equal(state[ours], source[theirs]), (theirs, ours)
    # Every other tensor too (through the module's own mapping): nothing left at its init.
    for theirs, value in unwrap(source, "x").items():
        ours = LAYOUTS[fmt].ours(theirs)
        assert torch.equal(state[ours], value), theirs
    resized = state["gaussian_conditional._quantized_cdf"]
    assert resized.shape == source["gaussian_conditional._quantized_cdf"].shape


@pytest.mark.parametrize("name", ["baseline_eccv22_q1", "jicdcls_q1"])
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("remove", "key 'g_s.2.conv1.weight' missing"),
        ("extra", "unexpected key 'g_s.9.weight'"),
        ("q4-shape", "'g_s.2.conv1.weight' has shape [192, 192, 3, 3] but"),
    ],
)
def test_damaged_files_fail_with_one_line_naming_the_key(tmp_path, name, damage, expected):
    source = synthetic_state_dict(name)
    if damage == "remove":
        del source["g_s.2.conv1.weight"]
    elif damage == "extra":
        source["g_s.9.weight"] = torch.zeros(3)
    else:
        source["g_s.2.conv1.weight"] = torch.zeros(192, 192, 3, 3)
    torch.save(source, tmp_path / "damaged.pth")
    with pytest.raises(UserError) as info:
        import_checkpoint(tmp_path / "damaged.pth", quality=1)
    message = str(info.value)
    assert expected in message and "\n" not in message
    if damage == "q4-shape":  # both shapes and the likely cause
        assert "[128, 128, 3, 3]" in message and "N=192 model (quality 4-6)" in message


def test_a_q4_file_at_quality_1_names_the_quality(tmp_path) -> None:
    torch.save(synthetic_state_dict("baseline_eccv22_q4"), tmp_path / "q4.pth")
    with pytest.raises(UserError, match=r"N=192 model \(quality 4-6\); this model has N=128"):
        import_checkpoint(tmp_path / "q4.pth", quality=1)


@pytest.mark.slow
def test_jicdcls_q4_with_the_authors_cbam128_bug_is_explained(tmp_path) -> None:
    source = synthetic_state_dict("jicdcls_q4")
    source["denoise_module_1.conv_a.1.mlp.0.weight"] = torch.zeros(8, 128, 1, 1)
    torch.save(source, tmp_path / "bug.pth")
    with pytest.raises(UserError, match="CBAMLayer with its default channel=128"):
        import_checkpoint(tmp_path / "bug.pth", quality=4)


def test_format_can_be_chosen_and_a_wrong_choice_names_a_key(tmp_path) -> None:
    torch.save(synthetic_state_dict("jicdcls_q1"), tmp_path / "jicdcls.pth")
    with pytest.raises(UserError, match="baseline checkpoint: unexpected key 'denoise_module_1"):
        import_checkpoint(tmp_path / "jicdcls.pth", quality=1, fmt="baseline")


def test_detection_of_anchor_and_export(tmp_path) -> None:
    anchor = torch.load(make_anchor_state_dict(tmp_path / "a.pth"), weights_only=True)
    export = torch.load(make_export(tmp_path / "e.pt"), weights_only=False)
    assert detect_format(anchor) == "compressai" and detect_format({"state_dict": anchor})
    assert detect_format(export) == "export"
    assert detect_format({"foo": torch.zeros(1)}) == "unknown"


def test_raw_released_file_for_inference_points_to_import(tmp_path) -> None:
    torch.save(synthetic_state_dict("baseline_eccv22_q1"), tmp_path / "released.pth")
    with pytest.raises(UserError, match="jicd import-checkpoint .* --quality Q"):
        load_for_inference(tmp_path / "released.pth")


def test_finetuning_from_jicdcls_drops_or_keeps_the_head(tmp_path) -> None:
    source = synthetic_state_dict("jicdcls_q1", seed=3)
    torch.save(wrapped(source), tmp_path / "jicdcls.pth.tar")
    authors = build_model("jicd", 1, head="authors")
    assert load_weights_for_finetuning(authors, authors_cfg(), tmp_path / "jicdcls.pth.tar")
    assert torch.equal(authors.proj.mlp[0].weight, source["projection_head.0.weight"])
    paper = build_model("jicd", 1)
    init = paper.proj.mlp[0].weight.clone()
    load_weights_for_finetuning(paper, paper_cfg(), tmp_path / "jicdcls.pth.tar")
    assert torch.equal(paper.proj.mlp[0].weight, init)  # dropped: the paper's head keeps its init
    assert torch.equal(paper.d1.front.branches[0].weight, source["denoise_module_2.conv0.0.weight"])
    with pytest.raises(UserError, match="needs model.preset=jicd, got 'baseline'"):
        load_weights_for_finetuning(
            build_model("baseline", 1), baseline_cfg(), tmp_path / "jicdcls.pth.tar"
        )


def test_finetuning_from_an_export_is_strict(tmp_path) -> None:
    from jicd.models import ModelConfig, build_model_from_config

    export = make_export(tmp_path / "e.pt", seed=5)
    cfg = ModelConfig(preset="jicd", quality=1, channels=16)
    model = build_model_from_config(cfg)
    assert load_weights_for_finetuning(model, cfg, export) == "export"
    saved = torch.load(export, weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        if key not in CDF_BUFFERS:
            assert torch.equal(value, saved[key]), key
    other = ModelConfig(preset="jicd", quality=1, channels=32)
    with pytest.raises(UserError, match="weights do not fit the model"):
        load_weights_for_finetuning(build_model_from_config(other), other, export)


def paper_cfg():
    from jicd.models import ModelConfig

    return ModelConfig(preset="jicd", quality=1)


def authors_cfg():
    from jicd.models import ModelConfig

    return ModelConfig(preset="jicd", quality=1, head="authors")


def baseline_cfg():
    from jicd.models import ModelConfig

    return ModelConfig(preset="baseline", quality=1)
