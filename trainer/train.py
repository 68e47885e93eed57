"""Train the joint compression + denoising model (one process, or one per GPU under torchrun).

    torchrun --nproc_per_node=4 launch/train.py --config configs/q3.yaml train.run_dir=runs/q3
    python launch/train.py --config configs/smoke.yaml data.shards=/data/shards
    jicd train --config configs/demo.yaml engine.kind=ddp

Arguments after the options are dotted overrides (``section.key=value``). A run restarted with
the same ``train.run_dir`` resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from jicd import distributed as D
from jicd.command_line import OneLineParser, UserError, run_guarded
from jicd.files import write_json_atomic, write_text_atomic
from trainer.acceleration import enable_tf32
from trainer.config import Config, check_resume_compatible, load_config, resolve_config, to_yaml
from trainer.determinism import configure_determinism, determinism_settings
from trainer.engine import import_engine_library as import_engine

log = logging.getLogger("jicd.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="jicd train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (base chain, overrides, derived values) as a run on "
        "--world-size ranks would write it to <run_dir>/config.yaml, then exit",
    )
    parser.add_argument(
        "--world-size", type=int, default=1, help="ranks assumed by --print-config (default 1)"
    )
    return parser.parse_args(argv)


def write_run_metadata(cfg: Config, run_dir: Path, changed: list[str]) -> None:
    """Resolved config, git revision and world size, written by rank 0 at start.

    On a resume the previous ``meta.json`` is kept inside the new one (``previous``), so the
    history of launches (world sizes, revisions, allowed config changes) stays readable.
    """
    meta = {
        "git_revision": git_revision(),
        "world_size": D.get_world_size(),
        "device": str(D.device()),
        "determinism": determinism_settings(),
        "argv": sys.argv,
    }
    if changed:
        meta["config_changed_on_resume"] = changed
    previous = run_dir / "meta.json"
    if previous.is_file():
        try:
            meta["previous"] = json.loads(previous.read_text())
        except ValueError:
            meta["previous"] = "unreadable"
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    write_json_atomic(run_dir / "meta.json", meta)


def git_revision() -> str:
    """The source revision (with ``-dirty`` for local changes); ``$GIT_REVISION`` outside git
    (e.g. in the Docker image, built without .git), else "unknown"."""
    if os.environ.get("GIT_REVISION"):
        return os.environ["GIT_REVISION"]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return rev.stdout.strip() or "unknown"


def check_run_dir(cfg: Config) -> list[str]:
    """Check a resume against the saved config; returns the keys allowed to change."""
    run_dir = Path(cfg.train.run_dir)
    saved = run_dir / "config.yaml"
    has_checkpoint = any((run_dir / "checkpoints").glob("step_*"))
    changed = check_resume_compatible(saved, cfg) if saved.is_file() and has_checkpoint else []
    if changed:
        log.warning("resuming with changed keys (allowed): %s", ", ".join(changed))
    return changed


def run(args: argparse.Namespace) -> int:
    """init distributed → resolve → check config → build → record the run → train → teardown.

    The run folder's ``config.yaml``/``meta.json`` are written only once everything is built
    (``train.init_from`` loaded, data found), so a refused launch leaves no run folder behind.
    """
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        if args.world_size < 1:
            raise UserError(f"--world-size must be >= 1, got {args.world_size}")
        print(to_yaml(resolve_config(cfg, args.world_size)), end="")
        return 0
    configure_determinism(cfg.train.deterministic)  # before any CUDA work (cuBLAS workspace)
    if cfg.engine.tf32 and not cfg.train.deterministic:
        enable_tf32()
    info = D.init_distributed(
        cfg.train.timeout_s, device=cfg.train.device, before_group=lambda: import_engine(cfg.engine)
    )
    try:
        D.setup_logging()
        resolve_config(cfg, info.world_size)
        changed = check_run_dir(cfg)
        from trainer.loop import Trainer  # heavy imports (DeepSpeed, DALI) after arg checks

        trainer = Trainer(cfg, info)
        if D.is_main():
            write_run_metadata(cfg, Path(cfg.train.run_dir), changed)
        try:
            trainer.fit()
        finally:
            trainer.close()
        step = trainer.step
        del trainer
        # Rank 0 writes the export after the final checkpoint; no rank tears the group down
        # while another may still use it.
        D.barrier()
    finally:
        D.cleanup()
    D.report_clean_exit(step)  # the checkpoint of that step is written
    return 0


@record
def main(argv: list[str] | None = None) -> int:
    """``jicd train``: the guarded runner of every jicd command around :func:`run`."""
    return run_guarded("jicd train", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
