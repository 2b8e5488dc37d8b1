#!/usr/bin/env python3
"""Check that every relative link in the repository's Markdown files resolves:
the file or directory exists, and a `#fragment` into a Markdown file names one
of its headings (GitHub's anchors). Links to other sites are not checked.

    scripts/check-links.py            # every Markdown file git knows of (tracked or not ignored)
    scripts/check-links.py FILE...    # only these

Exits 1 listing each broken link as FILE:LINE: TARGET (why).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

# [text](target) and [text](target "title"); images too. Nested brackets in
# the text are rare enough in these files to ignore.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+\1")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()
    return sorted({ROOT / name for name in listed if (ROOT / name).is_file()})


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, inline code removed."""
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if opening:
            if fence is None:
                fence = opening.group(1)
            elif opening.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield number, INLINE_CODE.sub("", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: formatting and punctuation dropped,
    lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchors: dict[Path, set[str]] = {}


def anchors(path: Path) -> set[str]:
    if path not in _anchors:
        seen: dict[str, int] = {}
        found = set()
        fence = None
        for line in path.read_text(encoding="utf-8").splitlines():
            opening = FENCE.match(line)
            if opening:
                fence = opening.group(1) if fence is None else (None if opening.group(1) == fence else fence)
                continue
            heading = HEADING.match(line) if fence is None else None
            if heading:
                base = slug(heading.group(1))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
        _anchors[path] = found
    return _anchors[path]


def problem(source: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
        return None  # http:, https:, mailto: ...: another site
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part)
    if path_part.startswith("/"):
        resolved = ROOT / path_part.lstrip("/")
    elif path_part:
        resolved = (source.parent / path_part).resolve()
    else:
        resolved = source
    if not resolved.exists():
        return "no such file"
    if ROOT not in resolved.parents and resolved != ROOT:
        return "outside the repository"
    if fragment and resolved.is_file() and resolved.suffix == ".md":
        if unquote(fragment).lower() not in anchors(resolved):
            return f"no heading #{fragment} in {resolved.relative_to(ROOT)}"
    return None


def main() -> int:
    files = [Path(f).resolve() for f in sys.argv[1:]] or markdown_files()
    broken = []
    for source in files:
        for number, line in prose_lines(source.read_text(encoding="utf-8")):
            targets = INLINE_LINK.findall(line)
            definition = REFERENCE_DEFINITION.match(line)
            if definition:
                targets.append(definition.group(1))
            for target in targets:
                why = problem(source, target)
                if why:
                    broken.append(f"{source.relative_to(ROOT)}:{number}: {target} ({why})")
    for line in broken:
        print(line)
    print(f"check-links: {len(files)} Markdown files, {len(broken)} broken links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
