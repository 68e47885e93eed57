"""The docs point at things that exist: every relative link (and its ``#anchor``) resolves, and
every repository path they mention (``jicd/noise/baseline.py``, ``configs/q{2,3}_msssim.yaml``,
``launch/gpu_check*.py``) names a file or folder of this tree.

A path counts as mentioned when it starts with a top-level folder of the repository (``ROOTS``)
anywhere in the text — prose, inline code or a fenced command — and is not a template
(``configs/q$q.yaml``, ``runs/<name>``). ``{a,b}`` expands as in the shell, ``{name}`` and ``*``
match any file. Paths under ``results/`` other than the committed study are outputs of commands,
not files of the tree, and are not checked.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = (
    "jicd", "data_pipeline", "trainer", "launch", "configs", "tests", "benchmarks", "docs", ".ci",
    "results/cpu-study",
)  # fmt: skip
DOCS = sorted(
    {REPO / "README.md", REPO / "configs" / "README.md", REPO / "launch" / "README.md"}
    | set((REPO / "docs").glob("*.md"))
)
SOURCE_SUFFIXES = {".py", ".sh", ".sbatch", ".yaml", ".toml"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
DOC_MENTION = re.compile(r"(?<![\w./-])(docs/[\w-]+\.md|(?:configs/|launch/)?README\.md)(#[\w-]+)?")


def path_pattern(roots: tuple[str, ...]) -> re.Pattern[str]:
    """A root folder, then ``/`` and path characters; not preceded by a path character."""
    alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
    return re.compile(rf"(?<![\w./$-])(?:{alternatives})(?=/)[\w.*{{}},/-]*")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, '-' for ' '."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a document (repeated headings get GitHub's ``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def expand_braces(path: str) -> list[str]:
    """``a{1,2}b`` → ``a1b``, ``a2b``; a brace without a comma (``{name}``) becomes ``*``."""
    parts = re.split(r"(\{[^{}]*\})", path)
    choices = [
        (p[1:-1].split(",") if "," in p else ["*"]) if p.startswith("{") else [p] for p in parts
    ]
    return ["".join(c) for c in itertools.product(*choices)]


def exists(path: str, base: Path) -> bool:
    """A file or folder (``*`` matching at least one) relative to ``base``."""
    targets = expand_braces(path)
    if any("*" in t for t in targets):
        return all(next(base.glob(t.rstrip("/")), None) is not None for t in targets)
    return all((base / t).exists() for t in targets)


def check_link(target: str, doc: Path, repo: Path) -> str | None:
    """Problem with one link target of ``doc`` (None when it resolves)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    file_part, _, anchor = target.partition("#")
    linked = (doc.parent / file_part).resolve() if file_part else doc
    if not linked.exists() or repo.resolve() not in (linked, *linked.parents):
        return f"broken link {target}"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
        return f"broken anchor {target}"
    return None


def check_paths(text: str, repo: Path, roots: tuple[str, ...]) -> list[str]:
    """Problems with the repository paths mentioned anywhere in ``text``."""
    problems = []
    for match in path_pattern(roots).finditer(text):
        if text[match.end() : match.end() + 1] in ("$", "<"):
            continue  # a template: configs/q$q.yaml, runs/<name>/
        path = match.group(0).rstrip(".,")
        if not exists(path, repo):
            problems.append(f"missing path {path}")
    return problems


def check_doc(doc: Path, repo: Path = REPO, roots: tuple[str, ...] = ROOTS) -> list[str]:
    """Every problem of one Markdown file: broken links, anchors and path mentions."""
    text = doc.read_text()
    links = [check_link(m.group(1), doc, repo) for m in LINK.finditer(FENCE.sub("", text))]
    found = [p for p in links if p] + check_paths(text, repo, roots)
    return [f"{doc.relative_to(repo)}: {problem}" for problem in found]


def source_files() -> list[Path]:
    """The tree's code and recipe files (where docstrings and comments point into the docs)."""
    files = [REPO / "Makefile", REPO / "Dockerfile"]
    for root in ROOTS:
        files += [p for p in (REPO / root).rglob("*") if p.suffix in SOURCE_SUFFIXES]
    this = Path(__file__).resolve()  # its synthetic docs are not the tree's
    return [f for f in files if "fixtures" not in f.parts and f.is_file() and f != this]


def test_the_checker_finds_broken_links_anchors_and_paths(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "a.py").write_text("")
    (tmp_path / "pkg" / "b_q1.yaml").write_text("")
    (tmp_path / "pkg" / "b_q2.yaml").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Ablation rows (Tables 4–5)\n")
    doc = tmp_path / "docs" / "page.md"
    doc.write_text(
        "# Title\n\nGood: [x](other.md), [y](other.md#ablation-rows-tables-45), [z](#title),\n"
        "[w](../pkg/sub/a.py), [web](https://example.org/nope), `pkg/sub/a.py`,\n"
        "pkg/b_q{1,2}.yaml,"
        "`pkg/b_q*.yaml`, pkg/b_q{q}.yaml, `pkg/sub/` and pkg/b_q$q.yaml (a template).\n"
        "Bad: [l](missing.md), [m](other.md#nope), [n](#no-such-heading), [o](../../outside.md),\n"
        "`pkg/sub/gone.py`, pkg/b_q{1,3}.yaml, `pkg/c_*.yaml`, see pkg/old.py.\n"
        "```bash\n# not a heading\npython pkg/sub/a.py && python pkg/fenced_missing.py\n"
        "echo [p](q.md)  # a link in a fence is text\n```\n"
    )
    problems = check_doc(doc, tmp_path, ("pkg",))
    assert problems == [
        f"docs/page.md: {p}"
        for p in (
            "broken link missing.md",
            "broken anchor other.md#nope",
            "broken anchor #no-such-heading",
            "broken link ../../outside.md",
            "missing path pkg/sub/gone.py",
            "missing path pkg/b_q{1,3}.yaml",
            "missing path pkg/c_*.yaml",
            "missing path pkg/old.py",
            "missing path pkg/fenced_missing.py",
        )
    ]
    assert anchors("# A `code` [link](x.md) title\n## Dup\n## Dup\n") == {
        "a-code-link-title", "dup", "dup-1",
    }  # fmt: skip


def test_the_docs_exist() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DOCS}
    assert {"README.md", "configs/README.md", "launch/README.md", "docs/method.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_and_path_in_the_docs_resolves(doc: Path) -> None:
    assert check_doc(doc) == []


def test_code_points_only_at_docs_that_exist() -> None:
    problems = []
    for source in source_files():
        for match in DOC_MENTION.finditer(source.read_text(errors="replace")):
            path, anchor = match.group(1), (match.group(2) or "")[1:]
            target = REPO / path
            if not target.is_file():
                problems.append(f"{source.relative_to(REPO)}: {path} does not exist")
            elif anchor and anchor not in anchors(target.read_text()):
                problems.append(f"{source.relative_to(REPO)}: no #{anchor} in {path}")
    assert problems == []
