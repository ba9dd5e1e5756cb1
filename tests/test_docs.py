"""The documentation's relative links and anchors resolve, as GitHub renders them: README.md is a map to docs/*.md,
so a moved section or a renamed heading must not leave a reader at a dead link."""

import re
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CHECKED = [*DOCS, REPO / "BENCHMARKS.md"]  # BENCHMARKS.md links into docs/ too

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks: links and headings live only there."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup stripped, lowercased, punctuation but '-' and '_' dropped, each
    space a '-' (github-slugger, which GitHub's renderer follows)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image counts by its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return re.sub(r" ", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered -1, -2, ... in order as GitHub numbers them."""
    seen: Counter[str] = Counter()
    found = set()
    for line in prose(path.read_text()):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose target file or `#anchor` does not exist, as 'target: why'."""
    broken = []
    for line in prose(path.read_text()):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http(s), mailto: not checked (no network)
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{target}: no file {dest}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target}: no heading of {dest.name} has the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("doc", CHECKED, ids=[str(d.relative_to(REPO)) for d in CHECKED])
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_readme_links_every_docs_page() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall((REPO / "README.md").read_text())}
    assert [d.name for d in DOCS[1:] if d not in linked] == []


def test_github_slugs() -> None:
    """Anchors as GitHub writes them for headings of this kind (read from rendered pages)."""
    assert slug("Presets: `conf/` composes `params.yaml`") == "presets-conf-composes-paramsyaml"
    assert slug("`dvc queue start -j N` and DVC's own races") == "dvc-queue-start--j-n-and-dvcs-own-races"
    assert slug("Real WLASL: `data.source: release` or `local`, and `data.dvc`") == (
        "real-wlasl-datasource-release-or-local-and-datadvc")
    assert slug("The model grid, queued") == "the-model-grid-queued"
    assert slug("A [linked](x.md) snake_case heading") == "a-linked-snake_case-heading"


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Part\n\n## Part\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n[ok](other.md#part-1) [ok](#title) [ok](other.md) ![img](other.md) [web](https://x.org/#nope)\n"
        "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#part-2) [bad here](#other-page) ![gone](pic.png)\n"
    )
    assert [b.split(":")[0] for b in broken_links(doc)] == [
        "missing.md", "other.md#part-2", "#other-page", "pic.png"]
