"""The documentation's links hold and README.md stays a front page.

README.md says what nlaprobe is and how to run it; the reference lives in docs/*.md. Every
relative link in those files must name a file that exists, and every `#anchor` a heading of the
file it points into, by GitHub's rule (the heading's text lowercased, punctuation other than
hyphens and underscores dropped, spaces turned into hyphens; a repeated anchor gets -1, -2, ...).
Every docs/*.md must be reachable from README.md by links.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# the front page's bound; the README held the whole reference (97 KB) before docs/
FRONT_PAGE_MAX_BYTES = 15_000
# the commands the front page must show: the embedded default, the paper's series on Slurm and
# the test command (.ci/run runs "the README's test command")
FRONT_PAGE_COMMANDS = (
    "snakemake --cores all results/transfer_matrix.json",
    "snakemake --profile profiles/slurm --configfile config/paper.pinned.yaml",
    "make test",
)

LINK = re.compile(r"(?<!!)\[(?:[^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
# the Unicode categories a GitHub anchor keeps: letters, marks, Nd, Nl, Pc
KEPT_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "Pc"}


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` there is no heading, a link no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def without_code_spans(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (inline code and links reduced to their
    text) lowercased, every character dropped but letters, marks, decimal and letter numbers,
    connector punctuation (the underscore), hyphens and spaces (GitHub's `[^\\p{L}\\p{M}\\p{Nd}
    \\p{Nl}\\p{Pc}\\- ]`), spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    kept = (c for c in text if c in "- " or unicodedata.category(c) in KEPT_CATEGORIES)
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """The link targets of a page's prose (not inside code blocks or code spans); a link's text
    may run over a line break."""
    prose = without_code_spans("\n".join(prose_lines(page.read_text(encoding="utf-8"))))
    return [m.group(1) for m in LINK.finditer(prose)]


def relative_links(page: Path) -> list[tuple[str, Path, str]]:
    """(link as written, file it points to, anchor or '') for every link that is not a URL."""
    out = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        out.append((target, (page.parent / path).resolve() if path else page, anchor))
    return out


def broken_links(page: Path) -> list[str]:
    """One line per link of `page` whose file does not exist or whose anchor is no heading."""
    problems = []
    for target, file, anchor in relative_links(page):
        if not file.exists():
            problems.append(f"{page.name}: ({target}): no file {file}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            problems.append(f"{page.name}: ({target}): no heading #{anchor} in {file.name}")
    return problems


def test_the_docs_exist():
    names = {p.name for p in DOCS}
    assert {"outputs.md", "conventions.md", "configs.md", "running.md"} <= names, names


def test_slug_follows_github():
    assert slug("Identity in paths") == "identity-in-paths"
    assert slug("Behaviour: nothing stale, nothing silently wrong") == (
        "behaviour-nothing-stale-nothing-silently-wrong"
    )
    assert slug("Decoding and scoring (SPEC §4.6–§4.9, §5)") == "decoding-and-scoring-spec-4649-5"
    assert slug("Published figures beside the run's own") == "published-figures-beside-the-runs-own"
    assert slug("The same demo models on another x86-64 machine") == (
        "the-same-demo-models-on-another-x86-64-machine"
    )
    assert slug("`make test` and `ruff`") == "make-test-and-ruff"
    assert slug("E2 in `results/quote_ablation.json` (²)") == "e2-in-resultsquote_ablationjson-"


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n## Notes\n```\n# Notes\n```\n## Notes\n### Notes\n", encoding="utf-8")
    assert anchors(page) == {"a", "notes", "notes-1", "notes-2"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Section one\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#section-one) [no file](docs/b.md) [no anchor](docs/a.md#section-two)\n"
        "[self](#top) [gone](#bottom) `[code](docs/c.md)` [web](https://example.org/x.md)\n"
        "[over a\nline break](docs/e.md)\n\n"
        "# Top\n```\n[fenced](docs/d.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 4, problems
    assert "(docs/b.md): no file" in problems[0]
    assert "(docs/a.md#section-two): no heading #section-two in a.md" in problems[1]
    assert "(#bottom): no heading #bottom in README.md" in problems[2]
    assert "(docs/e.md): no file" in problems[3]


def test_every_doc_is_reachable_from_the_readme():
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for _, file, _ in relative_links(page):
            if file.suffix == ".md" and file.exists() and file not in reached:
                reached.add(file)
                todo.append(file)
    assert [p.name for p in DOCS if p not in reached] == []


def test_the_readme_stays_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < FRONT_PAGE_MAX_BYTES
    for command in FRONT_PAGE_COMMANDS:
        assert command in text, command
    # the test command as a line of its own, where a reader (and .ci/run's comment) finds it
    assert re.search(r"^make test\b", text, re.MULTILINE)
