"""A training step never waits for the device: every device-to-host read raises during it.

On a GPU a host read of a device value (``.item()``, ``bool()``, ``float()``, ``.cpu()``) waits
for every queued kernel; one per step keeps the host from queueing the next step and breaks
graph capture. Here the step runs on the CPU with those four patched to raise; the skip decision
(an injected non-finite loss) must still be taken and applied, on the device.
"""

from __future__ import annotations

import pytest
import torch

from jicd import distributed as D
from jicd.models import build_model
from trainer.config import load_config, resolve_config
from trainer.step import build_train_step

READS = ("item", "__bool__", "__float__", "cpu")


def forbid_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name):
        def read(*args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name} called in a step")

        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, refuse(name))


def snapshot(model: torch.nn.Module) -> dict[str, bytes]:
    """Every parameter's bytes; the masked context convolution as the model uses it (CompressAI's
    MaskedConv2d zeroes its masked weights in place in each forward, skipped step or not)."""
    mask = model.context_prediction.mask
    values = {n: p.detach() for n, p in model.named_parameters()}
    values["context_prediction.weight"] = values["context_prediction.weight"] * mask
    return {n: v.numpy().tobytes() for n, v in values.items()}


@pytest.fixture
def single_process_group():
    info = D.init_distributed(timeout_s=60, device="cpu")
    yield info
    D.cleanup()


def test_a_step_and_a_skipped_step_read_nothing_back(single_process_group, monkeypatch) -> None:
    overrides = ["model.channels=8", "engine.kind=ddp", "train.inject_nan_at_step=1",
                 "data.num_workers=0", "data.num_threads=1"]  # fmt: skip
    cfg = resolve_config(load_config(None, overrides), world_size=1)
    torch.manual_seed(0)
    model = build_model("jicd", 1, channels=8).train()
    step = build_train_step(model, cfg, torch.device("cpu"), rank=0)
    clean = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    batch = {"clean": clean, "augmented": clean.flip(-1), "keys": ["a", "b"]}
    stop = torch.zeros(1)
    before = snapshot(model)
    with monkeypatch.context() as patched:
        forbid_host_reads(patched)
        applied = step(batch, 0, stop)
        after_first = snapshot(model)
        skipped = step(batch, 1, stop)  # train.inject_nan_at_step=1: a non-finite loss
    assert before != after_first
    assert snapshot(model) == after_first  # the skipped step changed no parameter
    adam = step.engine.optimizer.state.values()
    assert {float(s["step"]) for s in adam} == {1.0}  # nor Adam's step counts
    assert applied.values["skipped"].item() == 0.0 and skipped.values["skipped"].item() == 1.0
    assert torch.isnan(skipped.values["grad_norm"]) and step.guard.counters().skipped == 1


def test_the_recorder_really_refuses_host_reads(monkeypatch) -> None:
    # Without this, a patch that silently did nothing would make the test above pass.
    forbid_host_reads(monkeypatch)
    with pytest.raises(AssertionError, match="host synchronisation"):
        float(torch.ones(()))
