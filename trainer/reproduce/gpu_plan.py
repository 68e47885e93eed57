"""How many GPUs each paper-scale run should get, from a measured step-time table.

The recipe fixes the **global** batch at 16, so a run on G GPUs computes 16 / G images per GPU
and step; a small per-GPU batch uses a GPU poorly (the step is launch-bound: on one H200 a
batch of 4 cost 0.054 s against 0.069 s for 16). Whether 6 runs should each take 4 GPUs one
after another, or one GPU each side by side, is therefore a measurement, not a guess: with the
table of ``benchmarks/gpu_step.py --out`` (seconds per step at each N and per-GPU batch) this
module schedules every training run of the plan on the GPUs available, for each G whose
per-GPU batch was measured, and picks the shortest wall-clock (fewer GPU-hours on a tie).

A run on G > 1 GPUs is charged the one-GPU step time at batch 16 / G: the all-reduce and the
NT-Xent gather are not in the table, so multi-GPU plans are optimistic, and the printout says so.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

from jicd.errors import UserError
from jicd.models import channels_for_quality

GLOBAL_BATCH = 16


@dataclass(frozen=True)
class Option:
    """One way to run the study: G GPUs per run, ``slots`` runs at a time."""

    gpus_per_run: int
    slots: int
    wall_hours: float
    gpu_hours: float


def read_step_times(path: str | Path) -> dict[tuple[int, int], float]:
    """``{(N, per-GPU batch): seconds}``, the fastest measured path of each pair.

    Raises:
        UserError: the file is missing, not JSON, or holds no usable row.
    """
    try:
        rows = json.loads(Path(path).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"--step-times {path}: not a benchmarks/gpu_step.py table ({err})"
        ) from None
    times: dict[tuple[int, int], float] = {}
    for row in rows:
        if not isinstance(row, dict) or "error" in row or row.get("skipped"):
            continue
        key = (int(row["channels"]), int(row["batch"]))
        times[key] = min(times.get(key, float("inf")), float(row["step_s"]))
    if not times:
        raise UserError(f"--step-times {path}: no measured row")
    return times


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of ``durations`` on ``slots`` parallel slots, longest first (LPT)."""
    finish = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(finish, finish[0] + duration)  # the slot that frees first takes it
    return max(finish)


def plan_options(
    qualities: list[int], steps: int, gpus: int, times: dict[tuple[int, int], float]
) -> list[Option]:
    """Every G (dividing the global batch, at most ``gpus``) whose step times were measured for
    every N of the runs, with its wall-clock and GPU-hours."""
    options = []
    for per_run in (1, 2, 4, 8, 16):
        if per_run > gpus or GLOBAL_BATCH % per_run:
            continue
        batch = GLOBAL_BATCH // per_run
        keys = [(channels_for_quality(q), batch) for q in qualities]
        if not all(key in times for key in keys):
            continue
        durations = [steps * times[key] / 3600 for key in keys]
        slots = gpus // per_run
        options.append(Option(per_run, slots, makespan(durations, slots), sum(durations) * per_run))
    return options


def choose(options: list[Option]) -> Option:
    """The shortest wall-clock; fewer GPU-hours on a tie."""
    if not options:
        raise UserError(
            "the step-time table has no per-GPU batch that divides 16 for every N of the runs "
            "(measure batch 16 and 4 with benchmarks/gpu_step.py)"
        )
    return min(options, key=lambda o: (round(o.wall_hours, 6), o.gpu_hours))


def describe(options: list[Option], chosen: Option, runs: int, gpus: int) -> str:
    """The options as text, the chosen one marked."""
    lines = [f"# {runs} training runs on {gpus} GPU(s), global batch {GLOBAL_BATCH}:"]
    for o in options:
        mark = "  <- chosen" if o == chosen else ""
        lines.append(
            f"#   {o.gpus_per_run} GPU(s) per run, {o.slots} run(s) at a time: "
            f"{o.wall_hours:,.1f} h wall-clock, {o.gpu_hours:,.0f} GPU-hours{mark}"
        )
    if any(o.gpus_per_run > 1 for o in options):
        lines.append("#   (multi-GPU rows exclude all-reduce time: optimistic)")
    return "\n".join(lines)
