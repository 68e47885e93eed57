"""What each paper table needs: scales, training runs, evaluations — a pure plan, no side effects.

=========  ============================================================================
table      runs and evaluations
=========  ============================================================================
table1     jicd and baseline at every quality of the scale, levels 1–4: BD-rate (PSNR,
           MS-SSIM) of jicd against the baseline (2 seeds at tiny/cpu scale: the spread)
table2     jicd and baseline at q2 and q4, levels 3 and 4: serial coder, 1 thread,
           3 repeats (the paper's setup) and the wavefront coder; parameters / 10⁴
table4     the five ablation rows at q6, level 4 (row 1 = the baseline preset, row 5 = jicd)
fig6       RD curves at level 4: jicd, baseline, the plain backbone on noisy input, the
           sequential NLM → backbone, AVIF and NLM → AVIF
=========  ============================================================================

At ``tiny`` and ``cpu`` scale every model fine-tunes from one shared backbone, a plain
Cheng2020Anchor (preset ``anchor``) trained first on clean images at the scale's N, as the paper
fine-tunes from CompressAI's pretrained cheng2020-anchor; the ``paper`` scale uses the real
recipe (``configs/q*.yaml``, ``configs/baseline_q*.yaml``, ``configs/ablation/``) and the zoo
checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jicd.errors import UserError

TABLES = ("table1", "table2", "table4", "fig6")
ABLATION_ROWS = (
    # (contrastive, self_onn, multi_scale) as in the paper's Tables 4-5, top to bottom
    (False, False, False),
    (True, False, False),
    (False, True, False),
    (True, True, False),
    (True, True, True),
)


@dataclass(frozen=True)
class Scale:
    """How big a study is.

    Attributes:
        name: tiny | cpu | paper.
        channels: N of every model (None: the quality's N, the paper's 128 / 192).
        patch: training patch side.
        global_batch: images per step over all ranks.
        backbone_steps: steps of the shared plain backbone (0 at paper scale: the zoo's).
        steps: fine-tuning steps of every variant.
        qualities: the table-1 / fig-6 qualities.
        seeds: training seeds of the jicd and baseline rows (the run-to-run spread).
        eval_limit: images per evaluation set (None: all).
        timing_limit: images per set for the table-2 timings.
        nproc: training ranks.
        val_every: steps between validations.
    """

    name: str
    channels: int | None
    patch: int
    global_batch: int
    backbone_steps: int
    steps: int
    qualities: tuple[int, ...]
    seeds: tuple[int, ...]
    eval_limit: int | None
    timing_limit: int | None
    nproc: int
    val_every: int

    def steps_of(self, run: Run) -> int:
        """Training steps of ``run``: the backbone's, or every fine-tuned variant's."""
        return self.steps if run.backbone else self.backbone_steps


SCALES = {
    "tiny": Scale("tiny", 16, 64, 2, 3, 3, (1, 2), (0,), 2, 1, 1, 3),
    "cpu": Scale("cpu", 32, 128, 8, 600, 300, (1, 3, 6), (0, 1), 6, 2, 2, 100),
    "paper": Scale(
        "paper", None, 256, 16, 0, 769_800, (1, 2, 3, 4, 5, 6), (0,), None, None, 8, 5000
    ),
}


@dataclass(frozen=True)
class Run:
    """One training run of a study.

    Attributes:
        name: run directory name (unique in the study).
        preset: model preset (jicd | baseline | anchor).
        quality: λ_d (and, at paper scale, N) of the run.
        flags: ablation switches overriding the preset's defaults.
        seed: ``train.seed``.
        backbone: fine-tunes from the study's shared backbone (False: the backbone itself, or
            the zoo checkpoint at paper scale).
    """

    name: str
    preset: str
    quality: int
    flags: tuple[tuple[str, bool], ...] = ()
    seed: int = 0
    backbone: bool = True

    def model_overrides(self, scale: Scale) -> list[str]:
        """``model.*`` overrides of this run."""
        out = [f"model.preset={self.preset}", f"model.quality={self.quality}"]
        if scale.channels is not None:
            out.append(f"model.channels={scale.channels}")
        out += [f"model.{name}={str(value).lower()}" for name, value in self.flags]
        return out


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a study.

    Attributes:
        name: results folder name.
        run: the trained run whose export is evaluated ("" for classical pipelines).
        levels: noise levels.
        coder: wavefront | serial.
        repeats: coding repetitions averaged for the timings.
        timing: a timing evaluation (the scale's ``timing_limit`` images, one thread).
        pipelines: ``--pipeline`` specs instead of the run's checkpoint (``{backbone}`` is
            replaced by the backbone's export).
    """

    name: str
    run: str
    levels: tuple[int, ...]
    coder: str = "wavefront"
    repeats: int = 1
    timing: bool = False
    pipelines: tuple[str, ...] = ()


@dataclass
class Plan:
    """Runs and evaluations of a study, in execution order (dependencies first)."""

    scale: Scale
    tables: tuple[str, ...]
    runs: list[Run] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)

    def add_run(self, run: Run) -> None:
        if all(r.name != run.name for r in self.runs):
            self.runs.append(run)

    def add_evaluation(self, evaluation: Evaluation) -> None:
        if all(e.name != evaluation.name for e in self.evaluations):
            self.evaluations.append(evaluation)


def parse_tables(spec: str) -> tuple[str, ...]:
    """``all`` or a comma-separated subset of :data:`TABLES`."""
    names = TABLES if spec == "all" else tuple(s.strip() for s in spec.split(","))
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise UserError(f"unknown table {unknown[0]!r}; choose from all, {', '.join(TABLES)}")
    return names


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise UserError(f"unknown scale {name!r}; choose from {', '.join(SCALES)}")
    return SCALES[name]


def variant_name(preset: str, quality: int, seed: int) -> str:
    return f"{preset}-q{quality}-s{seed}"


def ablation_name(row: int) -> str:
    return f"ablation-row{row}"


def _variant(plan: Plan, preset: str, quality: int, seed: int) -> str:
    name = variant_name(preset, quality, seed)
    plan.add_run(Run(name, preset, quality, seed=seed))
    return name


def build_plan(tables: tuple[str, ...], scale: Scale) -> Plan:
    """Every run and evaluation ``tables`` need at ``scale`` (shared runs appear once)."""
    plan = Plan(scale, tables)
    if scale.backbone_steps:
        plan.add_run(
            Run("backbone", "anchor", scale.qualities[len(scale.qualities) // 2], backbone=False)
        )
    for table in tables:
        _PLANNERS[table](plan, scale)
    return plan


def _plan_table1(plan: Plan, scale: Scale) -> None:
    for seed in scale.seeds:
        for quality in scale.qualities:
            for preset in ("jicd", "baseline"):
                name = _variant(plan, preset, quality, seed)
                plan.add_evaluation(Evaluation(name, name, (1, 2, 3, 4)))


def _plan_table2(plan: Plan, scale: Scale) -> None:
    for quality in (2, 4):
        for preset in ("baseline", "jicd"):
            name = _variant(plan, preset, quality, scale.seeds[0])
            for coder, repeats in (("serial", 3), ("wavefront", 3)):
                plan.add_evaluation(
                    Evaluation(f"timing-{coder}-{name}", name, (3, 4), coder, repeats, True)
                )


def ablation_run(row: int, quality: int, seed: int) -> Run:
    """Row ``row`` (1–5) of Tables 4–5: row 1 is the baseline preset, the rest jicd variants."""
    contrastive, self_onn, multi_scale = ABLATION_ROWS[row - 1]
    if row == 1:
        return Run(variant_name("baseline", quality, seed), "baseline", quality, seed=seed)
    if row == len(ABLATION_ROWS):
        return Run(variant_name("jicd", quality, seed), "jicd", quality, seed=seed)
    flags = (("contrastive", contrastive), ("self_onn", self_onn), ("multi_scale", multi_scale))
    return Run(ablation_name(row), "jicd", quality, flags, seed)


def _plan_table4(plan: Plan, scale: Scale) -> None:
    for row in range(1, len(ABLATION_ROWS) + 1):
        run = ablation_run(row, 6, scale.seeds[0])
        plan.add_run(run)
        plan.add_evaluation(Evaluation(run.name, run.name, (4,)))


def _plan_fig6(plan: Plan, scale: Scale) -> None:
    for quality in scale.qualities:
        for preset in ("jicd", "baseline"):
            name = _variant(plan, preset, quality, scale.seeds[0])
            plan.add_evaluation(Evaluation(name, name, (1, 2, 3, 4)))
    if scale.backbone_steps:
        plan.add_evaluation(Evaluation("backbone-noisy", "backbone", (4,)))
        plan.add_evaluation(
            Evaluation("sequential-nlm", "backbone", (4,), pipelines=("nlm+{backbone}",))
        )
    plan.add_evaluation(Evaluation("classical", "", (4,), pipelines=("avif", "nlm+avif")))


_PLANNERS = {
    "table1": _plan_table1,
    "table2": _plan_table2,
    "table4": _plan_table4,
    "fig6": _plan_fig6,
}
