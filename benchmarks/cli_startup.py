"""Codec CLI: fixed start-up cost vs per-image cost (20 small images: one call vs 20 calls).

Run from the repository root::

    .venv/bin/python benchmarks/cli_startup.py                  # 20 images of 128², N=128
    .venv/bin/python benchmarks/cli_startup.py --count 5 --channels 16 --size 64

Writes ``--count`` generated photos and a randomly initialised ``jicd`` export (quality 3,
``--channels``; a trained model is not available offline — coding time depends on the weights
only through the entropy of the latent), then times, each as a fresh ``python -m jicd``
process with one thread:

* ``missing``: ``jicd compress missing.png …`` (fails before importing torch);
* ``imports``: ``python -c "import torch"`` and ``python -c "import compressai"``;
* ``one call``: ``jicd compress DIR -o OUT/`` on all images (model loaded once);
* ``N calls``: ``jicd compress img_i.png -o img_i.jicd`` once per image.

* ``start-up``: a process that imports what the CLI imports and loads the model, nothing else.

One call should save about ``N - 1`` start-ups over N calls; per image = (one call - start-up) / N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="number of images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--channels", type=int, default=128, help="model N")
    return parser.parse_args(argv)


def timed(command: list[str], expect: int = 0) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{command[3:5]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def prepare(root: Path, args: argparse.Namespace) -> Path:
    import torch

    from jicd.models import ModelConfig, build_model_from_config
    from jicd.models.weights import save_export
    from trainer.testing import make_image

    images = root / "images"
    images.mkdir()
    for i in range(args.count):
        make_image(images / f"img_{i:02d}.png", args.size, args.size, seed=i)
    torch.manual_seed(0)
    cfg = ModelConfig(preset="jicd", quality=3, channels=args.channels)
    save_export(root / "model.pt", build_model_from_config(cfg), cfg)
    return images


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    jicd = [sys.executable, "-m", "jicd", "compress"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = prepare(root, args)
        ckpt = ["--checkpoint", str(root / "model.pt")]
        missing = timed([*jicd, str(root / "missing.png"), "-o", str(root / "m.jicd"), *ckpt], 2)
        torch_import = timed([sys.executable, "-c", "import torch"])
        compressai_import = timed([sys.executable, "-c", "import compressai"])
        load = (
            "from jicd.models.weights import load_for_inference; import jicd.codec.image_coding; "
        )
        startup = timed(
            [sys.executable, "-c", load + f"load_for_inference({str(root / 'model.pt')!r})"]
        )
        one_call = timed([*jicd, str(images), "-o", str(root / "batch") + os.sep, *ckpt])
        files = sorted(images.iterdir())
        started = time.perf_counter()
        for path in files:
            timed([*jicd, str(path), "-o", str(root / f"{path.stem}.jicd"), *ckpt])
        many_calls = time.perf_counter() - started
    n = args.count
    saving = many_calls - one_call
    print(f"{n} images of {args.size}x{args.size}, N={args.channels}, 1 thread")
    print(f"missing input, error after      {missing:7.2f} s (no torch import)")
    print(f"python -c 'import torch'        {torch_import:7.2f} s")
    print(f"python -c 'import compressai'   {compressai_import:7.2f} s")
    print(f"start-up: imports + model load  {startup:7.2f} s (measured alone)")
    print(f"one call, {n} images            {one_call:7.2f} s")
    print(f"{n} calls, one image each       {many_calls:7.2f} s")
    print(f"per image in one call           {(one_call - startup) / n:7.2f} s")
    print(
        f"start-up per call, derived      {saving / (n - 1):7.2f} s (N calls - one call) / (N - 1)"
    )
    print(f"one call saves                  {saving:7.2f} s = {saving / startup:.1f} start-ups")


if __name__ == "__main__":
    main()
