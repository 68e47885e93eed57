"""Device choice (auto|cpu|cuda): ranks map to GPUs only when every local rank gets one.

``choose_device`` is a pure function of (request, local rank, local world size, GPU count), so
the multi-GPU cases run here with fake GPU counts; the real CUDA path is in ``make gpu-check``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from jicd import devices as DV
from jicd import distributed as D
from jicd.errors import UserError
from trainer.config import load_config


def devices(requested: str, ranks: int, gpus: int) -> list[str]:
    return [str(DV.choose_device(requested, r, ranks, gpus)) for r in range(ranks)]


def test_three_ranks_one_gpu_auto_runs_every_rank_on_the_cpu() -> None:
    # The old rule (CUDA available -> cuda:LOCAL_RANK) sent ranks 1 and 2 to missing GPUs.
    assert devices("auto", 3, 1) == ["cpu", "cpu", "cpu"]
    assert {DV.backend_for(DV.choose_device("auto", r, 3, 1)) for r in range(3)} == {"gloo"}


def test_three_ranks_one_gpu_cuda_is_refused_on_every_rank() -> None:
    for rank in range(3):
        with pytest.raises(UserError, match="3 process\\(es\\) and torch sees 1 GPU"):
            DV.choose_device("cuda", rank, 3, 1)


def test_enough_gpus_map_local_ranks_one_to_one() -> None:
    assert devices("auto", 3, 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices("cuda", 2, 2) == ["cuda:0", "cuda:1"]
    assert DV.backend_for(DV.choose_device("cuda", 1, 2, 2)) == "nccl"


def test_cpu_request_ignores_gpus_and_no_gpu_means_cpu() -> None:
    assert devices("cpu", 3, 8) == ["cpu"] * 3
    assert devices("auto", 2, 0) == ["cpu"] * 2
    with pytest.raises(UserError, match="choose one of auto, cpu, cuda"):
        DV.choose_device("gpu", 0, 1, 1)


def test_env_applies_only_when_the_config_says_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DV.DEVICE_ENV, "cpu")
    assert DV.requested_device("auto") == "cpu"
    assert DV.requested_device("cuda") == "cuda"
    monkeypatch.setenv(DV.DEVICE_ENV, "tpu")
    with pytest.raises(UserError, match="JICD_DEVICE='tpu'"):
        DV.requested_device("auto")
    monkeypatch.delenv(DV.DEVICE_ENV)
    assert DV.requested_device("auto") == "auto"


def test_train_device_is_a_strict_config_key() -> None:
    assert load_config(None, ["train.device=cpu"]).train.device == "cpu"
    with pytest.raises(UserError, match="train.device"):
        load_config(None, ["train.device=gpu"])


def test_demo_config_trains_on_the_cpu() -> None:
    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "configs/demo.yaml").train.device == "cpu"


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="needs a machine where torch sees no GPU")
def test_gpu_listed_by_nvidia_smi_but_unusable_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path('/usr/bin')}:{Path('/bin')}")
    message = DV.unusable_gpu_message()
    assert message is not None and "nvidia-smi lists 1 GPU(s)" in message
    assert f"CUDA {torch.version.cuda}" in message
    with pytest.raises(UserError, match="nvidia-smi lists 1 GPU"):
        DV.choose_device("cuda", 0, 1, 0)
    fake.unlink()
    assert DV.unusable_gpu_message() is None  # no driver tool: a CPU node, nothing to report


def test_cuda_request_without_gpus_fails_before_any_group_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    for var in D.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="device=cuda"):
        D.init_distributed(timeout_s=10, device="cuda")
    monkeypatch.setenv(DV.DEVICE_ENV, "cpu")
    info = D.init_distributed(timeout_s=30)
    try:
        assert (info.device.type, info.backend) == ("cpu", "gloo")
    finally:
        D.cleanup()
