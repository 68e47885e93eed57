"""``jicd reproduce``: the paper-scale Slurm plan (fast), the whole chain at tiny scale (slow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.config import load_config
from trainer.reproduce.plan import ABLATION_ROWS, build_plan, get_scale, parse_tables
from trainer.reproduce.slurm import PaperSetup, gpu_hours, slurm_script

REPO = Path(__file__).resolve().parents[2]


def _script(table: str) -> str:
    plan = build_plan(parse_tables(table), get_scale("paper"))
    setup = PaperSetup(Path("/s/study"), "/s/shards", "/s/zoo", ("kodak=/d/kodak",), 4, 0.5)
    return slurm_script(plan, setup, f"jicd reproduce {table} --scale paper --dry-run")


def test_table4_paper_plan_has_the_five_rows_with_their_configs_and_dependencies() -> None:
    script = _script("table4")
    trains = re.findall(r"^(J_TRAIN_\w+)=\$\(CONFIG=(\S+) RUN_DIR=(\S+) sbatch", script, re.M)
    configs = [t[1] for t in trains]
    assert configs == ["configs/baseline_q6.yaml", "configs/ablation/row2_cl.yaml",
                       "configs/ablation/row3_self_onn.yaml",
                       "configs/ablation/row4_cl_self_onn.yaml", "configs/q6.yaml"]  # fmt: skip
    runs = [Path(t[2]).name for t in trains]
    assert runs == ["baseline-q6-s0", "ablation-row2", "ablation-row3", "ablation-row4",
                    "jicd-q6-s0"]  # fmt: skip
    # each row's config holds the paper's switches of Table 4 at quality 6
    for row, config in enumerate(configs, start=1):
        cfg = load_config(REPO / config, ["train.init_from=none"])
        assert (
            cfg.model.quality == 6 and tuple(cfg.model.flags().values()) == ABLATION_ROWS[row - 1]
        )
    for line in (line for line in script.splitlines() if "J_TRAIN" in line.split("=")[0]):
        assert "train.init_from=/s/zoo/cheng2020-anchor-6.pth.tar" in line
    # every evaluation waits for its own training job, the tables for every evaluation
    evals = re.findall(r"^(J_EVAL_\w+)=.*--dependency=afterok:\$(J_TRAIN_\w+) ", script, re.M)
    assert {e[1] for e in evals} == {t[0] for t in trains} and len(evals) == 5
    final = script.strip().splitlines()[-1]
    assert final.startswith("sbatch --job-name=jicd-tables --dependency=afterok:")
    assert all(f"${e[0]}" in final for e in evals) and "--levels 4" in script


def test_all_tables_paper_plan_counts_and_gpu_hours() -> None:
    plan = build_plan(parse_tables("all"), get_scale("paper"))
    names = {r.name for r in plan.runs}
    # 6 qualities x {jicd, baseline} + the 3 ablation-only rows at q6
    assert len(plan.runs) == 15 and {f"jicd-q{q}-s0" for q in range(1, 7)} <= names
    setup = PaperSetup(Path("/s"), "/sh", "/zoo", ("kodak=/k",), 4, 0.5)
    assert "15 training runs" in gpu_hours(plan, setup)
    assert f"{15 * 769_800 * 0.5 * 4 / 3600:,.0f} GPU-hours" in gpu_hours(plan, setup)


def test_unknown_table_and_missing_paper_options_are_one_line_errors(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jicd", "reproduce", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    bad = run("table9")
    assert bad.returncode == 2 and "unknown table 'table9'" in bad.stderr
    paper = run("table4", "--scale", "paper", "--dry-run", "--study", str(tmp_path))
    assert paper.returncode == 2 and "needs --shards, --pretrained and --dataset" in paper.stderr
    assert "Traceback" not in bad.stderr + paper.stderr
    cpu = run("all", "--scale", "cpu", "--dry-run", "--study", str(tmp_path / "cpu"))
    assert cpu.returncode == 0 and "# cpu scale: 20 runs, 26 evaluations" in cpu.stdout
    assert "run  backbone                600 steps  model.preset=anchor" in cpu.stdout
    assert not (tmp_path / "cpu").exists()  # a dry run writes nothing


def _images(folder: Path, count: int, side: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
        Image.fromarray(coarse).resize((side, side), Image.BICUBIC).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.slow
def test_all_tables_at_tiny_scale_and_a_second_invocation_reuses_the_runs(tmp_path: Path) -> None:
    train, evaluation = _images(tmp_path / "train", 16, 96), _images(tmp_path / "eval", 2, 128)
    argv = [sys.executable, "-m", "jicd", "reproduce", "all", "--scale", "tiny",
            "--study", str(tmp_path / "study"), "--train-data", str(train),
            "--dataset", f"kodak={evaluation}"]  # fmt: skip
    first = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    tables = tmp_path / "study" / "tables"
    for table in ("table1", "table2", "table4", "fig6"):
        assert (tables / f"{table}.md").is_file() and (tables / f"{table}.json").is_file()
    assert "-23.80 %" in (tables / "table1.md").read_text()  # published column, Kodak level 4
    table2 = (tables / "table2.md").read_text()
    assert "12.53/25.92" in table2 and "| jicd-q4 |" in table2
    assert "28.595" in (tables / "table4.md").read_text()
    assert (tables / "fig6-kodak.png").stat().st_size > 1000
    assert "training backbone" in first.stderr
    second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    # reused: no training and no evaluation ran the second time
    assert "training" not in second.stderr and "evaluating" not in second.stderr
