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

from trainer import distributed as D
from trainer.config import Config, ConfigError, load_config, to_yaml

log = logging.getLogger("jicd.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jicd train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4")
    return parser.parse_args(argv)


def write_run_metadata(cfg: Config, run_dir: Path) -> None:
    """Resolved config, git revision and world size, written by rank 0 at start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    meta = {"git_revision": git_revision(), "world_size": D.get_world_size(), "argv": sys.argv}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


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


@record
def main(argv: list[str] | None = None) -> int:
    """parse → init distributed → build → train → teardown (on every exit path)."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"jicd train: {err}", file=sys.stderr)
        return 2
    info = D.init_distributed(cfg.train.timeout_s)
    try:
        D.setup_logging()
        from trainer.loop import Trainer  # heavy imports (DeepSpeed, DALI) after arg checks

        if D.is_main():
            write_run_metadata(cfg, Path(cfg.train.run_dir))
        try:
            trainer = Trainer(cfg, info)
        except (ValueError, FileNotFoundError) as err:
            print(f"jicd train: {err}", file=sys.stderr)
            return 2
        trainer.fit()
        return 0
    finally:
        D.cleanup()
        # Interpreter shutdown would otherwise spend 5-10 s collecting DeepSpeed/DALI objects.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
