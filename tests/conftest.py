"""Shared test set-up: the helper modules beside this file (``train_harness``,
``data_fixtures``, ``dev_tools``, ``slurm_cluster``) are importable from every sub-folder.

Tests are grouped by the package they cover: ``library/`` (``jicd``), ``data/``
(``data_pipeline``), ``training/`` (``trainer``), ``launchers/`` (``launch/``, Docker, Slurm).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
