"""Aggregate a dump or show_stacks file into a Snapshot: pages per stack, callsites, modules, group-by views.

A Snapshot keeps one counter row per distinct (stack, pid, tgid, comm, order, GFP flags, migratetype,
pageblock migratetype): every view and filter is computed from those rows, so memory is bounded by what
the analysis keeps, not by the dump size. What counts as allocator internals (skipped to find the
callsite) and how stacks map to allocator classes is data: ALLOCATOR_FRAMES and CLASS_MARKERS.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from pagelab.errors import InputError, UsageError
from pagelab.pageowner.identities import NS, Allocations, now_ns
from pagelab.pageowner.inputs import display_name, open_input
from pagelab.pageowner.parse import CHUNK_SIZE, Parser, Record, StackCount, parse_frame

PAGE_SIZE = 4096  # x86-64 base page; MiB figures assume it

# Glob patterns on a frame's symbol (compiler suffixes such as ".constprop.0" dropped): the page
# allocator, folio allocation, slab and vmalloc internals. The callsite is the first frame, counting from
# the allocation end, that matches none of them.
ALLOCATOR_FRAMES: tuple[str, ...] = (
    # page allocator
    "prep_new_page",
    "post_alloc_hook",
    "get_page_from_freelist",
    "__alloc_pages*",
    "alloc_pages*",
    "__alloc_frozen_pages*",
    "alloc_frozen_pages*",
    "__alloc_pages_node*",
    "alloc_page_interleave",
    "__get_free_pages*",
    "get_free_pages*",
    "get_zeroed_page*",
    "__page_frag_cache_refill",
    # folio allocation
    "__folio_alloc*",
    "folio_alloc*",
    "vma_alloc_folio*",
    "filemap_alloc_folio*",
    "__filemap_alloc_folio*",
    # slab (SLUB and SLAB) and kmalloc
    "alloc_slab_page",
    "allocate_slab",
    "new_slab",
    "___slab_alloc",
    "__slab_alloc*",
    "slab_alloc*",
    "kmem_getpages",
    "cache_grow_begin",
    "cache_alloc_refill",
    "slob_new_pages",
    "slob_alloc*",
    "slob_page_alloc",
    "fallback_alloc",
    "____cache_alloc*",
    "__do_cache_alloc",
    "__kmem_cache_alloc*",
    "kmem_cache_alloc*",
    "kmalloc*",
    "__kmalloc*",
    "___kmalloc*",
    "kmalloc_trace*",
    "kvmalloc*",
    "__kvmalloc*",
    "kvzalloc*",
    "kvcalloc*",
    "kcalloc*",
    "kzalloc*",
    "krealloc*",
    "__do_krealloc",
    "kmemdup*",
    "kstrdup*",
    "kvrealloc*",
    "__do_kmalloc_node",
    "slab_alloc_node",
    # SLUB sheaves, Linux 7.x: the per-CPU slabs were replaced by sheaves refilled in bulk; the frames of
    # mm/slub.c in 7.3.4 between kmem_cache_alloc/kmalloc and new_slab (alloc_from_pcs →
    # __pcs_replace_empty_main → refill_sheaf → refill_objects → alloc_from_new_slab, and the prefill API).
    "alloc_from_pcs",
    "__pcs_replace_empty_main",
    "alloc_full_sheaf",
    "refill_sheaf",
    "refill_objects",
    "__refill_objects",
    "alloc_from_new_slab",
    "alloc_single_from_new_slab",
    "__alloc_empty_sheaf",
    "alloc_empty_sheaf",
    "kmem_cache_prefill_sheaf",
    "kmem_cache_alloc_from_sheaf*",
    # percpu (mm/percpu.c, percpu-vm.c: pcpu_alloc_noprof → pcpu_populate_chunk → pcpu_alloc_pages, 6.12 and 7.3)
    "pcpu_alloc*",
    "pcpu_populate_chunk",
    "pcpu_create_chunk",
    "pcpu_balance_populated",
    "__alloc_percpu*",
    "alloc_percpu*",
    # page_pool (net/core/page_pool.c: page_pool_alloc_pages/_netmems/_frag → __page_pool_alloc_*_slow,
    # page_pool_refill_alloc_cache; 6.12 and 7.3)
    "page_pool_alloc*",
    "__page_pool_alloc*",
    "page_pool_refill_alloc_cache",
    "page_pool_dev_alloc*",
    # vmalloc
    "vm_area_alloc_pages",
    "__vmalloc*",
    "vmalloc*",
    "vzalloc*",
    "vcalloc*",
)

# (class, symbol globs): the first class with a matching frame anywhere in the stack wins; else "other".
CLASS_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("early", ("register_early_stack",)),
    ("slab", ("alloc_slab_page", "allocate_slab", "new_slab", "kmem_getpages", "cache_grow_begin", "slob_new_pages")),
    ("vmalloc", ("vm_area_alloc_pages", "__vmalloc_area_node", "__vmalloc_node_range*")),
    (
        "page cache",
        (
            "filemap_alloc_folio*",
            "__filemap_get_folio*",
            "__page_cache_alloc*",
            "page_cache_ra_*",
            "page_cache_async_ra",
            "page_cache_sync_ra",
            "pagecache_get_page",
            "grab_cache_page*",
            "shmem_alloc_folio",
            "shmem_alloc_and_add_folio",
            "shmem_alloc_page",
            "shmem_get_folio*",
        ),
    ),
    # Page tables are allocated from the fault path too: keep them out of "anonymous".
    ("other", ("__pte_alloc*", "pte_alloc_one*", "__pmd_alloc", "__pud_alloc", "__p4d_alloc", "pgd_alloc")),
    (
        "anonymous",
        (
            "__handle_mm_fault",  # 6.1 inlines do_anonymous_page here; file faults hit page cache first
            "do_anonymous_page",
            "alloc_anon_folio",
            "do_huge_pmd_anonymous_page",
            "__do_huge_pmd_anonymous_page",
            "vma_alloc_zeroed_movable_folio",
            "alloc_zeroed_user_highpage*",
            "folio_prealloc",
            "wp_page_copy",
            "do_cow_fault",
            "do_swap_page",
        ),
    ),
)
CLASSES = ("slab", "vmalloc", "page cache", "anonymous", "other", "early")

# Views over per-record fields (a dump) and over stacks (any input).
STACK_KEYS = ("callsite", "module", "class")
RECORD_KEYS = ("comm", "pid", "tgid", "order", "gfp", "migratetype")
GROUP_KEYS = STACK_KEYS + RECORD_KEYS
FILTER_KEYS = ("pid", "tgid", "comm", "module", "callsite", "gfp", "order", "class", "migratetype")
BUILTIN_MODULE = "vmlinux"


def _globs_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


_ALLOCATOR_RE = _globs_regex(ALLOCATOR_FRAMES)
_CLASS_RES = tuple((name, _globs_regex(globs)) for name, globs in CLASS_MARKERS)


def symbol(frame: str) -> str:
    """The function of a printed frame: ``'seq_read+0x6d/0x7c [mod]'`` → ``'seq_read'``."""
    return parse_frame(frame)[0]


@lru_cache(maxsize=65536)
def _bare_symbol(frame: str) -> str:
    # ".constprop.0", ".isra.0", ".part.0", ".cold": compiler clones of the same function.
    return symbol(frame).split(".", 1)[0]


@lru_cache(maxsize=65536)
def is_allocator_frame(frame: str) -> bool:
    """True when the frame belongs to the allocator internals of ALLOCATOR_FRAMES."""
    return _ALLOCATOR_RE.match(_bare_symbol(frame)) is not None


def callsite_index(stack: Sequence[str]) -> int:
    """Index of the first frame outside the allocator internals (the last frame if all are internal)."""
    for i, frame in enumerate(stack):
        if not is_allocator_frame(frame):
            return i
    return max(len(stack) - 1, 0)


def callsite(stack: Sequence[str]) -> str:
    """The callsite's function name (``'(no stack)'`` for an empty stack)."""
    if not stack:
        return "(no stack)"
    return symbol(stack[callsite_index(stack)])


def module_of(stack: Sequence[str]) -> str | None:
    """The first module named by a frame, from the allocation end (None: built-in code only)."""
    for frame in stack:
        if frame.endswith("]"):
            mod = parse_frame(frame)[1]
            if mod:
                return mod
    return None


def allocator_class(stack: Sequence[str]) -> str:
    """One of CLASSES: early (pre-page_owner boot pages), slab, vmalloc, page cache, anonymous, other."""
    bare = [_bare_symbol(f) for f in stack]
    for name, rx in _CLASS_RES:
        if any(rx.match(s) for s in bare):
            return name
    return "other"


def identity(stack: tuple[str, ...]) -> tuple[str, ...]:
    """The key that matches a stack across snapshots: its frames from the callsite down.

    Dumps and show_stacks of one kernel print the same depot entries (compared on po612/ss612: identical
    frame lists, both starting at get_page_from_freelist); cutting the allocator-internal prefix also
    merges the slab fast and slow paths of one callsite, which is what a leak hunt wants.
    """
    return stack[callsite_index(stack) :] if stack else stack


@dataclass(slots=True)
class StackStats:
    """Pages and records of one stack in one snapshot, with its derived callsite, module and class."""

    stack: tuple[str, ...]
    pages: int = 0
    records: int | None = 0
    callsite: str = ""
    module: str | None = None
    cls: str = "other"

    @property
    def identity(self) -> tuple[str, ...]:
        return identity(self.stack)


@dataclass(slots=True)
class Group:
    """One row of a group-by view."""

    key: str
    pages: int
    records: int | None


@dataclass(slots=True)
class Fragmentation:
    """Pages whose migratetype differs from their pageblock's (they sit in mixed, fallback blocks)."""

    pages: int
    records: int
    total_pages: int
    pairs: list[tuple[str, str, int]]  # (page type, block type, pages), largest first


# Row key of a dump snapshot: (stack, pid, tgid, comm, order, gfp_flags, migratetype, block_migratetype).
RowKey = tuple[tuple[str, ...], int | None, int | None, str | None, int, tuple[str, ...], str | None, str | None]


@dataclass
class Snapshot:
    """Aggregated view of one dump or show_stacks file. Build with load_snapshot or SnapshotBuilder."""

    kind: str  # "dump" | "show_stacks"
    label: str
    source: str
    records: int | None
    total_pages: int
    stacks: dict[tuple[str, ...], StackStats]
    rows: dict[RowKey, list[int]] = field(default_factory=dict)  # [records, pages]; dumps only
    warnings: list[str] = field(default_factory=list)
    has_pfn: bool = False
    filters: tuple[str, ...] = ()
    seconds: float = 0.0
    bytes_read: int = 0
    # Every record's (PFN, order, ts) and row, when each record has a PFN and a ts (identities.py).
    allocs: Allocations | None = None
    clock_ns: int | None = None  # the guest's clock (page_owner's ts clock) when the snapshot was taken
    # After older_than: only allocations with ts at or before this were kept (what re-reads of the dump,
    # pollution.blocks_for, must keep too: a row's young records share its key with its old ones).
    ts_cutoff_ns: int | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_stream(
        cls,
        stream: BinaryIO,
        *,
        label: str = "snapshot",
        source: str = "<stream>",
        name: str | None = None,
        handles: bool = False,
        identities: bool = True,
    ) -> Snapshot:
        """Read a binary stream to the end (``handles``: as Parser's). Raises InputError on bad content."""
        builder = SnapshotBuilder(label=label, source=source, name=name, handles=handles, identities=identities)
        read = stream.read
        while True:
            try:
                chunk = read(CHUNK_SIZE)
            except OSError as err:
                raise InputError(name or source, f"cannot read: {err.strerror or err}") from None
            if not chunk:
                break
            builder.feed(chunk)
        return builder.finish()

    @classmethod
    def from_rows(
        cls,
        *,
        kind: str,
        label: str,
        source: str,
        rows: dict[RowKey, list[int]] | None = None,
        stack_pages: dict[tuple[str, ...], int] | None = None,
        has_pfn: bool = False,
        warnings: Sequence[str] = (),
        filters: Sequence[str] = (),
        allocs: Allocations | None = None,
    ) -> Snapshot:
        """Derive the per-stack table from counter rows (a dump) or stack pages (show_stacks).

        ``allocs`` rows index ``rows`` in its insertion order.
        """
        stacks: dict[tuple[str, ...], StackStats] = {}
        records: int | None
        if kind == "dump":
            rows = rows or {}
            records = 0
            for key, (n, pages) in rows.items():
                st = stacks.get(key[0])
                if st is None:
                    st = stacks[key[0]] = StackStats(key[0])
                st.pages += pages
                st.records += n  # type: ignore[operator]  # records is None only for show_stacks, not here
                records += n
        else:
            rows = {}
            records = None
            for stack, pages in (stack_pages or {}).items():
                stacks[stack] = StackStats(stack, pages, None)
        for st in stacks.values():
            st.callsite = callsite(st.stack)
            st.module = module_of(st.stack)
            st.cls = allocator_class(st.stack)
        total = sum(st.pages for st in stacks.values())
        snap = cls(kind, label, source, records, total, stacks, rows, list(warnings), has_pfn, tuple(filters))
        snap.allocs = allocs if kind == "dump" else None
        return snap

    # -- views ----------------------------------------------------------------------------------
    @property
    def early_pages(self) -> int:
        """Pages allocated before page_owner started (show_stacks does not count them)."""
        return sum(st.pages for st in self.stacks.values() if st.cls == "early")

    def ranked(self) -> list[StackStats]:
        """Stacks by pages descending (ties: callsite, then frames, for a stable order)."""
        return sorted(self.stacks.values(), key=lambda s: (-s.pages, s.callsite, s.stack))

    def available_keys(self) -> tuple[str, ...]:
        """Group-by keys this input supports (show_stacks has no per-record fields)."""
        return GROUP_KEYS if self.kind == "dump" else STACK_KEYS

    def has_view(self, key: str) -> bool:
        """Whether ``group(key)`` works here: ``age`` (asked for by name only) needs PFN and ts."""
        return self.allocs is not None if key == "age" else key in self.available_keys()

    def group(self, key: str) -> list[Group]:
        """A group-by view, largest first. ``gfp`` counts a record once per flag it carries.

        Raises UsageError for an unknown key or a per-record key on show_stacks input.
        """
        key = _canonical_key(key)
        if key == "age":
            return self._group_by_age()
        if key not in self.available_keys():
            raise UsageError(
                f"--by {key}: show_stacks input has no per-record fields; available: {', '.join(STACK_KEYS)}"
            )
        acc: dict[str, list[int]] = {}

        def add(k: str, n: int | None, pages: int) -> None:
            a = acc.get(k)
            if a is None:
                acc[k] = [n or 0, pages]
            else:
                a[0] += n or 0
                a[1] += pages

        if key in STACK_KEYS:
            for st in self.stacks.values():
                add(_stack_key(st, key), st.records, st.pages)
        else:
            idx = {"pid": 1, "tgid": 2, "comm": 3, "order": 4, "gfp": 5, "migratetype": 6}[key]
            for row, (n, pages) in self.rows.items():
                value = row[idx]
                if key == "gfp":
                    for flag in value or ("(none)",):  # type: ignore[union-attr]  # the gfp field is a tuple of flags
                        add(flag, n, pages)
                else:
                    add("?" if value is None else str(value), n, pages)
        out = [Group(k, pages, n if self.kind == "dump" else None) for k, (n, pages) in acc.items()]
        out.sort(key=lambda g: (-g.pages, g.key))
        return out

    def _group_by_age(self) -> list[Group]:
        """Pages by allocation age (snapshot time minus ts), oldest bucket first."""
        allocs = self._need_allocs("--by age")
        now = now_ns(self)
        # A bucket holds ages below its bound: an allocation's bucket is where now - ts falls among them.
        bounds = [now - limit * NS for limit, _ in AGE_BUCKETS[:-1]]  # ts thresholds, descending
        acc = [[0, 0] for _ in AGE_BUCKETS]
        for po, ts in zip(allocs.pfn_order, allocs.ts, strict=True):
            b = 0
            while b < len(bounds) and ts <= bounds[b]:
                b += 1
            acc[b][0] += 1
            acc[b][1] += 1 << (po & 63)
        out = [Group(name, pages, n) for (_, name), (n, pages) in zip(AGE_BUCKETS, acc, strict=True) if n]
        return out[::-1]

    def _need_allocs(self, what: str) -> Allocations:
        if self.allocs is None:
            why = "show_stacks input" if self.kind != "dump" else "records without a PFN line or ts"
            raise UsageError(f"{what}: {self.source} has no allocation timestamps ({why}); expected a dump of ≥ 5.11")
        return self.allocs

    def older_than(self, seconds: float) -> Snapshot:
        """A new Snapshot with only the allocations at least ``seconds`` old (at the snapshot's time).

        Raises UsageError when the input has no allocation timestamps.
        """
        allocs = self._need_allocs("--older-than")
        cutoff = now_ns(self) - round(seconds * NS)
        keys = list(self.rows)
        rows: dict[RowKey, list[int]] = {}
        kept = Allocations()
        index: dict[int, int] = {}
        for po, ts, r in zip(allocs.pfn_order, allocs.ts, allocs.row, strict=True):
            if ts > cutoff:
                continue
            new = index.get(r)
            if new is None:
                new = index[r] = len(rows)
                rows[keys[r]] = [0, 0]
            c = rows[keys[r]]
            c[0] += 1
            c[1] += 1 << (po & 63)
            kept.pfn_order.append(po)
            kept.ts.append(ts)
            kept.row.append(new)
        snap = Snapshot.from_rows(
            kind="dump",
            label=self.label,
            source=self.source,
            rows=rows,
            has_pfn=self.has_pfn,
            warnings=self.warnings,
            filters=(*self.filters, f"age>={format_duration(seconds)}"),
            allocs=kept,
        )
        snap.clock_ns = now_ns(self)
        snap.ts_cutoff_ns = cutoff if self.ts_cutoff_ns is None else min(cutoff, self.ts_cutoff_ns)
        return snap

    def _allocs_of(self, rows: Mapping[RowKey, list[int]]) -> Allocations | None:
        """The allocations of the kept ``rows`` (a subset of ``self.rows``, in its order), their row
        indices renumbered to ``rows``' order as ``older_than`` does; None when this snapshot has none."""
        if self.allocs is None:
            return None
        new_index = {k: i for i, k in enumerate(rows)}
        renumber = [new_index.get(k, -1) for k in self.rows]
        kept = Allocations()
        for po, ts, r in zip(self.allocs.pfn_order, self.allocs.ts, self.allocs.row, strict=True):
            new = renumber[r]
            if new >= 0:
                kept.pfn_order.append(po)
                kept.ts.append(ts)
                kept.row.append(new)
        return kept

    def fragmentation(self) -> Fragmentation | None:
        """Mixed-pageblock pages, or None when the input has no PFN lines (or is show_stacks)."""
        if self.kind != "dump" or not self.has_pfn:
            return None
        pages = records = 0
        pairs: dict[tuple[str, str], int] = {}
        for row, (n, p) in self.rows.items():
            mt, bmt = row[6], row[7]
            if mt is not None and bmt is not None and mt != bmt:
                pages += p
                records += n
                pairs[(mt, bmt)] = pairs.get((mt, bmt), 0) + p
        ranked = sorted(((a, b, p) for (a, b), p in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))
        return Fragmentation(pages, records, self.total_pages, ranked)

    def filtered(self, exprs: Sequence[str]) -> Snapshot:
        """A new Snapshot with only what matches every ``KEY=VALUE``/``KEY!=VALUE`` filter.

        Raises UsageError for a malformed expression, an unknown key, or a per-record key on show_stacks.
        """
        if not exprs:
            return self
        filters = [parse_filter(e) for e in exprs]
        for f in filters:
            if f.key in RECORD_KEYS and self.kind != "dump":
                raise UsageError(f"--filter {f.expr}: show_stacks input has no per-record fields (pid, comm, …)")
        stack_ok = {s: all(f.match_stack(st) for f in filters) for s, st in self.stacks.items()}
        all_filters = (*self.filters, *exprs)
        if self.kind == "dump":
            rows = {k: list(v) for k, v in self.rows.items() if stack_ok[k[0]] and all(f.match_row(k) for f in filters)}
            snap = Snapshot.from_rows(
                kind="dump",
                label=self.label,
                source=self.source,
                rows=rows,
                has_pfn=self.has_pfn,
                warnings=self.warnings,
                filters=all_filters,
                allocs=self._allocs_of(rows),
            )
            snap.clock_ns = self.clock_ns
            snap.ts_cutoff_ns = self.ts_cutoff_ns
            return snap
        pages = {s: st.pages for s, st in self.stacks.items() if stack_ok[s]}
        return Snapshot.from_rows(
            kind=self.kind,
            label=self.label,
            source=self.source,
            stack_pages=pages,
            warnings=self.warnings,
            filters=all_filters,
        )


def _canonical_key(key: str) -> str:
    k = key.strip().lower()
    k = {"allocator": "class", "mt": "migratetype", "flags": "gfp", "name": "comm", "mod": "module"}.get(k, k)
    if k not in (*GROUP_KEYS, "age"):
        raise UsageError(f"--by {key!r}: unknown view; expected one of {', '.join((*GROUP_KEYS, 'age'))}")
    return k


# Age buckets of ``--by age``: (upper bound in seconds, name).
AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (1, "<1s"),
    (10, "1s-10s"),
    (60, "10s-1m"),
    (600, "1m-10m"),
    (3600, "10m-1h"),
    (float("inf"), ">=1h"),
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str = "--older-than") -> float:
    """``'90'``, ``'90s'``, ``'1.5m'``, ``'2h'``, ``'500ms'`` → seconds. Raises UsageError naming ``option``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h|d)?\s*", text)
    if m is None:
        raise UsageError(f"{option} {text!r}: expected a duration such as 30s, 5m, 2h or 500ms")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """Seconds as the shortest of ``'500ms'``, ``'30s'``, ``'5m'``, ``'2h'``."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _stack_key(st: StackStats, key: str) -> str:
    if key == "callsite":
        return st.callsite
    if key == "module":
        return st.module or BUILTIN_MODULE
    return st.cls


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``--filter`` expression: ``KEY=V1,V2`` (any of) or ``KEY!=V`` (none of)."""

    expr: str
    key: str
    values: tuple[str, ...]
    negate: bool

    def _hit(self, value: object) -> bool:
        if self.key == "callsite":
            hit = any(v in str(value) for v in self.values)
        elif self.key == "gfp":
            hit = any(v in value for v in self.values)  # type: ignore[operator]  # gfp: a tuple of flags
        else:
            hit = ("?" if value is None else str(value)) in self.values
        return hit != self.negate

    def match_stack(self, st: StackStats) -> bool:
        if self.key == "callsite":
            return self._hit(st.callsite)
        if self.key == "module":
            return self._hit(st.module or BUILTIN_MODULE)
        if self.key == "class":
            return self._hit(st.cls)
        return True

    def match_row(self, row: RowKey) -> bool:
        idx = {"pid": 1, "tgid": 2, "comm": 3, "order": 4, "gfp": 5, "migratetype": 6}.get(self.key)
        return True if idx is None else self._hit(row[idx])


_FILTER_ALIASES = {
    "name": "comm",
    "flag": "gfp",
    "flags": "gfp",
    "mod": "module",
    "allocator": "class",
    "mt": "migratetype",
}


def parse_filter(expr: str) -> Filter:
    """Parse ``KEY=VALUE[,VALUE…]`` or ``KEY!=VALUE``. Raises UsageError naming the expression."""
    negate = "!=" in expr
    key, sep, value = expr.partition("!=" if negate else "=")
    key = key.strip().lower()
    key = _FILTER_ALIASES.get(key, key)
    if not sep or not value:
        raise UsageError(f"--filter {expr!r}: expected KEY=VALUE, e.g. comm=bash, pid=42, gfp=__GFP_COMP")
    if key not in FILTER_KEYS:
        raise UsageError(f"--filter {expr!r}: unknown key {key!r}; expected one of {', '.join(FILTER_KEYS)}")
    values = tuple(v for v in value.split(",") if v) if key not in ("comm", "callsite") else (value,)
    if key in ("pid", "tgid", "order") and not all(v.isdigit() for v in values):
        raise UsageError(f"--filter {expr!r}: {key} takes numbers")
    return Filter(expr, key, values, negate)


class SnapshotBuilder:
    """Feed bytes as they arrive (``feed``), then ``finish()`` → Snapshot. Raises InputError on bad input."""

    def __init__(
        self,
        *,
        label: str = "snapshot",
        source: str = "<stream>",
        name: str | None = None,
        kind: str | None = None,
        handles: bool = False,
        identities: bool = True,
    ) -> None:
        self.label = label
        self.source = source
        self._rows: dict[RowKey, list[int]] = {}  # [records, pages, row index]
        self._stack_pages: dict[tuple[str, ...], int] = {}
        self._has_pfn = False
        # Identities cost three array appends per record; a record without PFN or ts turns them off.
        self._allocs: Allocations | None = Allocations() if identities else None
        self._bytes = 0
        self._t0 = time.perf_counter()
        self._parser = Parser(self._add, name=name or source, kind=kind, handles=handles)

    def _add(self, item: Record | StackCount) -> None:
        if type(item) is Record:
            key = (
                item.stack,
                item.pid,
                item.tgid,
                item.comm,
                item.order,
                item.gfp_flags,
                item.migratetype,
                item.block_migratetype,
            )
            c = self._rows.get(key)
            if c is None:
                c = self._rows[key] = [1, 1 << item.order, len(self._rows)]
            else:
                c[0] += 1
                c[1] += 1 << item.order
            pfn = item.pfn
            if pfn is not None:
                self._has_pfn = True
            allocs = self._allocs
            if allocs is not None:
                if pfn is None or item.ts_ns is None:
                    self._allocs = None
                else:
                    allocs.pfn_order.append(pfn << 6 | item.order)
                    allocs.ts.append(item.ts_ns)
                    allocs.row.append(c[2])
        else:
            sp = self._stack_pages
            sp[item.stack] = sp.get(item.stack, 0) + item.pages

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (any chunk boundary). Raises InputError on bad input."""
        self._bytes += len(data)
        self._parser.feed(data)

    def finish(self) -> Snapshot:
        """End of input: the Snapshot. Raises InputError on empty input or a bad last entry."""
        summary = self._parser.close()
        snap = Snapshot.from_rows(
            kind=summary.kind or "dump",
            label=self.label,
            source=self.source,
            rows={k: v[:2] for k, v in self._rows.items()},
            stack_pages=self._stack_pages,
            has_pfn=self._has_pfn,
            warnings=summary.warnings,
            allocs=self._allocs if self._rows else None,
        )
        snap.seconds = time.perf_counter() - self._t0
        snap.bytes_read = self._bytes
        return snap


def default_label(path: str | os.PathLike[str]) -> str:
    """``/x/03-after.page_owner.zst`` → ``03-after``: the file name without dump/compression suffixes."""
    if str(path) == "-":
        return "stdin"
    name = Path(path).name
    for suffix in (".gz", ".xz", ".zst", ".bz2", ".txt", ".page_owner", ".show_stacks", ".dump"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def load_snapshot(
    path: str | os.PathLike[str],
    label: str | None = None,
    stacks: Mapping[int, bytes] | None = None,
    *,
    identities: bool = True,
) -> Snapshot:
    """Load a dump or show_stacks file (path, ``-``, gz/xz/zst/bz2). Raises InputError on bad input.

    ``stacks`` (pageowner/handles.py ``load_stacks``) resolves a handle-mode dump or show_handles file.
    ``identities=False`` skips the per-allocation columns (no cohorts, ages or verdicts beyond ``growth``).
    """
    name = display_name(path)
    with open_input(path, stacks=stacks) as stream:
        return Snapshot.from_stream(
            stream,
            label=label or default_label(path),
            source=name,
            name=name,
            handles=stacks is not None,
            identities=identities,
        )


def parse_views(keys: Sequence[str]) -> list[str]:
    """``--by`` values (repeatable, comma lists, ``all``) as canonical keys. Raises UsageError if unknown."""
    out: list[str] = []
    for raw in keys:
        for k in raw.split(","):
            if not k.strip():
                continue
            for key in GROUP_KEYS if k.strip().lower() == "all" else (_canonical_key(k),):
                if key not in out:
                    out.append(key)
    return out
