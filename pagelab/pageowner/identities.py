"""Allocation identities: which pages of a stack outlived which snapshot, and how old they are.

A page_owner record is one allocation: its PFN, its order and its allocation timestamp (``ts``, the
kernel's ``local_clock()`` in ns, mm/page_owner.c) identify it. The same (PFN, order, ts) in two dumps of
one boot is the same allocation, still alive; a PFN with a new ts was freed and reused. (Handle-mode
dumps also print the stack depot handle; a handle names the stack, and identities are only matched
within one stack, so the stack stands for it.)

Memory stays bounded by the dump, not by Python objects per record: a dump's allocations are three
parallel ``array`` columns (``Allocations``); tracking a run adds a stack number and a birth snapshot per
allocation (6 bytes) for the snapshot being matched and the one before it, and, for the allocations
whose (PFN, order) changed (migrated, compacted or split), a 4-byte index each while they are matched
by ts. Cohorts are counted per stack (``analyse.identity``) and birth snapshot: ``cohorts[i][j]`` is how
many pages first seen in snapshot ``i`` are still alive in snapshot ``j``.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagelab.pageowner.analyse import Snapshot

ORDER_BITS = 6  # pfn_order packs the order (0..20) below the PFN
ORDER_MASK = (1 << ORDER_BITS) - 1
NS = 1_000_000_000
# Two snapshots of one boot share most of their allocations (boot-time pages never go away); dumps that
# share almost none come from different boots, where a matching (PFN, ts) would be a coincidence.
SAME_BOOT_MIN_SHARED = 0.01


@dataclass
class Allocations:
    """Every record of one dump as parallel columns: ``pfn << 6 | order``, ``ts`` (ns) and its row index.

    The row index points into the Snapshot's ``rows`` (in insertion order), which holds the stack and the
    per-record fields, so a subset of allocations can be turned back into rows.
    """

    pfn_order: array = field(default_factory=lambda: array("q"))
    ts: array = field(default_factory=lambda: array("q"))
    row: array = field(default_factory=lambda: array("I"))

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def newest_ts(self) -> int:
        """The latest allocation time in the dump (0 when empty): the best 'now' a bare dump offers."""
        return max(self.ts) if self.ts else 0

    def pages(self) -> int:
        return sum(1 << (po & ORDER_MASK) for po in self.pfn_order)


@dataclass
class History:
    """One stack over a run: pages per birth snapshot alive at each snapshot, and page ages."""

    cohorts: list[list[int]]  # [born][seen]: pages first seen in snapshot `born` alive in snapshot `seen`
    median_age_s: list[float | None]  # per snapshot, over the stack's allocations (None: no pages)
    oldest_age_s: list[float | None]

    def born(self, i: int) -> int:
        """Pages of cohort ``i`` when first seen."""
        return self.cohorts[i][i]

    def alive(self, i: int, j: int = -1) -> int:
        """Pages of cohort ``i`` alive in snapshot ``j`` (default: the last)."""
        return self.cohorts[i][j]

    @property
    def survivors(self) -> int:
        """Pages of the first snapshot still alive in the last."""
        return self.cohorts[0][-1]

    @property
    def freed(self) -> int:
        """Pages seen in an earlier snapshot that are gone by the last one."""
        return sum(self.born(i) - self.alive(i) for i in range(len(self.cohorts) - 1))

    @property
    def turnover(self) -> float | None:
        """Freed pages as a share of the pages seen before the last snapshot (None: none were seen)."""
        seen = sum(self.born(i) for i in range(len(self.cohorts) - 1))
        return round(self.freed / seen, 3) if seen else None


@dataclass
class Tracking:
    """Identities followed across snapshots: a History per stack identity, or why that was impossible."""

    histories: dict[tuple[str, ...], History]
    unavailable: str | None = None  # why identities could not be followed (None: they were)

    @property
    def available(self) -> bool:
        return self.unavailable is None


def now_ns(snap: Snapshot) -> int:
    """The snapshot's time on the ts clock: the guest clock recorded at the snapshot, else its newest ts."""
    if snap.clock_ns is not None:
        return snap.clock_ns
    return snap.allocs.newest_ts if snap.allocs is not None else 0


def why_unavailable(snapshots: Sequence[Snapshot]) -> str | None:
    """Why identities cannot be followed across these snapshots (None: they can)."""
    for s in snapshots:
        if s.kind != "dump":
            return f"{s.label}: a show_stacks file has no allocations, only counts per stack"
        if s.allocs is None:
            return f"{s.label}: records without a PFN line or ts (stripped input or a kernel before 5.11)"
    return None


def track(snapshots: Sequence[Snapshot], keys: Iterable[tuple[str, ...]] | None = None) -> Tracking:
    """Follow every allocation of ``snapshots`` (a run: baseline first) and count cohorts per stack.

    ``keys`` limits the Histories returned (and the age figures computed) to those stack identities;
    every stack is matched either way. Identities are unavailable (``Tracking.unavailable`` says why)
    for show_stacks input, dumps without PFN or ts, and dumps of different boots.
    """
    from pagelab.pageowner.analyse import identity

    why = why_unavailable(snapshots)
    if why is not None:
        return Tracking({}, why)
    n = len(snapshots)
    sid_of: dict[tuple[str, ...], int] = {}
    wanted = None if keys is None else set(keys)
    counts: dict[int, list[list[int]]] = {}
    medians: dict[int, list[float | None]] = {}
    oldest: dict[int, list[float | None]] = {}
    prev: _Columns | None = None
    for j, snap in enumerate(snapshots):
        allocs = snap.allocs
        assert allocs is not None  # why_unavailable checked
        row_sid = []
        for row in snap.rows:
            key = identity(row[0])
            sid = sid_of.get(key)
            if sid is None:
                sid = sid_of[key] = len(sid_of)
            row_sid.append(sid)
        cur = _columns(allocs, row_sid)
        shared = _match(prev, cur, j)
        if prev is not None and prev.po and cur.po and shared < SAME_BOOT_MIN_SHARED * len(prev.po):
            return Tracking(
                {},
                f"{snapshots[j - 1].label} and {snap.label} share {shared} of {len(prev.po):,} allocations: "
                "dumps of different boots?",
            )
        _count(cur, counts, n, j)
        sids = None if wanted is None else {sid_of[k] for k in wanted if k in sid_of}
        _ages(cur, now_ns(snap), medians, oldest, n, j, sids)
        prev = cur
    names = {sid: key for key, sid in sid_of.items()}
    histories = {}
    for sid, table in counts.items():
        key = names[sid]
        if wanted is not None and key not in wanted:
            continue
        histories[key] = History(table, medians.get(sid, [None] * n), oldest.get(sid, [None] * n))
    return Tracking(histories)


@dataclass
class _Columns:
    """One snapshot's allocations in (PFN, stack) order: ``pfn << 6 | order``, ts, stack number, cohort."""

    po: Sequence[int]
    ts: Sequence[int]
    sid: Sequence[int]
    cohort: array


def _columns(allocs: Allocations, row_sid: list[int]) -> _Columns:
    """The allocations in (PFN, stack) order. A dump is in PFN order already (the kernel walks PFNs, and
    the collector merges its ranges in order), so only odd input (PFNs out of order or repeated) is sorted."""
    po, ts = allocs.pfn_order, allocs.ts
    sid: Sequence[int] = array("I", [row_sid[r] for r in allocs.row])
    if not all(map(operator.lt, po, islice(po, 1, None))):
        order = sorted(range(len(po)), key=lambda i: (po[i], sid[i]))
        po = array("q", [po[i] for i in order])
        ts = array("q", [ts[i] for i in order])
        sid = array("I", [sid[i] for i in order])
    return _Columns(po, ts, sid, array("H", bytes(2 * len(po))))


def _match(prev: _Columns | None, cur: _Columns, j: int) -> int:
    """Give each allocation of snapshot ``j`` its birth snapshot: the previous one's when the same
    allocation was there, else ``j``. Returns how many allocations matched.

    First the same (PFN, order, stack, ts): a merge of two (PFN, stack)-ordered columns. Then
    ``_match_moved`` for what is left, by (stack, ts): page migration and compaction move an allocation
    to another PFN and keep its ts and handle, and splitting a high-order allocation keeps the ts and
    changes the order (mm/page_owner.c, ``__folio_copy_owner`` and ``__split_page_owner``)."""
    cohort = cur.cohort
    if prev is None:
        return 0
    ppo, pts, psid, pc = prev.po, prev.ts, prev.sid, prev.cohort
    po, ts, sid = cur.po, cur.ts, cur.sid
    used = bytearray(len(ppo))  # previous allocations matched already
    found = bytearray(len(po))
    i, np_, shared = 0, len(ppo), 0
    for x, k in enumerate(po):
        while i < np_ and (ppo[i] < k or (ppo[i] == k and psid[i] < sid[x])):
            i += 1
        if i < np_ and ppo[i] == k and psid[i] == sid[x] and pts[i] == ts[x]:
            cohort[x] = pc[i]
            used[i] = found[x] = 1
            shared += 1
        else:
            cohort[x] = j
    if shared < np_ and shared < len(po):
        shared += _match_moved(prev, cur, used, found)
    return shared


def _match_moved(prev: _Columns, cur: _Columns, used: bytearray, found: bytearray) -> int:
    """Match the allocations ``_match`` left over (``found`` 0) to the previous ones it left (``used`` 0)
    of the same stack by ts: a piece of a split (a lower order, its PFN inside the previous allocation's
    range) inherits that allocation's cohort, as many pieces as there are; a moved allocation (same
    order, another PFN) takes one previous allocation's. Returns how many matched.

    Memory stays bounded by what moved, not by the dump: an allocation born since the previous snapshot
    (most leftovers) has a ts later than all of the previous snapshot's and is skipped by one comparison,
    and of the previous leftovers (the freed ones) only those sharing a ts with a candidate are sorted,
    as index arrays."""
    ppo, pts, psid = prev.po, prev.ts, prev.sid
    po, ts, sid = cur.po, cur.ts, cur.sid
    if not pts:
        return 0
    newest = max(pts)
    want = array("I", (x for x in range(len(po)) if not found[x] and ts[x] <= newest))
    if not want:
        return 0
    stamps = {ts[x] for x in want}
    left = array("I", (i for i in range(len(ppo)) if not used[i] and pts[i] in stamps))
    left = array("I", sorted(left, key=lambda i: (psid[i], pts[i])))
    want = array("I", sorted(want, key=lambda x: (sid[x], ts[x])))
    i, n, shared = 0, len(left), 0
    for x in want:
        s, t = sid[x], ts[x]
        while i < n and (psid[left[i]] < s or (psid[left[i]] == s and pts[left[i]] < t)):
            i += 1
        pfn, order = po[x] >> ORDER_BITS, po[x] & ORDER_MASK
        best = -1
        k = i
        while k < n and psid[left[k]] == s and pts[left[k]] == t:
            p = left[k]
            start, porder = ppo[p] >> ORDER_BITS, ppo[p] & ORDER_MASK
            if order < porder and start <= pfn < start + (1 << porder):
                best = p  # a piece of a split: the allocation stays available for its other pieces
                break
            if best < 0 and porder == order and not used[p]:
                best = p
            k += 1
        if best >= 0:
            cur.cohort[x] = prev.cohort[best]
            if ppo[best] & ORDER_MASK == order:
                used[best] = 1  # moved: one allocation, one match
            shared += 1
    return shared


def _count(cur: _Columns, counts: dict[int, list[list[int]]], n: int, j: int) -> None:
    """Add snapshot ``j``'s pages per (stack, birth snapshot) to ``counts``."""
    acc: dict[tuple[int, int], int] = {}
    get = acc.get
    for s, c, po in zip(cur.sid, cur.cohort, cur.po, strict=True):
        key = (s, c)
        acc[key] = get(key, 0) + (1 << (po & ORDER_MASK))
    for (sid, c), pages in acc.items():
        table = counts.get(sid)
        if table is None:
            table = counts[sid] = [[0] * n for _ in range(n)]
        table[c][j] = pages


def _ages(
    cur: _Columns,
    now: int,
    medians: dict[int, list[float | None]],
    oldest: dict[int, list[float | None]],
    n: int,
    j: int,
    sids: set[int] | None,
) -> None:
    """Median and oldest allocation age (s) per stack (those of ``sids``, or all) in snapshot ``j``."""
    stamps: dict[int, list[int]] = {}
    if sids is None:
        for s, t in zip(cur.sid, cur.ts, strict=True):
            stamps.setdefault(s, []).append(t)
    elif sids:
        for s, t in zip(cur.sid, cur.ts, strict=True):
            if s in sids:
                stamps.setdefault(s, []).append(t)
    for sid, ts in stamps.items():
        ts.sort()
        medians.setdefault(sid, [None] * n)[j] = _age_s(now, ts[(len(ts) - 1) // 2])
        oldest.setdefault(sid, [None] * n)[j] = _age_s(now, ts[0])


def _age_s(now: int, ts: int) -> float:
    # An allocation made while the snapshot was being read is younger than the snapshot's clock: age 0.
    return round(max(now - ts, 0) / NS, 3)
