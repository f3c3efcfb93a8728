"""The front page and the documentation hold together: every relative link and anchor in README.md, BENCHMARKS.md
and docs/ resolves, every command the README and the docs show exists (its `--help` succeeds), the README stays a
front page (at most 150 lines) showing the three jobs, and the generated CLI reference is what the CLI says today."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from faceverify.cli import run

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
GROUPS = {"gallery", "evaluate"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (GitHub numbers repeated ones -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [next(g for g in m.groups() if g) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:: not ours to check offline
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no {target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, broken


def _shown_commands(page: Path) -> list[list[str]]:
    """The faceverify command (with its subcommand for the groups) of every line of a page's code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), flags=re.S)
    out = []
    for line in (l for b in blocks for l in b.replace("\\\n", " ").splitlines()):
        line = line.split(" #", 1)[0].strip()
        try:
            words = shlex.split(line)
        except ValueError:  # not shell (a Python line, a fragment)
            words = line.split()
        start = 0
        for i, word in enumerate(words + [";"]):
            if word in ("&&", ";", "|", "||"):
                part = words[start:i]
                while part and "=" in part[0]:  # VAR=value before the command
                    part = part[1:]
                if len(part) >= 2 and part[0] == "faceverify":
                    out.append(part[1:3] if part[1] in GROUPS else part[1:2])
                start = i + 1
    return out


def test_every_command_shown_exists(capsys):
    assert {c[0] for c in _shown_commands(REPO_ROOT / "README.md")} >= {"enroll", "verify", "identify"}  # 3 jobs
    commands = sorted({tuple(c) for page in PAGES for c in _shown_commands(page)})
    assert len(commands) > 10, commands  # the pages show most of the CLI
    failed = [c for c in commands if run([*c, "--help"]) != 0]
    capsys.readouterr()
    assert not failed, failed
    assert run(["no-such-command", "--help"]) != 0  # the check can fail


def test_the_readme_is_a_front_page():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)


def test_the_cli_reference_is_current():
    from tools.cli_reference import main

    assert main(["--check"]) == 0, "docs/cli-reference.md is stale: run python tools/cli_reference.py"
