"""Entry point for torchrun, Slurm and Docker (the same as ``jicd train``).

torchrun --nproc_per_node=4 launch/train.py --config configs/q3.yaml train.run_dir=runs/q3
python launch/train.py --config configs/smoke.yaml data.shards=shards/
"""

import sys

from jicd.__main__ import quiet_library_warnings

quiet_library_warnings()  # before the heavy imports that trigger them

from trainer.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
