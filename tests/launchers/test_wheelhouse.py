"""``make wheelhouse`` + ``make install-offline``: an air-gapped install that takes nothing from
the network.

The wheelhouse is built for this machine's Python with torch, torchvision and DALI left out (as
for an NGC container that ships them); the fresh environment then gets those three (and what
only they need) from this test environment through a ``.pth`` file — the target "already has
them" — and everything else from the wheelhouse, with pip's index and configuration disabled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXCLUDE = "torch torchvision nvidia-dali-cuda130"


def make(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
        timeout=timeout, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def provide_from_this_environment(names: list[str], venv: Path) -> None:
    """Make the installed distributions ``names`` visible in ``venv`` (symlinks + a .pth)."""
    farm = venv / "preinstalled"
    farm.mkdir()
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            if (base / top).exists() and not (farm / top).exists():
                (farm / top).symlink_to(base / top)
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    (site / "preinstalled.pth").write_text(str(farm) + "\n")


def test_wheelhouse_installs_offline_beside_a_preinstalled_torch(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make("wheelhouse", f"WHEELHOUSE={wheels}", f"EXCLUDE={EXCLUDE}", f"PYTHON={sys.executable}")
    summary = json.loads((wheels / "wheelhouse.json").read_text())
    assert {"torch", "torchvision", "triton"} <= set(summary["left_out_with_them"])
    assert not list(wheels.glob("torch-*.whl")) and list(wheels.glob("compressai-*.whl"))
    assert list(wheels.glob("deepspeed-*-py3-none-any.whl"))  # built: PyPI has only its source

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    provide_from_this_environment(summary["left_out_with_them"], venv)
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    make("install-offline", f"VENV={venv}", f"WHEELHOUSE={wheels}", env=offline)

    helped = subprocess.run(
        [str(venv / "bin" / "jicd"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "compress" in helped.stdout, helped.stderr[-2000:]
    probe = (
        "import compressai, deepspeed, torch, webdataset, jicd.models as m; "
        "print(m.build_model('jicd', 1, channels=8).__class__.__name__, torch.__file__)"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=300,
        env={**offline, "DS_ACCELERATOR": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("JointDenoisingCodec") and "preinstalled" in done.stdout
