"""``engine.compile`` trains the same model: 200 steps of 2 gloo ranks, compiled vs eager.

On the CPU the compiled forward runs through dynamo and AOTAutograd with the eager kernels
(``engine.compile_backend`` ``aot_eager``, the CPU default): the arithmetic is unchanged, so the
loss curves — global NT-Xent gather, clipping, Adam and all — must be equal bit for bit, with
either engine. (On CUDA, inductor's generated kernels reassociate sums; ``benchmarks/gpu_step.py``
reports the compiled loss beside the eager one.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_harness import metrics, run_training

from trainer.testing import make_shards

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

STEPS = 200


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"))


def loss_curve(run_dir: Path, shards: Path, engine: str, compile_mode: str) -> list[float]:
    overrides = [
        f"engine.kind={engine}", f"engine.compile={compile_mode}", "model.channels=8",
        f"train.steps={STEPS}", "train.val_every=0", "checkpoint.every=100000",
        "checkpoint.export=false", "logging.tensorboard=false", "logging.log_every=1",
        "logging.utilisation=false", "data.backend=torch", "optim.lr=1e-3", "optim.warmup_steps=0",
        "optim.milestones=[]",
    ]  # fmt: skip
    run_training(2, run_dir, shards, overrides, timeout=900)
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_compiled_training_retraces_the_eager_loss_curve(tmp_path, shards, engine) -> None:
    eager = loss_curve(tmp_path / "eager", shards, engine, "none")
    compiled = loss_curve(tmp_path / "full", shards, engine, "full")
    assert sum(eager[-20:]) < 0.8 * sum(eager[:20])  # it trains
    assert compiled == eager
