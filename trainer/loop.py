"""The training loop: batches in, steps queued, logs, validation and checkpoints around them.

The per-step device work is :class:`trainer.step.TrainStep`; this loop only reads its results
at log steps (``logging.log_every``), where the step-time, skip and stop decisions reach the
host. No file or environment access happens here beyond what the checkpoint and metrics
components do; rank logic comes from ``jicd.distributed``.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from data_pipeline import build_train_loader, build_val_loader
from data_pipeline.contract import TrainBatch
from data_pipeline.manifest import load_split
from jicd import distributed as D
from jicd.errors import UserError
from jicd.models import build_model_from_config
from jicd.models.weights import load_weights_for_finetuning
from trainer.bad_sample_guard import BadSampleGuard
from trainer.checkpointer import Checkpointer
from trainer.config import Config
from trainer.log_window import LogWindow
from trainer.logger import build_logger
from trainer.losses import JointLoss
from trainer.perf import matmul_rate, training_step_flops
from trainer.state import (
    GeneratorState,
    RngStreams,
    StateRegistry,
    TrainProgress,
    upgrade_rank_state,
    upgrade_trainer_state,
    with_legacy_keys,
)
from trainer.step import StopSignal, build_train_step
from trainer.validation import validate

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def check_noise_source(kind: str, shards: str) -> None:
    """``noise.kind: paired`` takes the noisy image from paired shards; refuse other shards, and
    say so when paired shards are trained on synthetic noise (their noisy images unused)."""
    paired = load_split(shards, "train").paired
    if kind == "paired" and not paired:
        raise UserError(
            f"noise.kind=paired needs paired shards (jicd prepare-shards --pairs sidd); "
            f"data.shards {shards} holds single images"
        )
    if paired and kind != "paired":
        log.warning(
            "data.shards %s holds noisy/clean pairs but noise.kind=%s: training adds synthetic "
            "noise to the clean images (set noise.kind=paired for the real noise)",
            shards,
            kind,
        )


class Trainer:
    """Builds every component from its own config section and runs the loop."""

    def __init__(self, cfg: Config, info: D.DistInfo) -> None:
        self.cfg, self.info, self.device = cfg, info, info.device
        # cfg is resolved (trainer.config.resolve_config): every derived value is filled in.
        self.run_dir = Path(cfg.train.run_dir)
        self.lmbda = cfg.loss.resolved_lmbda()
        D.seed_all(cfg.train.seed + info.rank)
        model = self._build_model()
        self.flops_per_step = self._count_flops(model, JointLoss(cfg.loss, self.lmbda))
        self.train_step = build_train_step(model, cfg, self.device, info.rank)
        self.engine, self.scheduler = self.train_step.engine, self.train_step.scheduler
        self.guard, self.progress = self.train_step.guard, TrainProgress()
        self.logger = build_logger(self.run_dir, cfg.logging, D.is_main())
        self.bad_samples = BadSampleGuard(self.run_dir, cfg.data, self.logger)
        check_noise_source(cfg.noise.kind, cfg.data.shards)  # before a loader is built
        self.train_loader = build_train_loader(
            cfg.data, info.rank, info.world_size, self.device, self.bad_samples.excluded("train")
        )
        self.val_loader = build_val_loader(
            cfg.data, info.rank, info.world_size, self.device, self.bad_samples.excluded("val")
        )
        self.checkpointer = Checkpointer(cfg.checkpoint, self.run_dir)
        self.state = self._register_state(self.train_step.generator)
        self.stop = StopSignal(self.device)
        self.stop_requested = False  # all ranks agree on it (read at log steps)
        self._previous_handlers: dict[int, Any] = {}
        self._peak_rate: float | None = None

    @property
    def step(self) -> int:
        return self.progress.step

    def _build_model(self) -> torch.nn.Module:
        model = build_model_from_config(self.cfg.model)
        init_path = self.cfg.train.init_path()
        if init_path:
            fmt = load_weights_for_finetuning(model, self.cfg.model, init_path)
            log.info("initialised from %s (%s format)", init_path, fmt)
        return model.to(self.device).train()

    def _count_flops(self, model: torch.nn.Module, criterion: JointLoss) -> int | None:
        if not self.cfg.logging.utilisation:
            return None
        data = self.cfg.data
        return training_step_flops(model, criterion, data.batch_size_per_gpu, data.patch_size)

    def _register_state(self, noise_gen: torch.Generator) -> StateRegistry:
        """Everything a resume restores, named as in the checkpoint files."""
        state = StateRegistry()
        state.register("progress", self.progress)
        state.register("guard", self.guard)
        state.register("scheduler", self.scheduler)
        state.register("loader", self.train_loader, scope="rank")
        state.register("rng", RngStreams(), scope="rank")
        state.register("noise_generator", GeneratorState(noise_gen), scope="rank")
        return state

    # ----------------------------------------------------------------------------- state
    def resume_if_possible(self) -> None:
        """Auto-resume from the newest complete checkpoint in the run directory."""
        tag = self.checkpointer.latest()
        if tag is None:
            return
        trainer_state, rank_state = self.checkpointer.load(tag, self.engine)
        self.state.restore("global", upgrade_trainer_state(trainer_state))
        self.state.restore("rank", upgrade_rank_state(rank_state))
        log.info("resumed from %s at step %d", tag, self.step)

    def save_checkpoint(self) -> None:
        divergence = D.replica_divergence(self.engine.module)
        self.logger.log_scalars(self.step, "checks", {"replica_divergence": divergence})
        if divergence > 0:
            log.error("data-parallel replicas differ (max checksum spread %.3g)", divergence)
        self.checkpointer.save(
            self.step,
            self.engine,
            with_legacy_keys(self.state.collect("global")),
            self.state.collect("rank"),
        )
        # The export builds a fresh model (parameter init draws random numbers): keep those
        # draws out of the training stream, or a resumed run would not retrace this one.
        with torch.random.fork_rng(devices=[]):
            self.checkpointer.export(self.engine.module, self.cfg.model, self.step)

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train until ``train.steps`` or a stop signal; checkpoint at the end."""
        self._install_signal_handlers()
        self.resume_if_possible()
        batches = self._batches()
        progress = self._progress_bar()
        window = LogWindow()
        while self.step < self.cfg.train.steps and not self.stop_requested:
            started = time.perf_counter()
            # Drops (on every rank) a batch with an undecodable sample (trainer.bad_sample_guard).
            batch = self.bad_samples.next_batch(batches, self.train_loader, self.step)
            waited = time.perf_counter() - started
            self._record_keys(batch)
            result = self.train_step(batch, self.step, self.stop.on_device())
            self.progress.step += 1
            window.add(result.values, started, waited, len(batch["keys"]))
            self._after_step(window, result.stop, progress)
        self.save_checkpoint()
        if progress is not None:
            progress.close()
        log.info("stopped at step %d (%d skipped)", self.step, self.guard.skipped)

    def close(self) -> None:
        """Release what owns threads or process-group references — loaders (DALI's executor
        and prefetch threads, DataLoader workers), the logger's writer thread, the engine —
        now, while the interpreter and the group are alive (``trainer.train.run`` then
        destroys the group)."""
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # the handler's closure would keep this trainer alive
        self._previous_handlers.clear()
        self.logger.close()
        self.train_loader.close()  # the validation loader holds no iterator between runs
        self.engine.close()

    def _after_step(self, window: LogWindow, stop: torch.Tensor, progress: Any) -> None:
        cfg = self.cfg
        if self.step % cfg.logging.log_every == 0 or self.step == cfg.train.steps:
            self._log_train(window, progress)
            # Read at log steps only, where every rank reads the same all-reduced flag.
            self.stop_requested = bool(stop.item() > 0)
        if cfg.train.val_every and self.step % cfg.train.val_every == 0:
            self.run_validation()
        if self.step % cfg.checkpoint.every == 0 and self.step < cfg.train.steps:
            self.save_checkpoint()

    def _log_train(self, window: LogWindow, progress: Any) -> None:
        last_loss = float(window.last["loss"])
        means = window.means_over_ranks()
        counters = self.guard.counters()
        means["lr"] = float(self.scheduler.get_last_lr()[0])
        means["aux_lr"] = float(self.scheduler.get_last_lr()[-1])
        means["skipped_total"] = float(counters.skipped)
        if self.flops_per_step:
            means["flop_utilisation"] = self.flops_per_step / means["step_time_s"] / self._rate()
        self.logger.log_scalars(self.step, "train", means)
        if means["skipped"] > 0:
            log.warning(
                "%d of the last %d steps skipped on all ranks (last: %s)",
                round(means["skipped"] * window.count), window.count,
                "non-finite loss" if counters.last_nonfinite
                else f"loss above train.loss_cap={self.guard.cap:g}",
            )  # fmt: skip
        self.guard.check_progress(last_loss)
        if progress is not None:
            progress.n = self.step
            progress.set_postfix(
                loss=f"{means['loss']:.3f}", bpp=f"{means['bpp']:.3f}", psnr=f"{means['psnr']:.2f}"
            )
        window.reset()

    def _rate(self) -> float:
        """The device's matmul rate, measured at the first log step (not in a timed window)."""
        if self._peak_rate is None:
            self._peak_rate = matmul_rate(self.device)
            self.logger.log_scalars(self.step, "device", {"matmul_flops_per_s": self._peak_rate})
        return self._peak_rate

    def run_validation(self) -> None:
        results, images = validate(
            self.engine.module,
            self.val_loader,
            self.lmbda,
            self.cfg.logging.num_val_images,
            self.cfg.loss.distortion,
        )
        self.bad_samples.after_validation(self.val_loader, self.step)
        self.logger.log_scalars(self.step, "val", results)
        for tag, image in images.items():  # one row per sample: clean | noisy | reconstruction
            self.logger.log_images(self.step, tag, image)
        self._export_if_best(results.get("rd_loss"))

    def _export_if_best(self, rd_loss: float | None) -> None:
        """``export/best.pt`` when the validation rd-loss is the lowest so far (as the baseline
        keeps ``checkpoint_best_loss``); results are all-reduced, so every rank agrees."""
        best = self.progress.best
        if rd_loss is None or rd_loss >= best.get("val_rd_loss", float("inf")):
            return
        self.progress.best = {"val_rd_loss": float(rd_loss), "step": self.step}
        with torch.random.fork_rng(devices=[]):  # keep the export's init draws out of training
            self.checkpointer.export(
                self.engine.module, self.cfg.model, self.step, "best.pt", val_rd_loss=rd_loss
            )

    # ------------------------------------------------------------------------- plumbing
    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGUSR1 (Slurm pre-emption): finish the step, checkpoint, exit 0."""

        def request_stop(signum: int, _frame: Any) -> None:
            log.warning("signal %d received: checkpointing at the next log step", signum)
            self.stop.set()  # reaches every rank through the next step's all-reduced flags

        for sig in STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, request_stop)

    def _progress_bar(self) -> Any:
        if not (D.is_main() and self.cfg.logging.progress_bar):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.train.steps, initial=self.step, desc="train", dynamic_ncols=True)

    def _batches(self) -> Iterator[TrainBatch]:
        """The loader's batches, drawn without touching the global RNG streams.

        The model draws its quantisation noise from the global RNG; a loader that also draws
        from it (DataLoader seeds, lazily created iterators) would make the stream depend on when
        the iterator was created, and a resumed run would diverge from an uninterrupted one.
        """
        with torch.random.fork_rng(devices=[]):
            iterator = iter(self.train_loader)
        while True:
            with torch.random.fork_rng(devices=[]):
                batch = next(iterator)
            yield batch

    def _record_keys(self, batch: TrainBatch) -> None:
        if not self.cfg.train.log_sample_keys:
            return
        keys_dir = self.run_dir / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        with (keys_dir / f"rank{D.get_rank()}.txt").open("a") as out:
            out.writelines(f"{self.step}\t{key}\n" for key in batch["keys"])
