"""A kernel tree's MAINTAINERS: which sections own a source file, most specific first.

The rules are those of the tree's own ``scripts/get_maintainer.pl`` (read_maintainer_file,
file_match_pattern and the section loop; tests/e2e/test_source_e2e.py compares the two on real files):

- ``F:``/``X:`` patterns become regexes anchored at the start of the path: ``.`` is literal, ``*``
  is ``.*`` and ``?`` is ``.``; a pattern naming a directory of the tree gets a trailing ``/``.
- A pattern ending in ``/`` matches everything below it; any other pattern matches only paths with
  as many ``/`` as itself (``drivers/net/*`` does not reach ``drivers/net/x/y.c``).
- A section with a matching ``X:`` is skipped; a matching ``N:`` (a regex, Perl ``/x``) ranks 0.
- A matching ``F:`` ranks by its depth: its number of ``/``, one more when it does not end in ``/``,
  -1 when it starts with ``*`` (THE REST). The section's rank is that of its LAST matching pattern.
- Sections are listed highest rank first; ties keep the file's order (get_maintainer.pl leaves ties
  in hash order).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pagelab.errors import InputError

_TYPED = re.compile(r"^([A-Z]):\s*(.*)")
_META = re.compile(r"[.*?\[\]()+{}|^$\\]")


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str  # F, X or N
    regex: str  # as get_maintainer.pl holds it after conversion
    prefix: str  # literal start of the regex: a cheap filter before the regex runs
    depth: int  # the F: rank

    def matches(self, path: str) -> bool:
        if not path.startswith(self.prefix):
            return False
        if self.kind == "N":
            return _compiled(self.regex, re.VERBOSE).search(path) is not None
        if _compiled(self.regex, 0).match(path) is None:
            return False
        return self.regex.endswith("/") or path.count("/") == self.regex.count("/")


@dataclass(frozen=True)
class Section:
    """One MAINTAINERS section: its title line and typed entries."""

    title: str
    maintainers: tuple[str, ...]
    lists: tuple[str, ...]
    status: str | None
    patterns: tuple[_Pattern, ...] = field(repr=False)

    def rank(self, path: str) -> int | None:
        """get_maintainer.pl's rank of ``path`` in this section, or None when the section does not cover it."""
        if any(p.kind == "X" and p.matches(path) for p in self.patterns):
            return None
        rank = None
        for p in self.patterns:
            if p.kind in ("F", "N") and p.matches(path):
                rank = p.depth
        return rank


@lru_cache(maxsize=8192)
def _compiled(regex: str, flags: int) -> re.Pattern[str]:
    try:
        return re.compile(regex, flags)
    except re.error:
        return re.compile(re.escape(regex), flags)


def _convert(value: str, tree: Path) -> str:
    value = value.replace(".", "\\.").replace("*", ".*").replace("?", ".")
    if not value.endswith("/") and (tree / value).is_dir():
        value += "/"
    return value


def _depth(regex: str) -> int:
    if regex.startswith(".*"):
        return -1
    return regex.count("/") + (0 if regex.endswith("/") else 1)


def _literal_prefix(regex: str, kind: str) -> str:
    if kind == "N":
        return ""  # a free regex: searched anywhere in the path
    out, i = [], 0
    while i < len(regex):
        if regex.startswith("\\.", i):  # an escaped dot is a literal dot
            out.append(".")
            i += 2
        elif _META.match(regex[i]):
            break
        else:
            out.append(regex[i])
            i += 1
    return "".join(out)


class Maintainers:
    """The sections of one tree's MAINTAINERS. Raises InputError when the file is missing or unreadable."""

    def __init__(self, tree: str | os.PathLike[str]) -> None:
        self.tree = Path(tree)
        path = self.tree / "MAINTAINERS"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise InputError(str(path), f"cannot read MAINTAINERS ({err.strerror or err})") from None
        self.sections = self._parse(text)
        self._memo: dict[str, list[Section]] = {}

    def _parse(self, text: str) -> list[Section]:
        # get_maintainer.pl's @typevalue: typed lines and, as titles, every other non-blank, non-# line.
        rows: list[tuple[str, str] | str] = []
        for line in text.splitlines():
            m = _TYPED.match(line)
            if m:
                kind, value = m.group(1), m.group(2)
                if kind in ("F", "X"):
                    value = _convert(value, self.tree)
                rows.append((kind, value))
            elif line.strip() and not line.lstrip().startswith("#"):
                rows.append(line)
        sections: list[Section] = []
        i = next((n for n, r in enumerate(rows) if isinstance(r, tuple)), len(rows))
        while i < len(rows):
            start = i
            while start > 0 and isinstance(rows[start], tuple):
                start -= 1
            end = i
            while end < len(rows) and isinstance(rows[end], tuple):
                end += 1
            title = rows[start] if isinstance(rows[start], str) else ""
            typed = [r for r in rows[start:end] if isinstance(r, tuple)]
            patterns = tuple(
                _Pattern(k, v, _literal_prefix(v, k), _depth(v) if k == "F" else 0)
                for k, v in typed
                if k in ("F", "X", "N")
            )
            sections.append(
                Section(
                    title=str(title).strip(),
                    maintainers=tuple(v for k, v in typed if k == "M"),
                    lists=tuple(v for k, v in typed if k == "L"),
                    status=next((v for k, v in typed if k == "S"), None),
                    patterns=patterns,
                )
            )
            i = end + 1
        return sections

    def sections_for(self, path: str) -> list[Section]:
        """Sections covering ``path`` (relative to the tree), most specific first."""
        if path not in self._memo:
            ranked = [(r, n, s) for n, s in enumerate(self.sections) if (r := s.rank(path)) is not None]
            ranked.sort(key=lambda t: (-t[0], t[1]))
            self._memo[path] = [s for _, _, s in ranked]
        return self._memo[path]

    def subsystem(self, path: str) -> str | None:
        """The most specific section's title, or None (a path outside the tree, or no section)."""
        if path.startswith("/") or path.startswith(".."):
            return None
        found = self.sections_for(path)
        return found[0].title if found else None
