"""``/proc/allocinfo`` (memory allocation profiling, Linux >= 6.10): live bytes and calls per callsite.

Format (the kernel's lib/alloc_tag.c and lib/codetag.c)::

    allocinfo - version: 1.0
    #     <size>  <calls> <tag info>
           12288        3 mm/slub.c:2345 func:alloc_slab_page
            4096        1 leaky.c:41 [leaky] func:leaky_alloc_slab
    v2.0 adds optional ``key:value`` words after the function; ``accurate:no`` marks counters that
    missed allocations (a module's counters before its per-CPU counters existed).

No stacks: a row is one allocation call in the source (``file:line``, module, function), which is what
page owner lacks without DWARF. ``growth`` diffs snapshots of it; ``join`` gives a page owner suspect
the row of its callsite function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pagelab.errors import InputError
from pagelab.pageowner.inputs import display_name, open_input

_HEADER = re.compile(r"^allocinfo - version: (\d+)\.(\d+)\s*$")
_ROW = re.compile(
    r"^\s*(?P<bytes>-?\d+)\s+(?P<calls>\d+)\s+(?P<file>\S+):(?P<line>\d+)"
    r"(?:\s+\[(?P<module>[^\]\s]+)\])?\s+func:(?P<func>\S+)(?P<rest>(?:\s+\S+:\S*)*)\s*$"
)
_MAGIC = b"allocinfo - version:"
#: Versions this parser knows; a newer major may change the columns.
SUPPORTED_MAJOR = (1, 2)


@dataclass(frozen=True, slots=True)
class Callsite:
    file: str
    line: int
    module: str | None
    function: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Row:
    site: Callsite
    bytes: int
    calls: int
    accurate: bool = True


@dataclass
class AllocInfo:
    """One ``/proc/allocinfo`` snapshot."""

    source: str
    label: str
    version: str
    rows: dict[Callsite, Row] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.rows.values())

    def ranked(self) -> list[Row]:
        """Rows by live bytes, largest first (ties: file, line)."""
        return sorted(self.rows.values(), key=lambda r: (-r.bytes, r.site.file, r.site.line, r.site.function))


def is_allocinfo(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (possibly compressed) starts with the allocinfo header.

    Only regular files are sniffed: reading the head of stdin or a pipe (``<(zcat …)``) would eat it.
    """
    if str(path) == "-" or not os.path.isfile(path):
        return False
    try:
        with open_input(path) as stream:
            return stream.read(len(_MAGIC)) == _MAGIC
    except InputError:
        return False


def parse(text: str, *, source: str = "<allocinfo>", label: str = "allocinfo") -> AllocInfo:
    """Parse allocinfo text. Raises InputError naming the line for anything else."""
    lines = text.splitlines()
    if not lines or not (m := _HEADER.match(lines[0])):
        got = lines[0][:60] if lines else "an empty file"
        raise InputError(source, f"expected `allocinfo - version: N.M` (a /proc/allocinfo copy), got {got!r}", 1)
    major = int(m.group(1))
    if major not in SUPPORTED_MAJOR:
        raise InputError(source, f"allocinfo version {m.group(1)}.{m.group(2)} is not supported (1.x, 2.x)", 1)
    info = AllocInfo(source, label, f"{m.group(1)}.{m.group(2)}")
    for n, raw in enumerate(lines[1:], 2):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        r = _ROW.match(raw)
        if r is None:
            raise InputError(source, f"expected `BYTES CALLS FILE:LINE [MODULE] func:NAME`, got {raw.strip()!r}", n)
        words = dict(w.split(":", 1) for w in r["rest"].split())
        site = Callsite(r["file"], int(r["line"]), r["module"], r["func"])
        row = Row(site, int(r["bytes"]), int(r["calls"]), words.get("accurate", "yes") != "no")
        prev = info.rows.get(site)
        if prev is None:
            info.rows[site] = row
        else:  # one source line can hold two allocation calls: one row per callsite, summed
            prev.bytes += row.bytes
            prev.calls += row.calls
            prev.accurate = prev.accurate and row.accurate
    return info


def load(path: str | os.PathLike[str], label: str | None = None) -> AllocInfo:
    """Read an allocinfo file (plain, gz, xz, zst). Raises InputError on bad content."""
    from pagelab.pageowner.analyse import default_label

    name = display_name(path)
    with open_input(path) as stream:
        raw = stream.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(name, "not text: expected a /proc/allocinfo copy") from None
    lab = label or default_label(path).removesuffix(".allocinfo")
    return parse(text, source=name, label=lab)


@dataclass(slots=True)
class Growth:
    """One callsite's change from the first snapshot to the last."""

    site: Callsite
    bytes: int  # growth in bytes, last - first
    calls: int  # growth in calls
    per_snapshot: list[int]  # live bytes in each snapshot
    accurate: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.site.file,
            "line": self.site.line,
            "module": self.site.module,
            "function": self.site.function,
            "bytes": self.bytes,
            "calls": self.calls,
            "per_snapshot": list(self.per_snapshot),
            "accurate": self.accurate,
        }


def growth(snapshots: Sequence[AllocInfo]) -> list[Growth]:
    """Callsites whose live bytes grew from the first snapshot to the last, largest growth first."""
    if len(snapshots) < 2:
        return []
    first, last = snapshots[0], snapshots[-1]
    out = []
    for site in first.rows.keys() | last.rows.keys():
        a, b = first.rows.get(site), last.rows.get(site)
        grew = (b.bytes if b else 0) - (a.bytes if a else 0)
        if grew <= 0:
            continue
        series = [s.rows[site].bytes if site in s.rows else 0 for s in snapshots]
        accurate = all(s.rows[site].accurate for s in snapshots if site in s.rows)
        out.append(Growth(site, grew, (b.calls if b else 0) - (a.calls if a else 0), series, accurate))
    out.sort(key=lambda g: (-g.bytes, g.site.file, g.site.line, g.site.function))
    return out


def growth_json(snapshots: Sequence[AllocInfo], top: int | None = None) -> dict[str, Any]:
    """report.json's ``allocinfo``: ``{version, snapshots: [{label, path, total_bytes}], growth: [...]}``."""
    rows = growth(snapshots)
    return {
        "version": snapshots[-1].version if snapshots else None,
        "snapshots": [{"label": s.label, "path": s.source, "total_bytes": s.total_bytes} for s in snapshots],
        "growth": [g.to_json() for g in (rows[:top] if top is not None else rows)],
    }


def _bare(function: str) -> str:
    # Compiler clones (".constprop.0", ".isra.0", ".cold") are one source function.
    return function.split(".", 1)[0]


def join(
    callsite: str,
    module: str | None,
    rows: Iterable[Growth],
    chain: Sequence[tuple[str, str, int]] = (),
) -> Growth | None:
    """The growth row of a page owner suspect, or None.

    ``chain`` is the callsite frame's resolved inline chain as (function, file, line), innermost first
    (pagelab/source/symbolize.py): a row at one of those lines matches first, then a row of one of those
    functions (allocinfo tags the function that holds the allocation call, which the compiler may have
    inlined into the frame page owner shows: shmem_alloc_folio into shmem_get_folio_gfp), then a row of
    the callsite function itself. Rows must be of the suspect's module (None: built-in). The largest
    growth wins a tie.
    """
    mine = [g for g in rows if g.site.module == module]
    lines = {(f, n) for _, f, n in chain}
    names = [_bare(fn) for fn, _, _ in chain] + [_bare(callsite)]
    for pick in (
        [g for g in mine if (g.site.file, g.site.line) in lines],
        *([g for g in mine if _bare(g.site.function) == name] for name in names),
    ):
        if pick:
            return max(pick, key=lambda g: g.bytes)
    return None


def sibling(snapshot_path: str | os.PathLike[str]) -> str | None:
    """``snapshots/01-x.page_owner.zst`` → ``snapshots/01-x.allocinfo.zst`` when that file exists."""
    p = str(snapshot_path)
    for suffix in (".page_owner.zst", ".page_owner"):
        if p.endswith(suffix):
            cand = p[: -len(suffix)] + ".allocinfo" + (".zst" if suffix.endswith(".zst") else "")
            return cand if os.path.isfile(cand) else None
    return None
