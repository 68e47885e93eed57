"""The valid inputs the fuzz test mutates, and one case of each kind from them."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from fuzzing import (
    Case,
    copy_folder,
    dump_json,
    mutate_bytes,
    mutate_jicd,
    mutate_json,
    mutate_text_lines,
    rewrite,
)

from trainer.testing import make_export, make_image, make_shards

KINDS = {"jicd": 0.45, "manifest": 0.15, "index": 0.2, "results": 0.2}
"""What a case mutates, and how often."""


@dataclass
class Inputs:
    """Valid inputs: a tiny export, ``.jicd`` files of both coders, shards, a results folder."""

    checkpoint: Path
    jicd: list[Path]
    shards: Path
    results: Path


def build_inputs(root: Path) -> Inputs:
    from jicd.codec.commands import compress_main

    checkpoint = make_export(root / "model.pt")
    jicd = []
    for coder, (height, width) in (("wavefront", (64, 64)), ("serial", (64, 64))):
        image = make_image(root / f"{coder}.png", height, width)
        jicd.append(root / f"{coder}.jicd")
        argv = [str(image), "-o", str(jicd[-1]), "--checkpoint", str(checkpoint)]
        assert compress_main([*argv, "--coder", coder]) == 0
    image = make_image(root / "odd.png", 67, 100)
    jicd.append(root / "odd.jicd")
    assert compress_main([str(image), "-o", str(jicd[-1]), "--checkpoint", str(checkpoint)]) == 0
    shards = make_shards(root / "data", count=8)
    return Inputs(checkpoint, jicd, shards, _results_folder(root / "results"))


def _results_folder(folder: Path) -> Path:
    """Two results JSONs as ``jicd evaluate`` writes them (one set, two levels)."""
    folder.mkdir()
    for level in (1, 4):
        payload = {
            "name": "jicd",
            "set": "kodak",
            "level": level,
            "checkpoints": ["q1.pt", "q2.pt", "q3.pt"],
            "results": {
                "bpp": [0.1, 0.2, 0.4],
                "psnr": [27.0 - level, 29.0 - level, 31.0 - level],
                "psnr-rgb": [27.1 - level, 29.1 - level, 31.1 - level],
                "ms-ssim-rgb": [0.9, 0.94, 0.97],
                "quality": [1, 2, 3],
            },
        }
        (folder / f"jicd-kodak-level{level}.json").write_text(json.dumps(payload))
    return folder


def make_case(rng: random.Random, inputs: Inputs, work: Path) -> Case:
    """One mutated input in ``work`` (an empty folder) and the command that reads it."""
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    return {"jicd": _jicd, "manifest": _manifest, "index": _index, "results": _results}[kind](
        rng, inputs, work
    )


def _jicd(rng: random.Random, inputs: Inputs, work: Path) -> Case:
    source = rng.choice(inputs.jicd)
    data, note = mutate_jicd(rng, source.read_bytes())
    path, out = work / "in.jicd", work / "out.png"
    path.write_bytes(data)
    argv = ["decompress", str(path), "-o", str(out), "--checkpoint", str(inputs.checkpoint)]
    return Case("jicd", argv, [out], f"{source.name}: {note}")


def _check_shards(kind: str, shards: Path, note: str) -> Case:
    argv = ["check-shards", str(shards), "--workers", "1"]
    return Case(kind, argv, [shards / "check-report.json"], note, ok_codes=(0, 1, 2))


def _manifest(rng: random.Random, inputs: Inputs, work: Path) -> Case:
    shards = copy_folder(inputs.shards, work / "shards")
    if rng.random() < 0.75:
        manifest = json.loads((shards / "manifest.json").read_text())
        rewrite(shards / "manifest.json", lambda _: dump_json(mutate_json(rng, manifest)))
        return _check_shards("manifest", shards, "manifest json edit")
    notes = []
    rewrite(shards / "manifest.json", lambda data: _noted(mutate_bytes(rng, data), notes))
    return _check_shards("manifest", shards, f"manifest bytes {notes[0]}")


def _index(rng: random.Random, inputs: Inputs, work: Path) -> Case:
    shards = copy_folder(inputs.shards, work / "shards")
    index = rng.choice(sorted(shards.glob("*.idx")))
    notes: list[str] = []
    if rng.random() < 0.7:
        text = index.read_text()
        rewrite(index, lambda _: _noted(mutate_text_lines(rng, text), notes).encode())
    else:
        rewrite(index, lambda data: _noted(mutate_bytes(rng, data), notes))
    return _check_shards("index", shards, f"{index.name}: {notes[0]}")


def _results(rng: random.Random, inputs: Inputs, work: Path) -> Case:
    results = copy_folder(inputs.results, work / "results")
    target = rng.choice(sorted(results.glob("*.json")))
    notes: list[str] = []
    if rng.random() < 0.75:
        payload = json.loads(target.read_text())
        rewrite(target, lambda _: dump_json(mutate_json(rng, payload)))
        notes.append("json edit")
    else:
        rewrite(target, lambda data: _noted(mutate_bytes(rng, data), notes))
    out = work / "report"
    argv = ["report", str(results), "--reference", "--output", str(out)]
    return Case("results", argv, [out], f"{target.name}: {notes[0]}")


def _noted(result: tuple, notes: list[str]):
    """The mutated value of ``(value, note)``, keeping the note."""
    value, note = result
    notes.append(str(note))
    return value
