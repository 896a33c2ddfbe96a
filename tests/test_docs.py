"""The documents: every relative link leads somewhere, and the README stays a first hour's read."""

import re
import unicodedata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [
        REPO_ROOT / "README.md",
        *(REPO_ROOT / "docs").glob("*.md"),
        REPO_ROOT / "export" / "README.md",
        REPO_ROOT / "data" / "README.md",
        REPO_ROOT / "loadtest" / "README.md",
        REPO_ROOT / "helm" / "vae-serving" / "README.md",
    ]
)
README_MAX_LINES = 260

_FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INDENTED_CODE = re.compile(r"^(?: {4}|\t).*$", re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); a title after the target ("...") is allowed.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(markdown: str) -> str:
    """The text outside code, where a link is a link and a `#` line a heading."""
    without_blocks = _FENCED_BLOCK.sub("", markdown)
    return _INLINE_CODE.sub("", _INDENTED_CODE.sub("", without_blocks))


def _anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(
        char for char in text
        if char in " -_" or unicodedata.category(char)[0] in "LMN"
    )
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's fragment, numbered as GitHub numbers repeated headings (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    # Only fenced blocks can hide a `#` line: an indented line is never a heading.
    for heading in _HEADING.findall(_FENCED_BLOCK.sub("", markdown)):
        base = _anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(document: Path) -> list[str]:
    """The relative links in `document` whose file, or heading within it, does not exist."""
    broken = []
    for target in _LINK.findall(_prose(document.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{fragment}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(document: Path):
    assert broken_links(document) == []


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## gRPC's transport setting\n")
    document = tmp_path / "doc.md"
    document.write_text(
        "# Doc\n\n[ok](other.md#grpcs-transport-setting) [gone](missing.md) "
        "[no heading](other.md#nowhere) [web](https://example.com/x.md) [here](#doc)\n\n"
        "```sh\n[in code](not-a-link.md)\n```\n"
    )
    assert broken_links(document) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere",
    ]


def test_the_readme_stays_short_and_shows_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < README_MAX_LINES
    assert "make serve" in readme
    assert "make test" in readme
