"""Fuzzing the commands that read files from others (issue 21, "beyond the list").

Mutated ``.jicd`` files (headers and streams) go to ``jicd decompress``, mutated manifests and
DALI index files to ``jicd check-shards``, mutated results JSONs to ``jicd report``. Every case
runs in a forked child with a memory limit and a timeout (:mod:`fuzzing`) and must end in exit
0 (1 for check-shards' problems) or one error line: no traceback, no crash, no hang, no output
left behind on failure.

The default suite runs a small, seeded budget; ``make fuzz`` (``pytest -m fuzz``) a large one,
10,000 cases (about 25 minutes on two cores), kept out of ``make test`` for its time.
``JICD_FUZZ_CASES``, ``JICD_FUZZ_SECONDS`` and ``JICD_FUZZ_SEED`` override the budget of either
(a finding prints the seed and case number that reproduce it).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest
from fuzz_cases import Inputs, build_inputs, make_case
from fuzzing import Stats, judge, run_forked

CASE_TIMEOUT_S = 60.0
MEMORY_HEADROOM = 3 * 2**30
"""Address space a case may add to the parent's (the decoder of a 33 MP claim needs ~1 GB)."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    import torch

    torch.set_num_threads(1)  # forked children must not inherit an OpenMP pool
    return build_inputs(tmp_path_factory.mktemp("fuzz_inputs"))


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def fuzz(inputs: Inputs, work: Path, seed: int, cases: int, seconds: float) -> Stats:
    """Run up to ``cases`` cases within about ``seconds``; findings are kept in ``work``."""
    stats, start = Stats(), time.monotonic()
    memory = _address_space() + MEMORY_HEADROOM
    for number in range(cases):
        if time.monotonic() - start > seconds:
            break
        case_dir = work / f"case-{number:06d}"
        case_dir.mkdir()
        case = make_case(random.Random(f"{seed}:{number}"), inputs, case_dir)
        outcome = run_forked(case.argv, case_dir, CASE_TIMEOUT_S, memory)
        stats.cases += 1
        stats.by_kind[case.kind] = stats.by_kind.get(case.kind, 0) + 1
        problem = judge(case, outcome)
        if problem:
            stats.findings.append(
                f"seed {seed} case {number} ({case.kind}, {case.note}): {problem}\n"
                f"  argv: {case.argv}\n  stderr: {outcome.stderr.strip()[-600:]}"
            )
        else:
            shutil.rmtree(case_dir)
    stats.seconds = time.monotonic() - start
    return stats


def _budget(cases: int, seconds: float) -> tuple[int, int, float]:
    env = os.environ
    return (
        int(env.get("JICD_FUZZ_SEED", "21")),
        int(env.get("JICD_FUZZ_CASES", cases)),
        float(env.get("JICD_FUZZ_SECONDS", seconds)),
    )


def _check(stats: Stats) -> None:
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(stats.by_kind.items()))
    print(f"fuzz: {stats.cases} cases in {stats.seconds:.0f} s ({kinds})")
    assert not stats.findings, f"{len(stats.findings)} findings:\n" + "\n".join(stats.findings[:5])


def test_fuzz_small_budget(inputs, tmp_path) -> None:
    seed, cases, seconds = _budget(cases=24, seconds=40)
    stats = fuzz(inputs, tmp_path, seed, cases, seconds)
    _check(stats)
    assert stats.cases >= min(cases, 4)


@pytest.mark.fuzz
def test_fuzz_large_budget(inputs, tmp_path) -> None:
    seed, cases, seconds = _budget(cases=10_000, seconds=4 * 3600)
    _check(fuzz(inputs, tmp_path, seed, cases, seconds))
