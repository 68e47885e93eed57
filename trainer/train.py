"""Train the joint compression + denoising model (one process, or one per GPU under torchrun).

    torchrun --nproc_per_node=4 launch/train.py --config configs/q3.yaml train.run_dir=runs/q3
    python launch/train.py --config configs/smoke.yaml data.shards=/data/shards
    jicd train --config configs/demo.yaml engine.kind=ddp

Arguments after the options are dotted overrides (``section.key=value``). A run restarted with
the same ``train.run_dir`` resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from jicd import distributed as D
from jicd.cli import OneLineParser, run_guarded
from jicd.files import write_json_atomic, write_text_atomic
from trainer.config import Config, check_resume_compatible, load_config, resolve_config, to_yaml
from trainer.determinism import configure_determinism, determinism_settings

log = logging.getLogger("jicd.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="jicd train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4")
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
    configure_determinism(cfg.train.deterministic)  # before any CUDA work (cuBLAS workspace)
    info = D.init_distributed(cfg.train.timeout_s, device=cfg.train.device)
    try:
        D.setup_logging()
        resolve_config(cfg, info.world_size)
        changed = check_run_dir(cfg)
        from trainer.loop import Trainer  # heavy imports (DeepSpeed, DALI) after arg checks

        trainer = Trainer(cfg, info)
        if D.is_main():
            write_run_metadata(cfg, Path(cfg.train.run_dir), changed)
        trainer.fit()
        return 0
    finally:
        D.cleanup()
        # Interpreter shutdown would otherwise spend 5-10 s collecting DeepSpeed/DALI objects.
        gc.freeze()


@record
def main(argv: list[str] | None = None) -> int:
    """``jicd train``: the guarded runner of every jicd command around :func:`run`."""
    return run_guarded("jicd train", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
