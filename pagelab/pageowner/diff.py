"""Growth across snapshots: the per-stack diff of two, and leak suspects over N (first is the baseline).

Stacks are matched by ``analyse.identity``: the frames from the callsite down, exactly as printed. Dumps
and show_stacks of one kernel print the same stack depot entries (po612/ss612: identical frame lists),
and dropping the allocator-internal prefix also merges the slab fast and slow paths of one callsite.
show_stacks does not count early-boot pages, so when the kinds are mixed the ``early`` stacks of the
dumps are left out of every total and stack (``Diff.excluded_early``).

Between dumps, allocations are followed too (identities.py): every suspect gets a verdict (verdicts.py:
leak, cache, growth, transient), its cohorts and page ages, and a diff's changes their survivors.

Status of ``to_json``: ``crash`` if crashes were given, else ``leak`` if any suspect with a failing
verdict (``leak``, or ``growth`` without identities) grew by more than ``threshold`` pages (default 0),
the same rule as ``--fail-on-growth``'s exit 1 (``over_threshold``), else ``ok``; ``error`` only when
the caller says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pagelab.pageowner import identities, verdicts
from pagelab.pageowner.analyse import Snapshot, StackStats, identity
from pagelab.pageowner.identities import History

__all__ = ["Change", "Diff", "Suspect", "diff", "suspects", "to_json"]


@dataclass(slots=True)
class _Merged:
    """One identity's pages in one snapshot and the frames that represent it (the largest member)."""

    pages: int
    stats: StackStats


def _by_identity(snap: Snapshot, drop_early: bool) -> dict[tuple[str, ...], _Merged]:
    out: dict[tuple[str, ...], _Merged] = {}
    for st in snap.stacks.values():
        if drop_early and st.cls == "early":
            continue
        key = identity(st.stack)
        m = out.get(key)
        if m is None:
            out[key] = _Merged(st.pages, st)
        else:
            m.pages += st.pages
            if st.pages > m.stats.pages:
                m.stats = st
    return out


def _mixed(snapshots: Sequence[Snapshot]) -> bool:
    return len({s.kind for s in snapshots}) > 1


@dataclass(slots=True)
class Change:
    """One stack's pages before and after; ``status`` is new, vanished, grown, shrunk or same."""

    frames: tuple[str, ...]
    callsite: str
    module: str | None
    cls: str
    before: int
    after: int
    survivors: int | None = None  # pages of `before` still alive in `after` (None: no identities)

    @property
    def born(self) -> int | None:
        """Pages allocated since ``before`` (None without identities)."""
        return None if self.survivors is None else self.after - self.survivors

    @property
    def freed(self) -> int | None:
        """Pages of ``before`` freed by ``after`` (None without identities)."""
        return None if self.survivors is None else self.before - self.survivors

    @property
    def delta(self) -> int:
        return self.after - self.before

    @property
    def status(self) -> str:
        if self.before == 0 and self.after > 0:
            return "new"
        if self.after == 0 and self.before > 0:
            return "vanished"
        return "grown" if self.delta > 0 else "shrunk" if self.delta < 0 else "same"


@dataclass(slots=True)
class Diff:
    """Two snapshots compared: every stack's change, ranked by growth (largest first, shrinkers last)."""

    before: Snapshot
    after: Snapshot
    changes: list[Change]
    total_before: int
    total_after: int
    excluded_early: int  # dump pages left out because the other side is show_stacks
    tracked: identities.Tracking | None = None  # the allocations followed from before to after

    @property
    def grown(self) -> list[Change]:
        return [c for c in self.changes if c.delta > 0]

    @property
    def shrunk(self) -> list[Change]:
        return sorted((c for c in self.changes if c.delta < 0), key=lambda c: (c.delta, c.callsite, c.frames))


def diff(before: Snapshot, after: Snapshot) -> Diff:
    """Per-stack change in pages from ``before`` to ``after`` (dumps or show_stacks, any mix)."""
    drop = _mixed((before, after))
    b = _by_identity(before, drop)
    a = _by_identity(after, drop)
    tracked = identities.track([before, after])
    changes = []
    for key in b.keys() | a.keys():
        mb, ma = b.get(key), a.get(key)
        rep = (ma or mb).stats  # type: ignore[union-attr]  # key comes from either map, so one is set
        c = Change(rep.stack, rep.callsite, rep.module, rep.cls, mb.pages if mb else 0, ma.pages if ma else 0)
        if tracked.available:
            h = tracked.histories.get(key)
            c.survivors = h.survivors if h is not None else 0
        changes.append(c)
    changes.sort(key=lambda c: (-c.delta, c.callsite, c.frames))
    excluded = (before.early_pages if before.kind == "dump" else 0) + (after.early_pages if after.kind == "dump" else 0)
    return Diff(
        before,
        after,
        changes,
        sum(m.pages for m in b.values()),
        sum(m.pages for m in a.values()),
        excluded if drop else 0,
        tracked,
    )


@dataclass(slots=True)
class Suspect:
    """A stack that grew from the baseline to the last snapshot."""

    rank: int
    growth_pages: int
    per_snapshot: list[int]
    monotonic: bool
    increases: int  # steps where the pages went up
    frames: tuple[str, ...]
    callsite: str
    module: str | None
    cls: str
    verdict: str = verdicts.GROWTH
    history: History | None = None  # cohorts and ages, when identities were followed
    labels: tuple[str, ...] = ()  # the snapshots' labels, for the cohorts' names

    @property
    def new(self) -> bool:
        return self.per_snapshot[0] == 0

    @property
    def failing(self) -> bool:
        """Whether ``--fail-on-growth`` counts this suspect (a leak, or growth identities cannot explain)."""
        return self.verdict in verdicts.FAILING

    def cohorts(self) -> list[dict[str, Any]]:
        """``[{born, alive}]``: per birth snapshot with pages, those pages alive at it and every later one."""
        h = self.history
        if h is None:
            return []
        return [
            {"born": self.labels[i] if i < len(self.labels) else str(i), "alive": h.cohorts[i][i:]}
            for i in range(len(h.cohorts))
            if h.born(i) > 0
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "growth_pages": self.growth_pages,
            "per_snapshot": list(self.per_snapshot),
            "monotonic": self.monotonic,
            "callsite": self.callsite,
            "module": self.module,
            "frames": list(self.frames),
            "class": self.cls,
            "new": self.new,
            "verdict": self.verdict,
            "cohorts": self.cohorts(),
            "age": None
            if self.history is None
            else {"median_s": self.history.median_age_s, "oldest_s": self.history.oldest_age_s},
            "survivors": None if self.history is None else self.history.survivors,
            "freed_pages": None if self.history is None else self.history.freed,
            "turnover": None if self.history is None else self.history.turnover,
        }


def suspects(snapshots: Sequence[Snapshot], tracked: identities.Tracking | None = None) -> list[Suspect]:
    """Stacks whose pages grew from the first snapshot (baseline) to the last, largest growth first.

    ``monotonic``: never decreased and increased at least once. Each suspect gets a verdict (verdicts.py)
    from its allocations' cohorts when every snapshot is a dump with PFN and ts (identities.py). At equal
    growth a leak ranks above a cache, a monotonic stack above one that went up and down, then more
    increasing steps rank higher. ``tracked``: identities already followed over the same snapshots.
    Raises ValueError for fewer than two snapshots.
    """
    if len(snapshots) < 2:
        raise ValueError("suspects() needs at least two snapshots (a baseline and one more)")
    drop = _mixed(snapshots)
    maps = [_by_identity(s, drop) for s in snapshots]
    keys: set[tuple[str, ...]] = set()
    for m in maps:
        keys.update(m.keys())
    out: list[Suspect] = []
    first, last = maps[0], maps[-1]
    for key in keys:
        f, la = first.get(key), last.get(key)
        growth = (la.pages if la else 0) - (f.pages if f else 0)
        if growth <= 0:
            continue
        series = [m[key].pages if key in m else 0 for m in maps]
        steps = [b - a for a, b in itertools.pairwise(series)]
        increases = sum(1 for s in steps if s > 0)
        monotonic = increases > 0 and all(s >= 0 for s in steps)
        rep = max((m[key] for m in maps if key in m), key=lambda x: x.pages).stats
        out.append(Suspect(0, growth, series, monotonic, increases, rep.stack, rep.callsite, rep.module, rep.cls))
    if tracked is None:
        tracked = identities.track(snapshots, keys=[identity(s.frames) for s in out])
    labels = tuple(s.label for s in snapshots)
    for s in out:
        s.history = tracked.histories.get(identity(s.frames)) if tracked.available else None
        s.verdict = verdicts.verdict(s.per_snapshot, s.history)
        s.labels = labels
    out.sort(
        key=lambda s: (
            -s.growth_pages,
            verdicts.RANK[s.verdict],
            not s.monotonic,
            -s.increases,
            s.callsite,
            s.frames,
        )
    )
    for i, s in enumerate(out, 1):
        s.rank = i
    return out


def snapshot_entry(snap: Snapshot) -> dict[str, Any]:
    """``{label, records, total_pages, path, kind}`` (records is null for show_stacks)."""
    return {
        "label": snap.label,
        "records": snap.records,
        "total_pages": snap.total_pages,
        "path": snap.source,
        "kind": snap.kind,
    }


def over_threshold(found: Sequence[Suspect], threshold: int) -> list[Suspect]:
    """The suspects ``--fail-on-growth threshold`` fails on: failing verdicts that grew more, largest first."""
    return [s for s in found if s.failing and s.growth_pages > threshold]


def status_of(found: Sequence[Suspect], crashes: Sequence[Mapping[str, Any]] = (), threshold: int = 0) -> str:
    """``crash`` if any crash, ``leak`` if ``over_threshold`` finds a suspect (the one rule, shared with
    ``--fail-on-growth``'s exit 1: a ``leak`` verdict, or ``growth`` without identities, that grew more
    than ``threshold``; monotonic or not, the verdict already says whether the pages were kept), else ``ok``."""
    if crashes:
        return "crash"
    if over_threshold(found, threshold):
        return "leak"
    return "ok"


def to_json(
    snapshots: Sequence[Snapshot],
    found: Sequence[Suspect] | None = None,
    *,
    kernel: str | None = None,
    crashes: Sequence[Mapping[str, Any]] = (),
    timings: Mapping[str, float] | None = None,
    status: str | None = None,
    threshold: int = 0,
    top: int | None = None,
    paths: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The diff/run JSON of docs/formats.md: status, kernel, snapshots, suspects (ranked), crashes, timings.

    ``found`` defaults to ``suspects(snapshots)``; ``top`` limits the suspects listed (not the status);
    ``paths`` overrides each snapshot's path (e.g. the saved artifact). Extra keys: ``class`` and
    ``new`` per suspect, ``kind`` per snapshot, ``excluded_early_pages``.
    """
    if found is None:
        found = suspects(snapshots) if len(snapshots) >= 2 else []
    entries = [snapshot_entry(s) for s in snapshots]
    if paths is not None:
        for e, p in zip(entries, paths, strict=True):
            if p is not None:
                e["path"] = p
    listed = list(found)[:top] if top is not None else list(found)
    why = identities.why_unavailable(snapshots)
    if why is None and found and all(s.history is None for s in found):
        why = "no allocation of one snapshot matched the next (dumps of different boots?)"
    t = verdicts.THRESHOLDS
    return {
        "status": status or status_of(found, crashes, threshold),
        "kernel": kernel,
        "snapshots": entries,
        "suspects": [s.to_dict() for s in listed],
        "crashes": [dict(c) for c in crashes],
        "timings": dict(timings or {}),
        "excluded_early_pages": sum(s.early_pages for s in snapshots if s.kind == "dump") if _mixed(snapshots) else 0,
        "identities": {"followed": why is None, "unavailable": why},
        "verdict_thresholds": {
            "noise_pages": t.noise_pages,
            "min_cohort_pages": t.min_cohort_pages,
            "kept_fraction": t.kept_fraction,
        },
    }


def diff_to_json(d: Diff, *, top: int | None = None, timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``pagelab diff --json``: the run shape for two snapshots, plus ``shrunk`` (stacks that lost pages,
    ``vanished`` when none are left) and ``totals``. ``kernel`` is null and ``crashes`` empty."""
    found = suspects([d.before, d.after], d.tracked)
    out = to_json([d.before, d.after], found, timings=timings, top=top)
    shrunk = d.shrunk[:top] if top is not None else d.shrunk
    out["shrunk"] = [
        {
            "growth_pages": c.delta,
            "per_snapshot": [c.before, c.after],
            "vanished": c.status == "vanished",
            "callsite": c.callsite,
            "module": c.module,
            "frames": list(c.frames),
            "class": c.cls,
            "survivors": c.survivors,
        }
        for c in shrunk
    ]
    out["totals"] = {
        "before_pages": d.total_before,
        "after_pages": d.total_after,
        "growth_pages": d.total_after - d.total_before,
        "stacks_new": sum(1 for c in d.changes if c.status == "new"),
        "stacks_vanished": sum(1 for c in d.changes if c.status == "vanished"),
        "stacks_grown": sum(1 for c in d.changes if c.delta > 0),
        "stacks_shrunk": sum(1 for c in d.changes if c.delta < 0),
    }
    if d.tracked is not None and d.tracked.available:
        # Survivors and turnover over every stack: what stayed, what was freed, what is new.
        out["totals"].update(
            survivor_pages=sum(c.survivors or 0 for c in d.changes),
            freed_pages=sum(c.freed or 0 for c in d.changes),
            born_pages=sum(c.born or 0 for c in d.changes),
        )
    return out
