"""The paper-scale study as Slurm jobs: one training job per run, one evaluation per training
job (``--dependency=afterok``), and a final job that writes the tables once every evaluation
succeeded. ``jicd reproduce … --scale paper --dry-run`` prints the script; without
``--dry-run`` it is submitted with bash.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from trainer.reproduce.plan import Plan, Run


@dataclass(frozen=True)
class PaperSetup:
    """What a paper-scale submission needs from the user.

    Attributes:
        study: the study folder on storage every node sees.
        shards: the Flickr2W shards (``jicd prepare-shards``).
        pretrained: folder of CompressAI's ``cheng2020-anchor-{q}-*.pth.tar`` zoo files.
        datasets: ``SET=DIR`` evaluation sets.
        gpus_per_job: GPUs of each training job (one node).
        step_time: measured seconds per iteration on ``gpus_per_job`` GPUs, if known.
    """

    study: Path
    shards: str
    pretrained: str
    datasets: tuple[str, ...]
    gpus_per_job: int = 4
    step_time: float | None = None


ABLATION_CONFIGS = {
    "ablation-row2": "configs/ablation/row2_cl.yaml",
    "ablation-row3": "configs/ablation/row3_self_onn.yaml",
    "ablation-row4": "configs/ablation/row4_cl_self_onn.yaml",
}
"""Rows 2–4 of Tables 4–5 (row 1 is ``baseline_q6.yaml``, row 5 ``q6.yaml``)."""


def run_config(run: Run) -> str:
    """The recipe file of a run."""
    if run.name in ABLATION_CONFIGS:
        return ABLATION_CONFIGS[run.name]
    if run.preset == "baseline":
        return f"configs/baseline_q{run.quality}.yaml"
    return f"configs/q{run.quality}.yaml"


def _var(name: str) -> str:
    return "J_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def slurm_script(plan: Plan, setup: PaperSetup, command: str) -> str:
    """A bash script submitting the plan's jobs with their dependencies."""
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        f"# {command}",
        f"# {len(plan.runs)} training jobs, {len(plan.evaluations)} evaluation jobs, 1 table job",
        "set -euo pipefail",
        "",
    ]
    train_jobs = {}
    for run in plan.runs:
        config = run_config(run)
        run_dir = setup.study / "runs" / run.name
        args = [
            f"data.shards={setup.shards}",
            f"train.init_from={setup.pretrained}/cheng2020-anchor-{run.quality}.pth.tar",
            f"train.seed={run.seed}",
        ]
        train_jobs[run.name] = _var(f"train {run.name}")
        lines.append(
            f"{train_jobs[run.name]}=$(CONFIG={config} RUN_DIR={q(str(run_dir))} sbatch "
            f"--parsable --job-name=jicd-{run.name} --nodes=1 --gpus-per-node="
            f"{setup.gpus_per_job} launch/slurm/train.sbatch {' '.join(map(q, args))})"
        )
    lines.append("")
    eval_jobs = []
    for evaluation in plan.evaluations:
        if evaluation.run not in train_jobs:
            continue  # comparators of the tiny/cpu scales (backbone, classical) are local runs
        export = setup.study / "runs" / evaluation.run / "export" / "model.pt"
        extra = ["--coder", evaluation.coder, "--repeats", str(evaluation.repeats)]
        if evaluation.timing:
            extra += ["--threads", "1"]
        var = _var(f"eval {evaluation.name}")
        eval_jobs.append(var)
        lines.append(
            f"{var}=$(sbatch --parsable --job-name=jicd-eval-{evaluation.name} "
            f"--dependency=afterok:${train_jobs[evaluation.run]} launch/slurm/evaluate.sbatch "
            f"--checkpoint {q(str(export))} --dataset {' '.join(map(q, setup.datasets))} "
            f"--levels {' '.join(map(str, evaluation.levels))} --name {evaluation.name} "
            f"--output {q(str(setup.study / 'results' / evaluation.name))} {' '.join(extra)})"
        )
    deps = ":".join(f"${v}" for v in eval_jobs)
    tables = f"python -m jicd reproduce {','.join(plan.tables)} --scale paper --tables-only " + (
        f"--study {q(str(setup.study))} --dataset {' '.join(map(q, setup.datasets))}"
    )
    lines += [
        "",
        f"sbatch --job-name=jicd-tables --dependency=afterok:{deps} --wrap {q(tables)}",
    ]
    return "\n".join(lines) + "\n"


def gpu_hours(plan: Plan, setup: PaperSetup) -> str:
    """GPU-hours of the plan's training from a measured step time, or how to get one."""
    if setup.step_time is None:
        return (
            f"{len(plan.runs)} training runs × {plan.scale.steps:,} iterations; no measured step "
            "time given: run `make gpu-check` (or benchmarks/train_step.py on one GPU) and pass "
            "--step-time SECONDS --gpus-per-job G"
        )
    hours = len(plan.runs) * plan.scale.steps * setup.step_time * setup.gpus_per_job / 3600
    return (
        f"{len(plan.runs)} training runs × {plan.scale.steps:,} iterations × {setup.step_time} s × "
        f"{setup.gpus_per_job} GPUs = {hours:,.0f} GPU-hours (measured step time)"
    )
