"""The trainer's side of undecodable samples: drop the batch on all ranks, merge, exclude, count.

The loaders report a sample they cannot decode instead of raising
(:mod:`data_pipeline.undecodable`). Here, once per step, one all-reduced flag says whether any
rank's batch held such a sample; if so every rank drops its batch (so all ranks keep training
on equally many, equally sized batches), the reports of all ranks are gathered, every loader
excludes the same samples, rank 0 logs each sample once and appends it to
``<run_dir>/bad_samples.json``, and the counts go to the metrics (``data/…``). Past the limits
(``data.max_bad_fraction``, ``data.max_bad_in_a_row``) the run stops with one line on every
rank.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from data_pipeline.contract import TrainBatch, TrainLoader
from data_pipeline.data_config import DataConfig
from data_pipeline.manifest import load_split
from data_pipeline.undecodable import LOG_NAME, BadSample, BadSampleLog, check_limits
from jicd import distributed as D
from trainer.logger import MetricsLogger

if TYPE_CHECKING:
    from data_pipeline.val_loader import ValLoader

log = logging.getLogger(__name__)


class BadSampleGuard:
    """Owns the run's bad-sample list and applies it to the loaders."""

    def __init__(self, run_dir: Path, cfg: DataConfig, logger: MetricsLogger) -> None:
        self.cfg, self.logger = cfg, logger
        self.log = BadSampleLog(run_dir / LOG_NAME)
        self.num_train = load_split(cfg.shards, "train").num_samples
        self.dropped = 0  # training batches dropped in this launch
        self.in_a_row = 0
        if self.log.samples and D.is_main():
            log.warning(
                "%d undecodable samples excluded by earlier launches of this run (%s)",
                len(self.log.samples),
                self.log.path,
            )

    def excluded(self, split: str) -> set[str]:
        """Keys the ``split`` loader must never read."""
        return self.log.excluded(split)

    def next_batch(
        self, batches: Iterator[TrainBatch], loader: TrainLoader, step: int
    ) -> TrainBatch:
        """The next batch that every rank can train on (collective: call on every rank)."""
        while True:
            batch = next(batches)
            (bad,) = D.any_rank(bool(batch.get("bad_samples")))
            if not bad:
                self.in_a_row = 0
                return batch
            self.dropped += 1
            self.in_a_row += 1
            reports = _gather(batch["bad_samples"])
            loader.exclude([r.key for r in reports if r.split == "train"])
            self._record(reports, step, "train batch dropped on all ranks")

    def after_validation(self, loader: ValLoader, step: int) -> None:
        """Exclude what validation could not decode (collective: call on every rank)."""
        local, loader.bad_samples = loader.bad_samples, []
        (bad,) = D.any_rank(bool(local))
        if bad:
            reports = _gather(local)
            loader.exclude([r.key for r in reports if r.split == "val"])
            self._record(reports, step, "left out of validation")

    def _record(self, reports: list[BadSample], step: int, what: str) -> None:
        new = self.log.add(reports)
        if D.is_main():
            for report in new:
                log.warning(
                    "undecodable %s sample %s: %s; excluded for the rest of the run",
                    report.split,
                    report.describe(),
                    what,
                )
            self.log.save()
        counts = {
            "bad_samples_train": float(self.log.count("train")),
            "bad_samples_val": float(self.log.count("val")),
            "dropped_batches": float(self.dropped),
        }
        self.logger.log_scalars(step, "data", counts)
        check_limits(
            self.log,
            self.num_train,
            self.in_a_row,
            self.cfg.max_bad_fraction,
            self.cfg.max_bad_in_a_row,
        )


def _gather(local: list[BadSample]) -> list[BadSample]:
    """Every rank's reports, in rank order (the same list on every rank)."""
    if D.get_world_size() == 1:
        return list(local)
    gathered: list[Any] = [None] * D.get_world_size()
    dist.all_gather_object(gathered, list(local))
    return [report for reports in gathered for report in reports]
