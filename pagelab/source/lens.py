"""The source lens of a report: each stack's callsite as ``file:line`` and its MAINTAINERS section.

Built from a kernel build directory (``pagelab report/diff --build DIR``, or the run's own build):
symbolize.py resolves every distinct frame of the input in one batch per binary, maintainers.py maps
the callsite's file to its sections. Reports, suspects and the ``--by file``/``--by subsystem``
views read the ``Where`` of a stack from here; without a lens (or without line info) ``source`` and
``subsystem`` are null.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagelab.errors import InputError
from pagelab.pageowner.analyse import Group, Snapshot, callsite_index
from pagelab.source.maintainers import Maintainers
from pagelab.source.symbolize import Line, Resolved, Symbolizer, no_line_info_hint

#: ``--by`` keys this lens adds to a report.
SOURCE_KEYS = ("file", "subsystem")
UNKNOWN = "(unknown)"


@dataclass(frozen=True, slots=True)
class Where:
    """A stack's callsite frame in the source: ``source`` is ``file:line`` (None: unresolved)."""

    source: str | None
    subsystem: str | None
    chain: tuple[Line, ...] = ()  # innermost inlined code first, the callsite function's own line last
    frames: tuple[str | None, ...] = ()  # every frame's file:line, as the stack lists them

    @property
    def file(self) -> str | None:
        return self.source.rpartition(":")[0] if self.source else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "subsystem": self.subsystem,
            "inlined": [{"function": ln.function, "source": str(ln)} for ln in self.chain[:-1]],
            "frame_sources": list(self.frames),
        }


NOWHERE = Where(None, None)


class SourceLens:
    """Frames → lines → sections for one kernel build. Raises InputError for a directory without vmlinux."""

    def __init__(self, build_dir: str | os.PathLike[str], modules: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.build_dir = Path(build_dir)
        self.symbolizer = Symbolizer(self.build_dir, modules)
        tree = self.symbolizer.tree
        self.maintainers: Maintainers | None = None
        if tree is not None and (tree / "MAINTAINERS").is_file():
            self.maintainers = Maintainers(tree)
        self._resolved: dict[str, Resolved | None] = {}

    @property
    def line_info(self) -> bool:
        return self.symbolizer.line_info

    def hint(self) -> str | None:
        """The one line to print when this build cannot give lines, else None."""
        return None if self.line_info else no_line_info_hint(self.build_dir)

    def where(self, stacks: Iterable[Sequence[str]]) -> dict[tuple[str, ...], Where]:
        """Every stack's Where; all distinct frames are resolved in one batch per binary first."""
        keyed = {tuple(s) for s in stacks}
        frames = {f for s in keyed for f in s} - self._resolved.keys()
        if frames:
            self._resolved.update(self.symbolizer.resolve(frames))
        return {s: self._where(s) for s in keyed}

    def _where(self, stack: tuple[str, ...]) -> Where:
        if not stack:
            return NOWHERE
        frames = tuple(None if (r := self._resolved.get(f)) is None else r.source for f in stack)
        hit = self._resolved.get(stack[callsite_index(stack)])
        if hit is None:
            return Where(None, None, (), frames)
        return Where(hit.source, self.subsystem(hit.line.file), hit.chain, frames)

    def subsystem(self, path: str) -> str | None:
        return self.maintainers.subsystem(path) if self.maintainers else None


def open_lens(
    build: str | os.PathLike[str] | None, modules: Iterable[str | os.PathLike[str]] = ()
) -> SourceLens | None:
    """A lens for ``--build DIR`` (None when not given). Raises InputError for a bad directory."""
    if build is None:
        return None
    p = Path(build).expanduser()
    if not p.is_dir():
        raise InputError(str(build), "--build: not a directory (expected a kernel build directory, O=)")
    return SourceLens(p, modules)


# -- reports ---------------------------------------------------------------------------------------
def group(snap: Snapshot, key: str, where: Mapping[tuple[str, ...], Where]) -> list[Group]:
    """A ``--by file`` or ``--by subsystem`` view: pages per callsite file or MAINTAINERS section."""
    acc: dict[str, list[int]] = {}
    for st in snap.stacks.values():
        w = where.get(st.stack, NOWHERE)
        k = (w.file if key == "file" else w.subsystem) or UNKNOWN
        a = acc.setdefault(k, [0, 0])
        a[0] += st.records or 0
        a[1] += st.pages
    out = [Group(k, pages, n if snap.kind == "dump" else None) for k, (n, pages) in acc.items()]
    out.sort(key=lambda g: (-g.pages, g.key))
    return out


def annotate_stacks(entries: Iterable[dict[str, Any]], where: Mapping[tuple[str, ...], Where] | None) -> None:
    """Add ``source``/``subsystem`` (and the inline chain, per-frame lines) to JSON stack or suspect rows."""
    for e in entries:
        w = where.get(tuple(e.get("frames") or ()), NOWHERE) if where is not None else NOWHERE
        e.update(w.to_json())
