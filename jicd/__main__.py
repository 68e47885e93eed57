"""The ``jicd`` command: one entry point, one sub-command per job.

    jicd train --config configs/smoke.yaml train.run_dir=runs/smoke
    jicd prepare-shards SRC_DIR OUT_DIR
    jicd check-shards SHARDS_DIR
    jicd evaluate --checkpoint runs/smoke/export/model.pt --dataset kodak=DIR --levels 1 2 3 4
    jicd report RESULTS_DIR
    jicd import-checkpoint RELEASED.pth.tar -o EXPORT.pt --quality 3
    jicd integerize EXPORT.pt -o EXPORT-int.pt [--calibration DIR]
    jicd compress NOISY.png -o OUT.jicd --checkpoint CKPT
    jicd decompress OUT.jicd -o DENOISED.png --checkpoint CKPT

Dispatch only: each sub-command is named by ``module:function`` and imported when it runs, so
``jicd compress`` does not import DeepSpeed, and the library never imports the training
(``trainer``) or data (``data_pipeline``) packages — those register their commands here by name.
"""

from __future__ import annotations

import importlib
import sys
import warnings

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("trainer.train:main", "train the model (also under torchrun)"),
    "prepare-shards": ("data_pipeline.make_shards:main", "write WebDataset shards from a folder"),
    "check-shards": ("data_pipeline.check_shards:main", "verify shards against their manifest"),
    "evaluate": ("jicd.evaluation.evaluate:main", "real-bitstream evaluation at noise levels"),
    "report": ("jicd.evaluation.report:main", "RD plots and BD-rate table from results"),
    "import-checkpoint": (
        "jicd.models.import_command:main",
        "published checkpoint (CompressAI, ECCV'22, JICDCLS) -> export",
    ),
    "reproduce": (
        "trainer.reproduce.command:main",
        "the paper's tables at tiny / cpu / paper scale",
    ),
    "integerize": (
        "jicd.codec.integer.command:main",
        "export -> export with the integer entropy path (bit-exact on any device)",
    ),
    "compress": ("jicd.codec.commands:compress_main", "encode a noisy image to a .jicd file"),
    "decompress": ("jicd.codec.commands:decompress_main", "decode a .jicd file to a denoised PNG"),
}


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: jicd COMMAND [ARGS...]", "", "commands:"]
    width = max(map(len, COMMANDS)) + 2
    lines += [f"  {name:<{width}}{help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def quiet_library_warnings() -> None:
    """Hide deprecation notices that libraries (CompressAI, DeepSpeed) trigger inside torch."""
    for module in ("torch.jit", "torch.distributed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its sub-command's ``main(argv[1:])``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(
            f"jicd: unknown command '{argv[0]}'; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    quiet_library_warnings()
    module_name, func_name = COMMANDS[argv[0]][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
