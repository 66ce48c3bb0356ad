"""Leak, cache, growth or transient: what a growing stack is, from its pages per snapshot and its cohorts.

Counting pages cannot tell a leak from a cache: a bounded cache that refills 512 fresh pages per
iteration and frees the previous 512 counts 0 → 512 → 512 → 512, like a leak that stopped. Following
allocations can (identities.py): a leak's pages stay alive, a cache's are replaced. Every threshold the
verdict uses is in THRESHOLDS (documented in docs/run.md, "Verdicts"); nothing else decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pagelab.pageowner.identities import History

LEAK, CACHE, GROWTH, TRANSIENT = "leak", "cache", "growth", "transient"
VERDICTS = (LEAK, CACHE, GROWTH, TRANSIENT)
# What --fail-on-growth counts: pages kept, or growth that identities could not explain.
FAILING = (LEAK, GROWTH)
# Ranking at equal growth: what would fail a run first.
RANK = {LEAK: 0, GROWTH: 0, CACHE: 1, TRANSIENT: 2}


@dataclass(frozen=True)
class Thresholds:
    """The knobs of ``verdict``, in one place.

    ``noise_pages``: a rise or fall of at most this many pages is noise (snapshots of an idle guest
    differ by a few pages: the readers' own processes, per-CPU lists). ``min_cohort_pages``: a cohort
    (the pages a stack gained between two snapshots) smaller than this is not judged on its own when a
    larger one exists. ``kept_fraction``: the judged cohorts are kept, i.e. leaked, when at least this
    share of their pages is still alive at the last snapshot.
    """

    noise_pages: int = 8
    min_cohort_pages: int = 16
    kept_fraction: float = 0.5


THRESHOLDS = Thresholds()


def verdict(per_snapshot: Sequence[int], history: History | None, t: Thresholds = THRESHOLDS) -> str:
    """The verdict for a stack that grew from the first snapshot to the last.

    ``transient``: it rose more than ``noise_pages`` above where it ended, and ended within noise of
    where it started. ``growth``: no identities (``history`` None). Otherwise the judged cohorts are the
    run's own: pages born in an interval (snapshot 1 to the one before the last). The baseline's pages
    (cohort 0) were born before the run, so what happens to them (long-lived boot pages kept, or freed)
    says nothing about what the run leaks; they are judged only when the run has no earlier cohort with
    pages (a plain two-dump diff, or a stack that gained pages only in the last interval). The last
    interval's cohort has not had time to be freed.
    Of the judged cohorts, those of at least ``min_cohort_pages`` pages count, or all of them when none
    is that large: ``leak`` when at least ``kept_fraction`` of their pages are alive at the last
    snapshot (or when none were born: nothing yet says otherwise), else ``cache`` (freed and replaced),
    unless the last interval alone grew the stack by at least ``min_cohort_pages`` and by at least
    ``kept_fraction`` of its whole growth: a leak that started in the last iteration, beside a cache
    that was steady until then, is a ``leak`` until a later snapshot shows those pages freed.
    """
    first, last = per_snapshot[0], per_snapshot[-1]
    if max(per_snapshot) - last > t.noise_pages and last - first <= t.noise_pages:
        return TRANSIENT
    if history is None:
        return GROWTH
    n = len(history.cohorts)
    earlier = [i for i in range(1, n - 1) if history.born(i) > 0] or [0]
    judged = [i for i in earlier if history.born(i) >= t.min_cohort_pages] or [
        i for i in earlier if history.born(i) > 0
    ]
    born = sum(history.born(i) for i in judged)
    alive = sum(history.alive(i) for i in judged)
    if born == 0 or alive >= t.kept_fraction * born:
        return LEAK
    if n > 2 and len(per_snapshot) > 2:
        late = per_snapshot[-1] - per_snapshot[-2]
        if late >= t.min_cohort_pages and late >= t.kept_fraction * (last - first):
            return LEAK
    return CACHE
