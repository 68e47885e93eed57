"""Carry out a study plan: shards, training runs, evaluations — each skipped once finished.

Layout of a study folder (rerunning the command continues where it stopped)::

    STUDY/
      shards/                     the training photos as WebDataset shards (prepared once)
      runs/<run>/                 a normal run directory (config.yaml, checkpoints/, export/, tb/)
      runs/backbone/cheng2020-anchor.pth.tar   the shared backbone in CompressAI's layout
      results/<evaluation>/       ``jicd evaluate`` output + done.json
      tables/                     table*.md / .json, fig6.png, README.md
      study.json                  the command, revision, scale and wall times

A run counts as finished when its latest checkpoint is the final step and its export exists;
an interrupted run resumes from its checkpoint (the trainer's auto-resume). An evaluation counts
as finished when its ``done.json`` exists.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.shards import ShardConfig, prepare_shards
from jicd.errors import UserError
from jicd.files import torch_load_plain, torch_save_atomic, write_json_atomic
from trainer.reproduce.plan import Evaluation, Plan, Run

log = logging.getLogger("jicd.reproduce")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class StudyPaths:
    """Where a study keeps its parts."""

    root: Path
    published: Path | None = None
    """Folder of imported released exports (``jicd-qQ.pt``, ``baseline-qQ.pt``) used instead of
    trained runs (``--published``)."""

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def export(self, name: str) -> Path:
        if self.published is not None:  # "jicd-q3-s0" → jicd-q3.pt
            return self.published / (name.rsplit("-s", 1)[0] + ".pt")
        return self.run_dir(name) / "export" / "model.pt"

    def results(self, name: str) -> Path:
        return self.root / "results" / name

    @property
    def backbone_anchor(self) -> Path:
        return self.run_dir("backbone") / "cheng2020-anchor.pth.tar"

    @property
    def tables(self) -> Path:
        return self.root / "tables"


def ensure_shards(paths: StudyPaths, train_data: Path, patch: int) -> None:
    """Shard the training photos once (val 5 %), or reuse the study's shards."""
    if (paths.shards / "manifest.json").is_file():
        return
    if not train_data.is_dir():
        raise UserError(f"--train-data folder not found: {train_data}")
    log.info("writing shards of %s to %s", train_data, paths.shards)
    prepare_shards(train_data, paths.shards, ShardConfig(min_side=patch, val_fraction=0.05))


def run_finished(paths: StudyPaths, name: str, steps: int) -> bool:
    latest = paths.run_dir(name) / "checkpoints" / "latest"
    return (
        latest.is_file()
        and latest.read_text().strip() == f"step_{steps:08d}"
        and paths.export(name).is_file()
    )


def train_command(run: Run, plan: Plan, paths: StudyPaths, base_config: Path) -> list[str]:
    """The ``torchrun … -m trainer.train`` command line of one run."""
    scale = plan.scale
    steps = scale.steps_of(run)
    overrides = [
        *run.model_overrides(scale),
        f"train.run_dir={paths.run_dir(run.name)}",
        f"data.shards={paths.shards}",
        f"data.patch_size={scale.patch}",
        f"train.global_batch_size={scale.global_batch}",
        f"train.steps={steps}",
        f"train.seed={run.seed}",
        f"train.val_every={scale.val_every}",
        f"checkpoint.every={scale.val_every}",
        "logging.progress_bar=false",
    ]
    if run.name == "backbone":
        overrides.append("noise.kind=none")  # the plain codec learns clean → clean
        overrides.append(f"optim.milestones=[{int(steps * 0.8)}]")
    elif run.backbone:
        overrides.append(f"train.init_from={paths.backbone_anchor}")
    python = [sys.executable]
    if scale.nproc > 1:
        python += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={scale.nproc}"]
    return [*python, "-m", "trainer.train", "--config", str(base_config), *overrides]


def train(run: Run, plan: Plan, paths: StudyPaths, base_config: Path) -> float:
    """Train (or resume) ``run`` unless finished; returns the seconds spent."""
    steps = plan.scale.steps_of(run)
    if run_finished(paths, run.name, steps):
        return 0.0
    run_dir = paths.run_dir(run.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    start = time.perf_counter()
    log.info("training %s (%d steps)", run.name, steps)
    with (run_dir / "train.log").open("a", encoding="utf-8") as log_file:
        proc = subprocess.run(
            train_command(run, plan, paths, base_config),
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise UserError(f"training {run.name} failed (exit {proc.returncode}); see {log_file.name}")
    if run.name == "backbone":
        export_backbone(paths)
    return time.perf_counter() - start


def export_backbone(paths: StudyPaths) -> None:
    """The backbone's export as a CompressAI cheng2020-anchor state dict (``g_a.0-6``).

    Every variant then fine-tunes from it exactly as from the zoo file (``train.init_from``).
    """
    export = paths.export("backbone")
    payload = torch_load_plain(export, f"backbone export {export}")
    weights = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(weights, dict):
        raise UserError(f"backbone export {export} is not a jicd export (no state_dict)")
    state = {}
    for key, value in weights.items():
        head, _, rest = key.partition(".")
        if head in ("ga0", "ga1"):
            index, _, tail = rest.partition(".")
            offset = 0 if head == "ga0" else 3
            state[f"g_a.{int(index) + offset}.{tail}"] = value
        else:
            state[key] = value
    torch_save_atomic(state, paths.backbone_anchor)


def evaluate(evaluation: Evaluation, plan: Plan, paths: StudyPaths, datasets: list[str]) -> float:
    """Run ``jicd evaluate`` for one evaluation unless finished; returns the seconds spent."""
    from jicd.evaluation.evaluate import main as evaluate_main

    out = paths.results(evaluation.name)
    if (out / "done.json").is_file():
        return 0.0
    scale = plan.scale
    limit = scale.timing_limit if evaluation.timing else scale.eval_limit
    argv = ["--dataset", *datasets, "--levels", *map(str, evaluation.levels)]
    argv += [
        "--output",
        str(out),
        "--coder",
        evaluation.coder,
        "--repeats",
        str(evaluation.repeats),
    ]
    argv += ["--threads", "1"] + (["--limit", str(limit)] if limit else [])
    if evaluation.pipelines:
        specs = [
            p.replace("{backbone}", str(paths.export("backbone"))) for p in evaluation.pipelines
        ]
        argv += ["--pipeline", *specs]
    else:
        argv += ["--checkpoint", str(paths.export(evaluation.run)), "--name", evaluation.name]
    start = time.perf_counter()
    log.info("evaluating %s", evaluation.name)
    if evaluate_main(argv) != 0:
        raise UserError(f"evaluation {evaluation.name} failed: jicd evaluate {' '.join(argv)}")
    seconds = time.perf_counter() - start
    write_json_atomic(out / "done.json", {"argv": argv, "seconds": seconds})
    return seconds


def execute(
    plan: Plan, paths: StudyPaths, train_data: Path, datasets: list[str], base_config: Path
) -> dict[str, float]:
    """Everything the plan needs, in order; returns wall seconds per step (0 = reused)."""
    seconds: dict[str, float] = {}
    if plan.runs:
        ensure_shards(paths, train_data, plan.scale.patch)
    for run in plan.runs:
        seconds[f"train:{run.name}"] = train(run, plan, paths, base_config)
    for evaluation in plan.evaluations:
        seconds[f"evaluate:{evaluation.name}"] = evaluate(evaluation, plan, paths, datasets)
    return seconds
