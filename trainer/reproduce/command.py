"""``jicd reproduce TABLE --scale tiny|cpu|paper``: the paper's tables, one command each.

    jicd reproduce all --scale cpu --study results/cpu-study \\
        --train-data /data/train-photos --dataset kodak=/data/kodak
    jicd reproduce table4 --scale paper --dry-run --study /shared/study \\
        --shards /shared/flickr2w-shards --pretrained /shared/zoo --dataset kodak=/data/kodak
    jicd reproduce table1 --published exports/ --dataset kodak=/data/kodak --study results/pub

TABLE is ``table1`` (BD-rate vs the baseline), ``table2`` (coding time and parameters, Tables
2–3), ``table4`` (ablation, Tables 4–5), ``fig6`` (RD at level 4 with comparators), ``all``, or a
comma-separated list. Rerunning continues a study: finished runs and evaluations are reused.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from jicd.command_line import OneLineParser, UserError, run_guarded
from jicd.files import write_json_atomic, write_text_atomic
from trainer.reproduce import tables as T
from trainer.reproduce.gpu_plan import choose, describe, plan_options, read_step_times
from trainer.reproduce.plan import SCALES, Plan, build_plan, get_scale, parse_tables
from trainer.reproduce.runner import REPO, StudyPaths, execute
from trainer.reproduce.slurm import PaperSetup, gpu_hours, slurm_script

log = logging.getLogger("jicd.reproduce")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="jicd reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("table", help="table1 | table2 | table4 | fig6 | all (or a,b)")
    parser.add_argument("--scale", default="tiny", choices=sorted(SCALES))
    parser.add_argument("--study", default="results/study", help="study folder")
    parser.add_argument("--train-data", default=None, help="folder of training photos")
    parser.add_argument("--dataset", nargs="+", default=[], help="evaluation sets SET=DIR")
    parser.add_argument(
        "--published",
        default=None,
        help="folder of imported released exports (jicd-qQ.pt, baseline-qQ.pt): "
        "evaluate those instead of training",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (paper scale: the Slurm jobs) and do nothing",
    )
    parser.add_argument("--tables-only", action="store_true", help="only write the tables")
    parser.add_argument("--shards", default=None, help="paper scale: Flickr2W shards")
    parser.add_argument("--pretrained", default=None, help="paper scale: zoo checkpoint folder")
    parser.add_argument("--gpus-per-job", type=int, default=4)
    parser.add_argument(
        "--step-time",
        type=float,
        default=None,
        help="measured seconds per iteration on --gpus-per-job GPUs",
    )
    parser.add_argument(
        "--step-times",
        default=None,
        help="paper scale: benchmarks/gpu_step.py --out table; chooses --gpus-per-job",
    )
    parser.add_argument(
        "--gpus", type=int, default=None, help="paper scale: GPUs available to the study"
    )
    return parser


def set_names(datasets: list[str]) -> list[str]:
    names = [spec.partition("=")[0] for spec in datasets]
    if not names or any(not n or "=" not in s for n, s in zip(names, datasets, strict=True)):
        raise UserError("--dataset expects one or more SET=DIR (e.g. kodak=/data/kodak)")
    return names


def write_tables(plan: Plan, paths: StudyPaths, sets: list[str]) -> list[Path]:
    """Every table of the plan as Markdown + JSON under ``STUDY/tables``."""
    paths.tables.mkdir(parents=True, exist_ok=True)
    results, written = paths.root / "results", []
    builders = {
        "table1": lambda: T.table1(plan, results, sets),
        "table2": lambda: T.table2(plan, results, sets),
        "table4": lambda: T.table4(plan, results, sets),
        "fig6": lambda: T.fig6(plan, results, sets, paths.tables),
    }
    for table in plan.tables:
        markdown, payload = builders[table]()
        written.append(paths.tables / f"{table}.md")
        write_text_atomic(written[-1], markdown)
        written.append(paths.tables / f"{table}.json")
        write_json_atomic(written[-1], payload)
    summary = "\n".join((paths.tables / f"{t}.md").read_text() for t in plan.tables)
    write_text_atomic(paths.tables / "README.md", summary)
    return written


def published_plan(plan: Plan) -> Plan:
    """The plan's evaluations whose model was released (jicd / baseline), without training."""
    kept = [
        e
        for e in plan.evaluations
        if e.run and e.run.endswith("-s0") and e.run.split("-")[0] in ("jicd", "baseline")
    ]
    return Plan(plan.scale, plan.tables, [], kept)


def run(args) -> int:
    tables = parse_tables(args.table)
    scale = get_scale(args.scale)
    plan = build_plan(tables, scale)
    paths = StudyPaths(Path(args.study), Path(args.published) if args.published else None)
    command = "jicd reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [])
    if scale.name == "paper" and not args.tables_only and not args.published:
        return submit_paper(plan, args, paths, command or f"jicd reproduce {args.table}")
    if args.dry_run:
        print(describe_plan(plan), end="")
        return 0
    sets = set_names(args.dataset)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    if args.published:
        plan = published_plan(plan)
    if not args.tables_only:
        if not args.published and args.train_data is None:
            raise UserError("--train-data DIR is needed to train (or pass --published DIR)")
        base = REPO / "configs" / "study" / f"{scale.name}.yaml"
        train_data = Path(args.train_data) if args.train_data else Path()
        seconds = execute(plan, paths, train_data, args.dataset, base)
    written = write_tables(plan, paths, sets)
    record_study(paths, command, scale.name, seconds, time.perf_counter() - start)
    print(f"wrote {len(written)} files to {paths.tables}")
    return 0


def describe_plan(plan: Plan) -> str:
    """The runs (with their steps) and evaluations of a tiny/cpu plan, one per line."""
    scale = plan.scale
    lines = [f"# {scale.name} scale: {len(plan.runs)} runs, {len(plan.evaluations)} evaluations"]
    for r in plan.runs:
        lines.append(
            f"run  {r.name:<20} {scale.steps_of(r):>6} steps  {' '.join(r.model_overrides(scale))}"
        )
    for e in plan.evaluations:
        what = " ".join(e.pipelines) if e.pipelines else e.run
        levels = ",".join(map(str, e.levels))
        lines.append(f"eval {e.name:<32} levels {levels:<8} {e.coder:<9} {what}")
    return "\n".join(lines) + "\n"


def submit_paper(plan: Plan, args, paths: StudyPaths, command: str) -> int:
    """Print (``--dry-run``) or submit the paper-scale Slurm jobs."""
    missing = [o for o in ("shards", "pretrained") if getattr(args, o) is None]
    if missing or not args.dataset:
        raise UserError(
            f"--scale paper needs --shards, --pretrained and --dataset (missing: "
            f"{', '.join(missing + ([] if args.dataset else ['dataset']))})"
        )
    gpus_per_job, budget = args.gpus_per_job, None
    if args.step_times is not None:
        gpus_per_job, budget = choose_gpus(plan, args.step_times, args.gpus)
    setup = PaperSetup(
        paths.root, args.shards, args.pretrained, tuple(args.dataset), gpus_per_job,
        args.step_time,
    )  # fmt: skip
    script = slurm_script(plan, setup, command)
    print(script, end="")
    print(budget or f"# GPU budget: {gpu_hours(plan, setup)}")
    if args.dry_run:
        return 0
    return subprocess.run(["bash", "-c", script], cwd=REPO).returncode


def choose_gpus(plan: Plan, step_times: str, gpus: int | None) -> tuple[int, str]:
    """GPUs per training job from a measured step-time table, and the plan as text."""
    if gpus is None or gpus < 1:
        raise UserError("--step-times needs --gpus N (the GPUs available to the study)")
    qualities = [run.quality for run in plan.runs]
    options = plan_options(qualities, plan.scale.steps, gpus, read_step_times(step_times))
    chosen = choose(options)
    return chosen.gpus_per_run, describe(options, chosen, len(qualities), gpus)


def record_study(paths: StudyPaths, command: str, scale: str, seconds: dict, wall: float) -> None:
    """``study.json``: command, revision, scale, wall time of this invocation and of each step."""
    from trainer.train import git_revision

    record_path = paths.root / "study.json"
    history = (
        json.loads(record_path.read_text()).get("invocations", []) if record_path.is_file() else []
    )
    history.append(
        {
            "command": command,
            "revision": git_revision(),
            "scale": scale,
            "wall_s": round(wall, 1),
            "steps_s": {k: round(v, 1) for k, v in seconds.items()},
        }
    )
    write_json_atomic(record_path, {"invocations": history})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jicd reproduce``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reproduce: %(message)s")
    return run_guarded("jicd reproduce", lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
