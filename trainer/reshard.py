"""Resume a checkpoint on another number of ranks (a job requeued onto fewer or more GPUs).

What each engine's files need:

* DDP and DeepSpeed ZeRO-0: one file holds the whole model and the whole optimizer state (every
  rank has a full replica), so DeepSpeed / torch load it unchanged at any world size (verified:
  identical tensors after 2 → 1).
* DeepSpeed ZeRO-1/2: every rank saved only its partition of the flattened optimizer state, and
  ``load_checkpoint`` refuses another data-parallel size. Rank 0 converts the checkpoint with
  DeepSpeed's own ``ds_to_universal`` (per-parameter fp32 weights, ``exp_avg``,
  ``exp_avg_sq``, ``step``) into a temporary folder, and every rank loads that with
  ``load_universal``, which re-partitions for the current world size.

The model, the optimizer moments and step counts, and the LR schedule (``trainer.pt``) are
restored exactly. The per-rank RNG streams (noise, quantisation) cannot be mapped onto other
ranks: they are reseeded from (checkpoint, rank, world size). The data position is the
loaders' business (:mod:`data_pipeline.contract`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from jicd import distributed as D
from trainer.engine import DeepSpeedEngine, TrainEngine
from trainer.safe_load import check_plain_files

log = logging.getLogger(__name__)
UNIVERSAL_DIR = ".universal"


def load_engine(engine: TrainEngine, root: Path, tag: str, saved_world: int) -> None:
    """Load checkpoint ``root/tag``, written by ``saved_world`` ranks, into ``engine``."""
    if not isinstance(engine, DeepSpeedEngine) or engine.engine.zero_optimization_stage() == 0:
        engine.load(root, tag)
        return
    target = root / UNIVERSAL_DIR
    if D.is_main():
        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

        check_plain_files(root / tag)  # ds_to_universal unpickles with weights_only=False

        shutil.rmtree(target, ignore_errors=True)
        log.info("converting %s (ZeRO partitions of %d ranks) to universal", tag, saved_world)
        ds_to_universal(_conversion_args(root / tag, target / tag))
    D.barrier()
    config = engine.engine._config  # read by load_checkpoint only; DeepSpeed has no setter
    config.load_universal_checkpoint = True
    try:
        engine.load(target, tag)
    finally:
        config.load_universal_checkpoint = False
    D.barrier()
    if D.is_main():
        shutil.rmtree(target, ignore_errors=True)


def _conversion_args(source: Path, output: Path) -> argparse.Namespace:
    """``ds_to_universal``'s command-line arguments: in this process (no worker pool, which
    would fork a process holding a process group), with the client state DeepSpeed expects from
    Megatron injected."""
    return argparse.Namespace(
        input_folder=str(source),
        output_folder=str(output),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
