"""Download every locked dependency as wheels for a chosen Python and platform (air-gapped nodes).

    make wheelhouse WHEELHOUSE=wheels WHEEL_PYTHON=3.12 EXCLUDE="torch torchvision"
    python launch/wheelhouse.py wheels --python-version 3.12 --platform manylinux_2_34_x86_64 \
        --exclude torch torchvision nvidia-dali-cuda130

Run it where PyPI is reachable (a login node); copy the folder to the GPU nodes and install there
with ``make install-offline WHEELHOUSE=wheels`` (``pip install --no-index``: nothing from the
network). The folder gets:

* a wheel of every distribution jicd needs on the target (``requirements-lock.txt`` pins applied),
  jicd's own wheel and a wheel of DeepSpeed (PyPI has only its source; it is pure Python and is
  built here once);
* ``requirements.txt``: the exact pins of those wheels, what install-offline installs;
* ``wheelhouse.json``: the target, the excluded names and what was left out with them.

``--exclude`` leaves out packages the target already has (an NGC container's torch and DALI) and
everything only they need: the dependency graph from pip's resolver report is walked from jicd,
never through an excluded package.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a login node's bare python3: pip carries its own copy
    # the same code as ``packaging`` under another module name, whose types mypy keeps apart
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-lock.txt"
SOURCE_ONLY = ("deepspeed",)  # no wheel on PyPI: built here (pure Python, py3-none-any)
BUILD_BACKEND = ("setuptools>=68", "wheel")  # so `pip install -e .` builds offline


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to fill (created)")
    parser.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument(
        "--platform", default="manylinux_2_34_x86_64",
        help="pip platform tag; older manylinux tags are taken too (compressai needs glibc 2.34)",
    )  # fmt: skip
    parser.add_argument("--exclude", nargs="*", default=[], help="names the target already has")
    parser.add_argument("--extras", default="dev", help="jicd extras to include ('' for none)")
    return parser.parse_args(argv)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def platform_tags(platform: str) -> list[str]:
    """``manylinux_2_34_x86_64`` → it and every older manylinux tag of that machine (a glibc-2.34
    system runs them all; pip does not widen a given ``--platform`` by itself)."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if match is None:
        return [platform]
    newest, machine = int(match.group(1)), match.group(2)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, 4, -1)]
    return tags + [f"manylinux{legacy}_{machine}" for legacy in ("2014", "2010", "1")]


def target_options(args: argparse.Namespace) -> list[str]:
    """pip's options that describe the target interpreter instead of this one."""
    version = args.python_version.replace(".", "")
    platforms = [option for tag in platform_tags(args.platform) for option in ("--platform", tag)]
    return [
        "--only-binary=:all:", "--python-version", args.python_version, *platforms,
        "--implementation", "cp", "--abi", f"cp{version}", "--abi", "abi3", "--abi", "none",
    ]  # fmt: skip


def build_local_wheels(out: Path) -> None:
    """jicd itself and the source-only pins, as wheels in ``out`` (setuptools' ``build/`` and
    egg-info folders, if this build made them, are removed from the checkout again)."""
    pins = [line.split(";")[0].strip() for line in LOCK.read_text().splitlines()]
    source_only = [p for p in pins if canonicalize_name(p.split("==")[0]) in SOURCE_ONLY]
    leftovers = [REPO / "build", REPO / "jicd.egg-info"]
    existed = {path for path in leftovers if path.exists()}
    pip("wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO), *source_only)
    for path in set(leftovers) - existed:
        shutil.rmtree(path, ignore_errors=True)


def resolve(args: argparse.Namespace, out: Path) -> dict:
    """pip's installation report of jicd (with extras) for the target, without installing."""
    root = f"jicd[{args.extras}]" if args.extras else "jicd"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip(
            "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
            "--target", str(Path(tmp) / "target"), "--find-links", str(out), "-c", str(LOCK),
            *target_options(args), root,
        )  # fmt: skip
        return json.loads(report.read_text())


def kept_distributions(report: dict, exclude: set[str], environment: dict) -> dict[str, str]:
    """``{name: version}`` reachable from jicd without passing an excluded name."""
    items: dict[str, Any] = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    extras: dict[str, list[str]] = {
        canonicalize_name(i["metadata"]["name"]): i.get("requested_extras") or []
        for i in report["install"]
    }
    kept: dict[str, str] = {}
    stack = ["jicd"]
    while stack:
        name = stack.pop()
        if name in kept or name in exclude or name not in items:
            continue
        kept[name] = items[name]["metadata"]["version"]
        for text in items[name]["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            if _applies(requirement, extras.get(name, []), environment):
                stack.append(canonicalize_name(requirement.name))
    return kept


def _applies(requirement: Requirement, extras: list[str], environment: dict) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ["", *extras]
    )


def target_environment(args: argparse.Namespace) -> dict[str, str]:
    """Marker variables of the target (Linux, the platform's machine, the chosen Python)."""
    # ``Environment`` is a TypedDict whose values are all strings
    environment = cast("dict[str, str]", dict(default_environment()))
    machine = "aarch64" if "aarch64" in args.platform else "x86_64"
    version = args.python_version
    environment.update(
        python_version=version, python_full_version=f"{version}.0", platform_machine=machine,
        platform_system="Linux", sys_platform="linux", os_name="posix",
        implementation_name="cpython", platform_python_implementation="CPython",
    )  # fmt: skip
    return environment


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    build_local_wheels(out)
    report = resolve(args, out)
    exclude: set[str] = {canonicalize_name(name) for name in args.exclude}
    kept = kept_distributions(report, exclude, target_environment(args))
    resolved = {canonicalize_name(i["metadata"]["name"]) for i in report["install"]}
    pins = [f"{name}=={version}" for name, version in sorted(kept.items())]
    downloads = [p for p in pins if p.split("==")[0] not in ("jicd", *SOURCE_ONLY)]
    pip("download", "--quiet", "--no-deps", "-d", str(out), *target_options(args), *downloads)
    pip("download", "--quiet", "-d", str(out), *target_options(args), *BUILD_BACKEND)
    (out / "requirements.txt").write_text("\n".join(p for p in pins if p.split("==")[0] != "jicd"))
    summary = {
        "python_version": args.python_version,
        "platform": args.platform,
        "excluded": sorted(exclude),
        "left_out_with_them": sorted(resolved - set(kept)),
        "distributions": len(kept),
    }
    (out / "wheelhouse.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{out}: {len(kept)} distributions for CPython {args.python_version} on {args.platform}"
          f"; left out {len(summary['left_out_with_them'])} ({', '.join(sorted(exclude)) or '-'}"
          " and what only they need)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
