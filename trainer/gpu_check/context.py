"""What the lines of the GPU check share: the context, SKIP, subprocess helpers, data."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from jicd import distributed as D
from trainer.testing import as_mode, make_shards, smooth_image

REPO = Path(__file__).resolve().parents[2]


class Skip(Exception):
    """Raised by a check that cannot run here; its message is the reason."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    figures: str


@dataclass
class Context:
    """What the checks share: a scratch folder, the GPU count, generated inputs (lazily)."""

    out: Path
    gpus: int

    def need_gpus(self, count: int = 1) -> None:
        if self.gpus < count:
            raise Skip(f"needs {count} GPU(s), torch sees {self.gpus}")

    def need_dali(self) -> None:
        """SKIP (not FAIL) where DALI is absent: ``data.backend=auto`` then uses the torch loader,
        which is a supported configuration, so its absence is no defect."""
        if not dali_installed():
            raise Skip(DALI_MISSING)

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


DALI_MISSING = "DALI not installed (torch loader in use)"


def dali_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("nvidia.dali") is not None


def photo(side: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth photo-like image (low-frequency colour field + a little texture)."""
    kind = {"L": "grey", "RGBA": "rgba"}.get(mode, "png")
    return as_mode(smooth_image(side, side, seed, texture=4.0), kind)


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the rank variables of the in-process group (a child would
    take them for a torchrun launch and bind the same port), plus ``extra``."""
    drop = {*D.TORCHRUN_VARS, "LOCAL_WORLD_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` from the repository root; its output is returned, not printed."""
    env = child_env(**kwargs.pop("env", {}))
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def group(ctx: Context) -> D.DistInfo:
    """A one-process NCCL group for the in-process lines (DeepSpeed keeps the first one)."""
    ctx.need_gpus(1)
    return D._INFO or D.init_distributed(timeout_s=300, device="cuda")


def shards(ctx: Context, name: str, count: int, side: int, kinds: tuple[str, ...]) -> Path:
    """Shards of generated photos stored as ``kinds`` (jpg, grey, png, rgba, jp2) in turn, named
    ``<kind><3-digit index>``; TIFF sources become lossless JPEG 2000, the format nvJPEG2000
    decodes on GPU. The photos are in ``<out>/shards_<name>/images``."""
    return make_shards(
        ctx.out / f"shards_{name}", count, side, min_side=side, maxcount=8, kinds=kinds,
        texture=4.0, grid=6, stem="{kind}{index:03d}",
    )  # fmt: skip
