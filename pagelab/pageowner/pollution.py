"""Fragmentation culprits and the pageblock map: which stacks put pages into pageblocks of another migratetype.

The page allocator groups pages by mobility in pageblocks; when a free list of one migratetype runs dry it
steals from a block of another (mm/page_alloc.c, ``steal_suitable_fallback``), and an unmovable page left
in a movable block keeps that block from ever becoming a free huge page: the classic reason THP
allocations and compaction fail. page_owner prints, per record, the page's migratetype and its block's
(``PFN … type Unmovable Block N type Movable``; mm/page_owner.c, ``print_page_owner``), so a dump says
exactly which stack placed which page where.

A *polluting* page is one whose type and block type straddle the movable line: Unmovable or Reclaimable
in a Movable block, or Movable in an Unmovable or Reclaimable block. Unmovable/Reclaimable mixing leaves
a block as unfit for a huge page as it was, and HighAtomic/CMA/Isolate are reserves, so neither counts.

This module needs the PFN of every record, which the aggregated ``Snapshot`` (pageowner/analyse.py) does
not keep; it streams the dump once more through the parser (pageowner/parse.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from rich.text import Text

from pagelab.errors import PagelabError
from pagelab.pageowner.analyse import BUILTIN_MODULE, Snapshot, callsite, module_of
from pagelab.pageowner.inputs import open_input
from pagelab.pageowner.parse import Record, iter_records
from pagelab.ui import UI

__all__ = [
    "PAGEBLOCK_ORDER",
    "Block",
    "BlockMap",
    "Culprit",
    "blocks_for",
    "is_polluting",
    "render_pollution",
    "row_key",
    "scan",
    "split_views",
]

# include/linux/pageblock-flags.h: with CONFIG_HUGETLB_PAGE, pageblock_order = HUGETLB_PAGE_ORDER, 9 on x86-64
# (512 pages, one PMD-mapped huge page); without it (our tinyconfig-based guest kernels), MAX_PAGE_ORDER = 10.
# So the order is read from the dump itself: its PFN lines print ``PFN P … Block N`` with N = P >> order
# (detect_pageblock_order); 9 is the fallback when no line decides it.
PAGEBLOCK_ORDER = 9
_PFN_BLOCK = re.compile(rb"^PFN (0x[0-9a-f]+|\d+) type \S+ Block (\d+) ", re.M)
_DETECT_BYTES = 8 << 20

MOVABLE = "Movable"
NON_MOVABLE = frozenset({"Unmovable", "Reclaimable"})


def is_polluting(page_type: str | None, block_type: str | None) -> bool:
    """A page on the other side of the movable line from its pageblock (see the module docstring)."""
    if page_type is None or block_type is None:
        return False
    return (page_type in NON_MOVABLE and block_type == MOVABLE) or (page_type == MOVABLE and block_type in NON_MOVABLE)


@dataclass(slots=True)
class Block:
    """One pageblock: its migratetype (as the records in it print it) and the allocated pages in it."""

    index: int
    migratetype: str | None = None
    pages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)  # allocated pages by their own migratetype
    owners: dict[str, int] = field(default_factory=dict)  # allocated pages by callsite (module appended)
    foreign: int = 0  # polluting pages (is_polluting against this block's type)

    @property
    def mixed(self) -> bool:
        """Holds a page of another migratetype across the movable line."""
        return self.foreign > 0

    def top_owners(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.owners.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@dataclass(slots=True)
class Culprit:
    """A stack that placed polluting pages: how many, in how many pageblocks, in which directions."""

    stack: tuple[str, ...]
    pages: int = 0
    records: int = 0
    blocks: set[int] = field(default_factory=set)
    directions: dict[str, int] = field(default_factory=dict)  # "Unmovable in Movable" → pages

    @property
    def callsite(self) -> str:
        return callsite(self.stack)

    @property
    def module(self) -> str | None:
        return module_of(self.stack)


def _owner_name(stack: tuple[str, ...]) -> str:
    mod = module_of(stack)
    return f"{callsite(stack)} [{mod}]" if mod else callsite(stack)


@dataclass
class BlockMap:
    """Every pageblock that holds an allocated page of a dump, and the stacks that polluted them."""

    blocks: dict[int, Block] = field(default_factory=dict)
    culprits: dict[tuple[str, ...], Culprit] = field(default_factory=dict)
    records: int = 0
    records_without_pfn: int = 0
    order: int = PAGEBLOCK_ORDER
    _owner_names: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_records(cls, records: Iterable[Record], order: int = PAGEBLOCK_ORDER) -> BlockMap:
        """Build the map from parsed records (any order) for pageblocks of ``2**order`` pages."""
        bm = cls(order=order)
        for r in records:
            bm.add(r)
        return bm

    def add(self, r: Record) -> None:
        """Account one record's pages to the pageblocks they lie in."""
        self.records += 1
        if r.pfn is None:
            self.records_without_pfn += 1
            return
        name = self._owner_names.get(r.stack)
        if name is None:
            name = self._owner_names[r.stack] = _owner_name(r.stack)
        bad = is_polluting(r.migratetype, r.block_migratetype)
        culprit = None
        if bad:
            culprit = self.culprits.get(r.stack)
            if culprit is None:
                culprit = self.culprits[r.stack] = Culprit(r.stack)
            culprit.records += 1
        # An allocation above pageblock_order covers several whole blocks; the record names only its head's
        # block type, which the allocator gave the whole range (mm/page_alloc.c, set_pageblock_migratetype).
        pfn, left = r.pfn, 1 << r.order
        while left > 0:
            idx = pfn >> self.order
            n = min(left, ((idx + 1) << self.order) - pfn)
            block = self.blocks.get(idx)
            if block is None:
                block = self.blocks[idx] = Block(idx)
            if block.migratetype is None:
                block.migratetype = r.block_migratetype
            block.pages += n
            mt = r.migratetype or "?"
            block.by_type[mt] = block.by_type.get(mt, 0) + n
            block.owners[name] = block.owners.get(name, 0) + n
            if culprit is not None:
                block.foreign += n
                culprit.pages += n
                culprit.blocks.add(idx)
                key = f"{r.migratetype} in {r.block_migratetype}"
                culprit.directions[key] = culprit.directions.get(key, 0) + n
            pfn += n
            left -= n

    # -- views ----------------------------------------------------------------------------------
    @property
    def has_pfn(self) -> bool:
        return bool(self.blocks)

    @property
    def mixed_blocks(self) -> int:
        return sum(1 for b in self.blocks.values() if b.mixed)

    @property
    def polluting_pages(self) -> int:
        return sum(c.pages for c in self.culprits.values())

    def ranked(self) -> list[Culprit]:
        """Culprits by polluting pages, then blocks tainted, descending (ties: callsite, frames)."""
        return sorted(self.culprits.values(), key=lambda c: (-c.pages, -len(c.blocks), c.callsite, c.stack))

    def span(self) -> tuple[int, int]:
        """First and last pageblock index holding an allocated page. Raises ValueError when empty."""
        if not self.blocks:
            raise ValueError("no pageblock holds an allocated page (no PFN lines)")
        return min(self.blocks), max(self.blocks)

    def to_json(self, top: int | None = 50) -> dict[str, Any] | None:
        """report.json ``pollution``: totals and the ranked culprits; None without PFN lines."""
        if not self.has_pfn:
            return None
        ranked = self.ranked()
        listed = ranked[:top] if top is not None else ranked
        return {
            "pageblock_order": self.order,
            "blocks": len(self.blocks),
            "mixed_blocks": self.mixed_blocks,
            "pages": self.polluting_pages,
            "culprits_total": len(ranked),
            "culprits": [
                {
                    "rank": i,
                    "pages": c.pages,
                    "records": c.records,
                    "blocks": len(c.blocks),
                    "directions": dict(sorted(c.directions.items(), key=lambda kv: (-kv[1], kv[0]))),
                    "callsite": c.callsite,
                    "module": c.module,
                    "frames": list(c.stack),
                }
                for i, c in enumerate(listed, 1)
            ],
        }


def scan(
    source: str | os.PathLike[str] | BinaryIO,
    name: str | None = None,
    keep: Callable[[Record], bool] | None = None,
    stacks: Mapping[int, bytes] | None = None,
) -> BlockMap:
    """The pageblock map of a dump (path, or a binary stream; compressed too), of the records ``keep`` accepts.

    ``stacks`` resolves a handle-mode dump (pageowner/handles.py), as for report --stacks.
    Raises InputError for an unreadable or malformed input, or a show_stacks file (it has no PFNs).
    """
    order = detect_pageblock_order(source) if isinstance(source, str | os.PathLike) else None
    records = iter_records(source, name, stacks=stacks)
    return BlockMap.from_records(records if keep is None else filter(keep, records), order or PAGEBLOCK_ORDER)


def pageblock_order_of(text: bytes) -> int | None:
    """The pageblock order that every ``PFN P … Block N`` line in ``text`` agrees on (N = P >> order), or None
    when no line decides it (only block 0, no PFN lines) or the lines disagree."""
    candidates: set[int] | None = None
    for m in _PFN_BLOCK.finditer(text):
        pfn, block = int(m.group(1), 0), int(m.group(2))
        if block == 0:
            continue  # block 0 fits every order above log2(pfn): it decides nothing
        fits = {k for k in range(21) if pfn >> k == block}
        candidates = fits if candidates is None else candidates & fits
    return min(candidates) if candidates else None


def detect_pageblock_order(path: str | os.PathLike[str]) -> int | None:
    """``pageblock_order_of`` the first few MiB of a dump file (compressed too); None if undecided or unreadable."""
    try:
        with open_input(path) as f:
            return pageblock_order_of(f.read(_DETECT_BYTES))
    except (OSError, PagelabError):
        return None


def row_key(r: Record) -> tuple[object, ...]:
    """The record's row in an aggregated dump Snapshot (analyse.RowKey): ``key in snap.rows`` tells whether a
    ``--filter``ed snapshot kept it."""
    return (r.stack, r.pid, r.tgid, r.comm, r.order, r.gfp_flags, r.migratetype, r.block_migratetype)


def render_pollution(ui: UI, bm: BlockMap, *, top: int = 10) -> None:
    """The ``--by pollution`` table: stacks ranked by pages placed across the movable line, blocks tainted."""
    from pagelab.pageowner.render import table  # render imports analyse; keep this module light to import

    if not bm.has_pfn:
        ui.print(Text("pollution: the input has no PFN lines (pre-stripped or show_stacks); nothing to rank"))
        return
    n = len(bm.culprits)
    t = table(ui, f"Fragmentation culprits: top {min(top, n)} of {n} stacks by pages in pageblocks of another type")
    for col, just in (("#", "right"), ("pages", "right"), ("blocks", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]  # rich wants a JustifyMethod literal; the tuple widens it to str
    t.add_column("direction")
    t.add_column("callsite")
    t.add_column("module")
    for i, c in enumerate(bm.ranked()[:top], 1):
        direction = max(c.directions.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if len(c.directions) > 1:
            direction += f" (+{len(c.directions) - 1})"
        t.add_row(str(i), f"{c.pages:,}", f"{len(c.blocks):,}", direction, c.callsite, c.module or BUILTIN_MODULE)
    ui.print(t)
    ui.print(
        Text(
            f"pollution: {bm.polluting_pages:,} pages in {bm.mixed_blocks:,} of {len(bm.blocks):,} pageblocks "
            f"(order {bm.order}) with an allocated page sit across the movable line"
        )
    )


def split_views(by: Iterable[str]) -> tuple[bool, list[str]]:
    """Take ``pollution`` out of ``--by`` values (comma lists too): (asked for, the other views)."""
    asked, rest = False, []
    for raw in by:
        keys = [k for k in raw.split(",") if k.strip()]
        asked = asked or any(k.strip().lower() == "pollution" for k in keys)
        others = [k for k in keys if k.strip().lower() != "pollution"]
        if others:
            rest.append(",".join(others))
    return asked, rest


def blocks_for(snap: Snapshot, path: str, ui: UI, stacks: Mapping[int, bytes] | None = None) -> BlockMap | None:
    """The pageblock map of the dump ``snap`` was read from (re-read from ``path``, honouring its filters:
    its rows, and with ``--older-than`` only the records allocated by its cutoff, since a row that kept one
    old allocation would let its young ones through), or None for show_stacks input or stdin. Raises
    InputError if the file changed into something unreadable.
    """
    if snap.kind != "dump" or path == "-":
        return None
    cutoff = snap.ts_cutoff_ns

    def kept(r: Record) -> bool:
        if cutoff is not None and (r.ts_ns is None or r.ts_ns > cutoff):
            return False
        return row_key(r) in snap.rows

    keep = kept if snap.filters or cutoff is not None else None
    with ui.progress(f"mapping pageblocks of {path}"):
        return scan(path, snap.source, keep, stacks)
