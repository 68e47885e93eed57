"""The training loop: noise synthesis, the three-branch step, skipping, logging, checkpoints.

No file or environment access happens here beyond what the checkpoint and metrics components do;
rank logic comes from ``jicd.distributed``.
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
from data_pipeline.manifest import load_split
from jicd import distributed as D
from jicd.errors import UserError
from jicd.metrics import psnr
from jicd.models import build_model_from_config
from jicd.models.checkpoints import load_weights_for_finetuning
from jicd.noise import training_noise
from trainer.bad_samples import BadSampleGuard
from trainer.checkpoint import Checkpointer, rng_state, set_rng_state
from trainer.config import Config
from trainer.engine import autocast_context, build_engine
from trainer.logger import build_logger
from trainer.losses import JointLoss
from trainer.optim import build_optimizer, build_scheduler
from trainer.skipping import StepGuard
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
        self.lmbda = cfg.loss.lmbda
        train = cfg.train
        self.guard = StepGuard(train.loss_cap, train.loss_cap_from, train.max_skipped_in_a_row)
        D.seed_all(cfg.train.seed + info.rank)
        model = build_model_from_config(cfg.model)
        if cfg.train.init_path():
            fmt = load_weights_for_finetuning(model, cfg.model, cfg.train.init_path())
            log.info("initialised from %s (%s format)", cfg.train.init_path(), fmt)
        model.to(self.device).train()
        self.criterion = JointLoss(cfg.loss, self.lmbda)
        optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(optimizer, cfg.optim)
        batch = cfg.data.batch_size_per_gpu
        self.engine = build_engine(model, optimizer, cfg.engine, cfg.optim.clip_grad_norm, batch)
        self.logger = build_logger(self.run_dir, cfg.logging, D.is_main())
        self.bad_samples = BadSampleGuard(self.run_dir, cfg.data, self.logger)
        check_noise_source(cfg.noise.kind, cfg.data.shards)  # before a loader is built
        self.train_loader = build_train_loader(
            cfg.data, info.rank, info.world_size, self.device, self.bad_samples.excluded("train")
        )
        self.val_loader = build_val_loader(
            cfg.data, info.rank, info.world_size, self.device, self.bad_samples.excluded("val")
        )
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(cfg.train.seed * 1_000_003 + info.rank)
        self.checkpointer = Checkpointer(cfg.checkpoint, self.run_dir)
        self.step, self.stop_requested = 0, False
        self.signal_received = False  # this rank got SIGTERM/SIGUSR1 (stop_requested: all agree)
        self._previous_handlers: dict[int, Any] = {}
        self.best: dict[str, float] = {}  # {"val_rd_loss", "step"} of export/best.pt

    # ----------------------------------------------------------------------------- state
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "skipped": self.guard.skipped,  # also in "guard"; kept for older readers
            "guard": self.guard.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": self.best,
        }

    def rank_state(self) -> dict[str, Any]:
        return {
            "loader": self.train_loader.state_dict(),
            "rng": rng_state(),
            "noise_generator": self.noise_gen.get_state(),
        }

    def resume_if_possible(self) -> None:
        """Auto-resume from the newest complete checkpoint in the run directory."""
        tag = self.checkpointer.latest()
        if tag is None:
            return
        trainer_state, rank_state = self.checkpointer.load(tag, self.engine)
        self.step = trainer_state["step"]
        self.guard.load_state_dict(trainer_state.get("guard", trainer_state))
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.best = trainer_state.get("best", {})  # absent in checkpoints from before best.pt
        self.train_loader.load_state_dict(rank_state["loader"])
        set_rng_state(rank_state["rng"])
        self.noise_gen.set_state(rank_state["noise_generator"])
        log.info("resumed from %s at step %d", tag, self.step)

    def save_checkpoint(self) -> None:
        divergence = D.replica_divergence(self.engine.module)
        self.logger.log_scalars(self.step, "checks", {"replica_divergence": divergence})
        if divergence > 0:
            log.error("data-parallel replicas differ (max checksum spread %.3g)", divergence)
        self.checkpointer.save(self.step, self.engine, self.trainer_state(), self.rank_state())
        # The export builds a fresh model (parameter init draws random numbers): keep those
        # draws out of the training stream, or a resumed run would not retrace this one.
        with torch.random.fork_rng(devices=[]):
            self.checkpointer.export(self.engine.module, self.cfg.model, self.step)

    # ------------------------------------------------------------------------------ step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One iteration on this rank's batch; every rank runs every branch and collective.

        Returns the loss terms (local values), ``grad_norm`` and ``skipped`` (0/1).
        """
        clean, augmented = batch["clean"], batch["augmented"]
        noisy = training_noise(self.cfg.noise, batch, self.noise_gen)
        with autocast_context(self.cfg.engine, self.device):
            output = self.engine.forward(noisy, clean, augmented)
        terms = self.criterion(output, clean)
        terms["aux"] = self.engine.module.aux_loss()
        total = terms["loss"] + self.cfg.train.aux_loss_scale * terms["aux"]
        if (
            self.cfg.train.inject_nan_at_step == self.step
            and D.get_rank() == D.get_world_size() - 1
        ):
            total = total * float("nan")
        loss = float(terms["loss"].detach())
        # One all-reduce: the flags of every rank, combined. The loop only reads the agreed stop
        # flag: a signal landing between this all-reduce and the loop test must not end one rank
        # a step before the others (mismatched collectives).
        nonfinite, above_cap, stop = D.any_rank(
            not bool(torch.isfinite(total)), loss > self.guard.cap, self.signal_received
        )
        self.stop_requested = stop
        skip = self.guard.decide(nonfinite, above_cap).skip
        grad_norm = float("nan")
        if skip:
            log.warning(
                "step %d skipped on all ranks (%s)", self.step,
                "non-finite loss" if nonfinite else f"loss above train.loss_cap={self.guard.cap:g}",
            )  # fmt: skip
            self.guard.check_progress(loss)
        else:
            grad_norm = self.engine.step(total)
        self.scheduler.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        values["psnr"] = float(psnr(output["x_hat"].detach(), clean).mean())
        return values | {"grad_norm": grad_norm, "skipped": float(skip)}

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train until ``train.steps`` or a stop signal; checkpoint at the end."""
        self._install_signal_handlers()
        self.resume_if_possible()
        batches = self._batches()
        progress = self._progress_bar()
        window = _Window()
        while self.step < self.cfg.train.steps and not self.stop_requested:
            started = time.perf_counter()
            # Drops (on every rank) a batch with an undecodable sample: see trainer.bad_samples.
            batch = self.bad_samples.next_batch(batches, self.train_loader, self.step)
            waited = time.perf_counter() - started
            self._record_keys(batch)
            values = self.train_step(batch)
            self.step += 1
            window.add(values, waited, time.perf_counter() - started, len(batch["keys"]))
            self._after_step(window, progress)
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
        for loader in (self.train_loader, self.val_loader):
            if hasattr(loader, "close"):
                loader.close()
        self.engine.close()

    def _after_step(self, window: _Window, progress: Any) -> None:
        cfg = self.cfg
        if self.step % cfg.logging.log_every == 0 or self.step == cfg.train.steps:
            self._log_train(window, progress)
        if cfg.train.val_every and self.step % cfg.train.val_every == 0:
            self.run_validation()
        if self.step % cfg.checkpoint.every == 0 and self.step < cfg.train.steps:
            self.save_checkpoint()

    def _log_train(self, window: _Window, progress: Any) -> None:
        means = window.mean_over_ranks(self.device)
        means["lr"] = self.scheduler.get_last_lr()[0]
        means["aux_lr"] = self.scheduler.get_last_lr()[-1]
        means["skipped_total"] = float(self.guard.skipped)
        self.logger.log_scalars(self.step, "train", means)
        if progress is not None:
            progress.n = self.step
            progress.set_postfix(
                loss=f"{means['loss']:.3f}", bpp=f"{means['bpp']:.3f}", psnr=f"{means['psnr']:.2f}"
            )
        window.reset()

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
        if rd_loss is None or rd_loss >= self.best.get("val_rd_loss", float("inf")):
            return
        self.best = {"val_rd_loss": float(rd_loss), "step": self.step}
        with torch.random.fork_rng(devices=[]):  # keep the export's init draws out of training
            self.checkpointer.export(
                self.engine.module, self.cfg.model, self.step, "best.pt", val_rd_loss=rd_loss
            )

    # ------------------------------------------------------------------------- plumbing
    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGUSR1 (Slurm pre-emption): finish the step, checkpoint, exit 0."""

        def request_stop(signum: int, _frame: Any) -> None:
            log.warning("signal %d received: checkpointing after this step", signum)
            self.signal_received = True  # all ranks agree on the stop in the next all-reduce

        for sig in STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, request_stop)

    def _progress_bar(self) -> Any:
        if not (D.is_main() and self.cfg.logging.progress_bar):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.train.steps, initial=self.step, desc="train", dynamic_ncols=True)

    def _batches(self) -> Iterator[dict[str, Any]]:
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

    def _record_keys(self, batch: dict[str, Any]) -> None:
        if not self.cfg.train.log_sample_keys:
            return
        keys_dir = self.run_dir / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        with (keys_dir / f"rank{D.get_rank()}.txt").open("a") as out:
            out.writelines(f"{self.step}\t{key}\n" for key in batch["keys"])


class _Window:
    """Running sums of the logged values between two log points."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.waited = self.elapsed = 0.0
        self.images = 0

    def add(self, values: dict[str, float], waited: float, elapsed: float, images: int) -> None:
        for key, value in values.items():
            if key == "grad_norm" and value != value:  # skipped step: no norm to average
                continue
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1
        self.waited += waited
        self.elapsed += elapsed
        self.images += images

    def mean_over_ranks(self, device: torch.device) -> dict[str, float]:
        """Window means averaged over ranks; throughput summed over ranks."""
        keys = sorted(self.sums)
        local = torch.tensor(
            [self.sums[k] / self.count for k in keys] + [self.images], device=device
        )
        total = D.all_reduce_sum(local.double()).tolist()
        world = D.get_world_size()
        means = {k: v / world for k, v in zip(keys, total[:-1], strict=True)}
        means["images_per_s"] = total[-1] / max(self.elapsed, 1e-9)
        means["data_wait_fraction"] = self.waited / max(self.elapsed, 1e-9)
        return means
