"""Leak or cache: allocation identities across snapshots, cohorts, ages, and the verdict thresholds' edges."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from pagelab.errors import UsageError
from pagelab.pageowner.analyse import Snapshot, SnapshotBuilder, callsite, load_snapshot, parse_duration
from pagelab.pageowner.diff import diff, diff_to_json, over_threshold, status_of, suspects, to_json
from pagelab.pageowner.identities import History, track
from pagelab.pageowner.verdicts import THRESHOLDS, Thresholds, verdict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEAK = ("leaky_slab_leak+0x2a/0x70 [leaky]", "slab_write+0x4d/0x80 [leaky]", "vfs_write+0xd1/0x430")
CACHE = ("leaky_cache_refill+0x2a/0x70 [leaky]", "cache_write+0x4d/0x80 [leaky]", "vfs_write+0xd1/0x430")
BOOT = ("alloc_large_system_hash+0x1/0x2", "inet_init+0x1/0x2")
FAST = ("get_page_from_freelist+0x531/0x68c", "__alloc_pages_noprof+0xfd/0x11a")
S = 1_000_000_000


def dump(label: str, allocs: dict[tuple[str, ...], list[tuple[int, ...]]], clock: int | None = None) -> Snapshot:
    """A 6.12 dump with one record per (PFN, ts[, order]) of each stack (order 0 when not given), in PFN
    order like the kernel's."""
    recs = sorted((a[0], a[1], a[2] if len(a) > 2 else 0, stack) for stack, ids in allocs.items() for a in ids)
    text = "".join(
        f"Page allocated via order {order}, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (t), ts {ts} ns\n"
        f"PFN {pfn:#x} type Unmovable Block {pfn >> 9} type Unmovable Flags 0x0(zone=1)\n"
        + "".join(f" {f}\n" for f in FAST + stack)
        + "\n"
        for pfn, ts, order, stack in recs
    )
    b = SnapshotBuilder(label=label, source=f"/snap/{label}")
    b.feed(text.encode())
    snap = b.finish()
    snap.clock_ns = clock
    return snap


def ids(first_pfn: int, n: int, ts: int) -> list[tuple[int, int]]:
    return [(first_pfn + i, ts + i) for i in range(n)]


def run(iterations: int, *, leak: int = 0, cache: int = 0) -> list[Snapshot]:
    """Baseline plus ``iterations`` snapshots, one every 10 s: ``leak`` pages kept per iteration, a cache of
    ``cache`` pages replaced per iteration (fresh PFNs and ts), 100 boot pages that never change."""
    snaps = []
    kept: list[tuple[int, int]] = []
    for i in range(iterations + 1):
        now = (i + 1) * 10 * S
        if i:
            kept = kept + ids(0x10000 + i * 0x1000, leak, now - 2 * S)
        batch = ids(0x80000 + i * 0x1000, cache, now - 2 * S) if i else []
        snaps.append(
            dump("baseline" if i == 0 else f"iter{i}", {BOOT: ids(0x100, 100, S), LEAK: kept, CACHE: batch}, now)
        )
    return snaps


def by_callsite(found):
    return {s.callsite: s for s in found}


# -- identities and cohorts -----------------------------------------------------------------------------
def test_kept_pages_stay_in_their_cohort_and_a_cache_is_replaced_every_time():
    snaps = run(3, leak=256, cache=512)
    found = by_callsite(suspects(snaps))
    leak, cache = found["leaky_slab_leak"], found["leaky_cache_refill"]
    assert leak.per_snapshot == [0, 256, 512, 768] and cache.per_snapshot == [0, 512, 512, 512]
    assert [c["alive"] for c in leak.cohorts()] == [[256, 256, 256], [256, 256], [256]]
    assert [c["born"] for c in leak.cohorts()] == ["iter1", "iter2", "iter3"]
    assert [c["alive"] for c in cache.cohorts()] == [[512, 0, 0], [512, 0], [512]]
    assert (leak.verdict, cache.verdict) == ("leak", "cache")
    assert cache.history.turnover == 1.0 and leak.history.turnover == 0.0


def test_at_equal_growth_a_leak_ranks_above_a_cache():
    # leaky_cache_refill sorts first by name; the verdict puts the leak above it.
    found = suspects(run(3, leak=128, cache=384))
    assert [(s.callsite, s.growth_pages, s.verdict) for s in found] == [
        ("leaky_slab_leak", 384, "leak"),
        ("leaky_cache_refill", 384, "cache"),
    ]


def test_one_interval_cannot_tell_a_cache_from_a_leak():
    # Nothing was freed yet: the cache's first batch is still alive, so both are leaks until shown otherwise.
    assert [s.verdict for s in suspects(run(1, leak=512, cache=512))] == ["leak", "leak"]


def test_a_pfn_reused_with_a_new_timestamp_is_a_new_allocation():
    a = dump("a", {BOOT: ids(0x1000, 100, S), LEAK: [(0x100, 5 * S)]}, 10 * S)
    b = dump("b", {BOOT: ids(0x1000, 100, S), LEAK: [(0x100, 12 * S)]}, 20 * S)
    h = track([a, b]).histories[LEAK]
    assert h.cohorts == [[1, 0], [0, 1]] and h.survivors == 0 and h.freed == 1


def test_identities_match_only_within_a_stack():
    a = dump("a", {BOOT: ids(0x1000, 100, S), LEAK: [(0x100, 5 * S)]}, 10 * S)
    b = dump("b", {BOOT: ids(0x1000, 100, S), CACHE: [(0x100, 5 * S)]}, 20 * S)
    t = track([a, b])
    assert t.histories[CACHE].cohorts == [[0, 0], [0, 1]]


def test_a_leak_whose_pages_were_compacted_keeps_its_cohorts():
    # Compaction moves every kept page to another PFN between snapshots; ts (and the stack) stay.
    snaps = []
    for i in range(4):
        now = (i + 1) * 10 * S
        kept = [
            (0x40000 + 0x10000 * i + 0x100 * born + k, (born * 10 + 8) * S + k)
            for born in range(1, i + 1)
            for k in range(256)
        ]
        snaps.append(dump(f"s{i}", {BOOT: ids(0x100, 100, S), LEAK: kept}, now))
    (found,) = suspects(snaps)
    assert found.per_snapshot == [0, 256, 512, 768]
    assert [c["alive"] for c in found.cohorts()] == [[256, 256, 256], [256, 256], [256]]
    assert found.verdict == "leak" and found.history.freed == 0


def test_pieces_of_a_split_allocation_inherit_its_cohort():
    # split_page_owner: one order-3 allocation becomes 8 order-0 ones at its PFNs, with its ts. One piece
    # is freed later; a same-ts allocation elsewhere of another order is not a piece.
    a = dump("a", {BOOT: ids(0x1000, 100, S), LEAK: [(0x200, 5 * S, 3)]}, 10 * S)
    b = dump("b", {BOOT: ids(0x1000, 100, S), LEAK: [(0x200 + k, 5 * S) for k in range(8)]}, 20 * S)
    c = dump(
        "c", {BOOT: ids(0x1000, 100, S), LEAK: [(0x200 + k, 5 * S) for k in range(1, 8)] + [(0x300, 5 * S, 1)]}, 30 * S
    )
    h = track([a, b, c]).histories[LEAK]
    assert h.cohorts == [[8, 8, 7], [0, 0, 0], [0, 0, 2]]


def test_ages_are_snapshot_clock_minus_ts_and_fall_back_to_the_newest_ts():
    snaps = run(2, leak=10)
    h = track(snaps).histories[LEAK]
    assert h.oldest_age_s == [None, 2.0, 12.0]  # born 2 s before iter1, seen again 10 s later
    assert h.median_age_s == [None, 2.0, 12.0]  # 20 pages at iter2, half of each age: the lower median
    no_clock = dump("x", {LEAK: [(1, 2 * S), (2, 5 * S)]})
    assert track([no_clock, no_clock]).histories[LEAK].oldest_age_s == [3.0, 3.0]


def test_dumps_of_different_boots_have_no_identities():
    a = dump("a", {BOOT: ids(0x100, 100, S)}, 10 * S)
    b = dump("b", {BOOT: ids(0x100, 100, 2 * S), LEAK: ids(0x900, 40, 3 * S)}, 10 * S)
    t = track([a, b])
    assert not t.available and "different boots" in t.unavailable
    found = suspects([a, b])
    assert found[0].verdict == "growth" and found[0].history is None
    assert to_json([a, b], found)["identities"]["followed"] is False


def test_show_stacks_and_stripped_dumps_give_growth_verdicts():
    b = SnapshotBuilder(label="ss", source="ss")
    b.feed(b" leaky_slab_leak+0x2a/0x70 [leaky]\nnr_base_pages: 5\n\n")
    ss1 = b.finish()
    b = SnapshotBuilder(label="ss2", source="ss2")
    b.feed(b" leaky_slab_leak+0x2a/0x70 [leaky]\nnr_base_pages: 50\n\n")
    ss2 = b.finish()
    assert "show_stacks" in track([ss1, ss2]).unavailable
    assert [s.verdict for s in suspects([ss1, ss2])] == ["growth"]
    stripped = SnapshotBuilder(label="st", source="st")
    stripped.feed(b"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (t), ts 5 ns\n leak+0x1/0x2\n\n")
    assert stripped.finish().allocs is None


def test_a_builder_without_identities_keeps_no_columns():
    b = SnapshotBuilder(label="x", source="x", identities=False)
    b.feed(lzma.decompress((FIXTURES / "report_po612.txt.xz").read_bytes()))
    assert b.finish().allocs is None


def test_real_dump_columns_match_its_records():
    snap = load_snapshot(FIXTURES / "report_po612.txt.xz")
    assert snap.allocs is not None and len(snap.allocs) == snap.records
    assert snap.allocs.pages() == snap.total_pages
    # The same dump twice: everything survives, nothing turns over.
    t = track([snap, snap])
    assert t.available and all(h.freed == 0 and h.cohorts[1][1] == 0 for h in t.histories.values())


# -- verdict thresholds, at their edges ---------------------------------------------------------------------
def history(*cohorts: list[int]) -> History:
    n = len(cohorts)
    return History([list(c) for c in cohorts], [None] * n, [None] * n)


def test_transient_needs_a_fall_of_more_than_noise_and_an_end_within_noise():
    t = THRESHOLDS
    assert verdict([0, t.noise_pages + 2, 1], None) == "transient"
    assert verdict([0, t.noise_pages + 1, 1], None) == "growth"  # fell back by noise only: not transient
    assert verdict([0, 100, t.noise_pages], None) == "transient"
    assert verdict([0, 100, t.noise_pages + 1], None) == "growth"  # ended above noise: still grew


def test_kept_fraction_edge_decides_leak_or_cache():
    t = Thresholds(noise_pages=8, min_cohort_pages=16, kept_fraction=0.5)
    assert verdict([0, 100, 150], history([0, 0, 0], [0, 100, 50], [0, 0, 100]), t) == "leak"  # exactly half
    assert verdict([0, 100, 149], history([0, 0, 0], [0, 100, 49], [0, 0, 100]), t) == "cache"


def test_cohorts_below_the_minimum_are_not_judged_when_a_larger_one_exists():
    t = Thresholds(noise_pages=8, min_cohort_pages=16, kept_fraction=0.5)
    # iter1's 15 pages all freed (below the minimum), iter2's 16 kept: a leak.
    assert verdict([0, 15, 31, 31], history([0] * 4, [0, 15, 0, 0], [0, 0, 16, 16], [0] * 3 + [15]), t) == "leak"
    # At 16 iter1's cohort counts: 16 freed + 16 kept is exactly half kept, still a leak; 17 is not.
    assert verdict([0, 16, 32, 32], history([0] * 4, [0, 16, 0, 0], [0, 0, 16, 16], [0] * 3 + [16]), t) == "leak"
    assert verdict([0, 17, 33, 33], history([0] * 4, [0, 17, 0, 0], [0, 0, 16, 16], [0] * 3 + [17]), t) == "cache"


def test_the_baseline_cohort_is_not_judged_when_the_run_has_cohorts_of_its_own():
    t = Thresholds(noise_pages=8, min_cohort_pages=16, kept_fraction=0.5)
    # 2000 boot pages that never go away and a 512-page cache refilled every iteration: a cache.
    boot_kept = history([2000] * 4, [0, 512, 0, 0], [0, 0, 512, 0], [0, 0, 0, 512])
    assert verdict([2000, 2512, 2512, 2512], boot_kept, t) == "cache"
    # 3000 boot pages freed during iter1 and 1024 pages kept per iteration: a leak.
    boot_freed = history([3000, 0, 0, 0], [0, 1024, 1024, 1024], [0, 0, 1024, 1024], [0, 0, 0, 1024])
    assert verdict([3000, 1024, 2048, 3072], boot_freed, t) == "leak"
    # Two dumps (a diff) have no cohort of their own but the baseline's: it decides.
    assert verdict([100, 150], history([100, 0], [0, 150]), t) == "cache"
    assert verdict([100, 150], history([100, 100], [0, 50]), t) == "leak"
    # So does a run whose stack gained pages only in the last interval: a few baseline pages replaced by a
    # few new ones is churn, kept baseline pages beside new ones are not.
    assert verdict([5, 1, 9], history([5, 1, 1], [0, 0, 0], [0, 0, 8]), t) == "cache"
    assert verdict([20, 20, 28], history([20, 20, 20], [0, 0, 0], [0, 0, 8]), t) == "leak"


def test_the_baseline_cohort_is_not_judged_on_real_dumps():
    """The same cases through track() and suspects(): boot pages in the suspect's own stack."""
    boot = ids(0x200000, 2000, S)
    snaps = []
    for i in range(4):
        now = (i + 1) * 10 * S
        batch = ids(0x80000 + i * 0x1000, 512, now - 2 * S) if i else []
        snaps.append(dump(f"s{i}", {BOOT: ids(0x100, 100, S), CACHE: boot + batch}, now))
    (found,) = suspects(snaps)
    assert found.per_snapshot == [2000, 2512, 2512, 2512] and found.verdict == "cache"
    snaps = []
    kept: list[tuple[int, int]] = []
    for i in range(4):
        now = (i + 1) * 10 * S
        if i:
            kept = kept + ids(0x10000 + i * 0x1000, 1024, now - 2 * S)
        snaps.append(dump(f"s{i}", {BOOT: ids(0x100, 100, S), LEAK: kept or ids(0x300000, 3000, S)}, now))
    (found,) = suspects(snaps)
    assert found.per_snapshot == [3000, 1024, 2048, 3072] and found.verdict == "leak"


def test_a_leak_that_starts_in_the_last_interval_beside_a_steady_cache_is_a_leak():
    t = Thresholds(noise_pages=8, min_cohort_pages=16, kept_fraction=0.5)
    steady = [[0] * 4, [0, 512, 0, 0], [0, 0, 512, 0]]
    assert verdict([0, 512, 512, 1536], history(*steady, [0, 0, 0, 1536]), t) == "leak"
    # A cache that creeps up a little in the last interval stays a cache.
    assert verdict([0, 512, 512, 540], history(*steady, [0, 0, 0, 540]), t) == "cache"


def test_small_cohorts_are_judged_together_when_none_reaches_the_minimum():
    t = Thresholds(noise_pages=8, min_cohort_pages=16, kept_fraction=0.5)
    assert verdict([0, 3, 6], history([0, 0, 0], [0, 3, 0], [0, 0, 6]), t) == "cache"
    assert verdict([0, 3, 6], history([0, 0, 0], [0, 3, 3], [0, 0, 3]), t) == "leak"


def test_growth_born_in_the_last_interval_alone_is_a_leak_until_shown_otherwise():
    assert verdict([0, 0, 40], history([0, 0, 0], [0, 0, 0], [0, 0, 40])) == "leak"


# -- what fails a run ---------------------------------------------------------------------------------
def test_fail_on_growth_counts_leaks_not_caches():
    found = suspects(run(3, leak=64, cache=512))
    assert [s.callsite for s in over_threshold(found, 100)] == ["leaky_slab_leak"]
    assert over_threshold(found, 192) == []  # the leak grew 192: not more than the threshold
    assert status_of(found, threshold=191) == "leak" and status_of(found, threshold=192) == "ok"
    cache_only = suspects(run(3, cache=512))
    assert cache_only[0].growth_pages == 512 and over_threshold(cache_only, 400) == []
    assert status_of(cache_only, threshold=400) == "ok"


def test_status_and_fail_on_growth_follow_one_rule_monotonic_or_not():
    # A leak that freed a few of its pages on the way ([0, 100, 90, 150]) is not monotonic, but it is a
    # leak: --fail-on-growth 0 fails on it (exit 1), and the status must say "leak" too.
    first = ids(0x10000, 100, 8 * S)
    per_iter = [[], first, first[:90], first[:90] + ids(0x20000, 60, 38 * S)]
    snaps = [dump(f"s{i}", {BOOT: ids(0x100, 100, S), LEAK: p}, (i + 1) * 10 * S) for i, p in enumerate(per_iter)]
    (found,) = suspects(snaps)
    assert found.per_snapshot == [0, 100, 90, 150] and not found.monotonic and found.verdict == "leak"
    assert over_threshold([found], 0) == [found]
    assert status_of([found], threshold=0) == "leak" == to_json(snaps, [found])["status"]
    assert status_of([found], threshold=150) == "ok" and over_threshold([found], 150) == []


def test_report_json_suspects_carry_verdict_cohorts_and_ages():
    snaps = run(2, leak=20, cache=30)
    out = to_json(snaps)
    s = {x["callsite"]: x for x in out["suspects"]}
    leak = s["leaky_slab_leak"]
    assert leak["verdict"] == "leak" and leak["cohorts"] == [
        {"born": "iter1", "alive": [20, 20]},
        {"born": "iter2", "alive": [20]},
    ]
    assert leak["age"] == {"median_s": [None, 2.0, 12.0], "oldest_s": [None, 2.0, 12.0]}
    assert leak["survivors"] == 0 and leak["freed_pages"] == 0 and leak["turnover"] == 0.0
    assert s["leaky_cache_refill"]["verdict"] == "cache" and s["leaky_cache_refill"]["freed_pages"] == 30
    assert out["identities"] == {"followed": True, "unavailable": None}
    assert out["verdict_thresholds"]["noise_pages"] == THRESHOLDS.noise_pages


def test_diff_follows_allocations_between_two_dumps():
    before, _, after = run(2, leak=20, cache=30)
    d = diff(before, after)
    changes = {c.callsite: c for c in d.changes}
    assert (changes["alloc_large_system_hash"].survivors, changes["alloc_large_system_hash"].freed) == (100, 0)
    assert (changes["leaky_slab_leak"].born, changes["leaky_slab_leak"].survivors) == (40, 0)
    out = diff_to_json(d)
    assert out["totals"]["survivor_pages"] == 100 and out["totals"]["born_pages"] == 70
    assert {s["callsite"]: s["verdict"] for s in out["suspects"]} == {
        "leaky_slab_leak": "leak",
        "leaky_cache_refill": "leak",  # two dumps: the cache's pages are all new, nothing was freed yet
    }


# -- page age in `pagelab report` ----------------------------------------------------------------------
def test_older_than_keeps_only_old_allocations_and_by_age_buckets_them():
    snap = run(2, leak=20)[-1]  # boot pages 29 s old, iter1's 12 s, iter2's 2 s
    old = snap.older_than(10)
    assert old.total_pages == 120 and old.filters == ("age>=10s",)
    assert {st.callsite: st.pages for st in old.stacks.values()} == {
        "alloc_large_system_hash": 100,
        "leaky_slab_leak": 20,
    }
    assert snap.older_than(20).total_pages == 100
    assert [(g.key, g.pages) for g in snap.group("age")] == [("10s-1m", 120), ("1s-10s", 20)]


def test_age_views_need_timestamps_and_durations_parse_strictly():
    b = SnapshotBuilder(label="ss", source="ss.txt")
    b.feed(b" foo+0x1/0x2\nnr_base_pages: 5\n\n")
    ss = b.finish()
    with pytest.raises(UsageError, match=r"ss\.txt has no allocation timestamps"):
        ss.older_than(5)
    assert (parse_duration("90"), parse_duration("1.5m"), parse_duration("500ms"), parse_duration("2h")) == (
        90,
        90,
        0.5,
        7200,
    )
    with pytest.raises(UsageError, match="--older-than '5 years'"):
        parse_duration("5 years")


# -- attribution through allocators, on real dumps ------------------------------------------------------------
@pytest.mark.parametrize(
    ("allocator", "expected"),
    [
        ("kmem_cache_alloc_lru_noprof", "shmem_alloc_inode"),
        ("kmem_cache_alloc_bulk_noprof", "mas_alloc_nodes"),
        ("__kvmalloc_node_noprof", "tcp_metrics_init"),
        ("__kmalloc_cache_noprof", "tty_register_device_attr"),
    ],
)
def test_slab_and_kvmalloc_pages_are_attributed_past_the_allocator(allocator: str, expected: str) -> None:
    snap = load_snapshot(FIXTURES / "report_po612.txt.xz")
    hits = [st for st in snap.stacks.values() if any(f.startswith(allocator + "+") for f in st.stack)]
    assert hits and expected in {st.callsite for st in hits}
    for st in hits:
        syms = [f.split("+")[0] for f in st.stack]
        assert syms.index(st.callsite) > syms.index(allocator), st.stack


@pytest.mark.parametrize(
    "frames",
    [
        # 7.3.4 mm/slub.c: kmalloc through the sheaves
        ("alloc_from_pcs+0x1/0x2", "__pcs_replace_empty_main+0x1/0x2", "refill_sheaf+0x1/0x2", "refill_objects+0x1"),
        ("alloc_from_new_slab+0x1/0x2", "kmem_cache_alloc_from_sheaf_noprof+0x1/0x2"),
        # percpu and page_pool (mm/percpu-vm.c, net/core/page_pool.c)
        ("pcpu_alloc_pages.constprop.0+0x1/0x2", "pcpu_populate_chunk+0x1/0x2", "pcpu_alloc_noprof+0x1/0x2"),
        ("__page_pool_alloc_pages_slow+0x1/0x2", "page_pool_alloc_pages+0x1/0x2", "page_pool_dev_alloc_pages+0x1"),
    ],
)
def test_sheaf_percpu_and_page_pool_frames_are_allocator_internals(frames: tuple[str, ...]) -> None:
    stack = ("get_page_from_freelist+0x1/0x2", "alloc_slab_page+0x1/0x2", *frames, "owner_fn+0x10/0x40 [mod]")
    assert callsite(stack) == "owner_fn"


def test_report_older_than_and_by_age_on_a_real_dump(tmp_path: Path, capsys) -> None:
    from pagelab.cli import main

    dump_path = FIXTURES / "report_po612.txt.xz"
    snap = load_snapshot(dump_path)
    now = snap.allocs.newest_ts
    # A guest dumped 3 s after boot: the boot-time pages are more than 1 s old, the latest are not.
    allocs = zip(snap.allocs.pfn_order, snap.allocs.ts, strict=True)
    expected = sum(1 << (po & 63) for po, ts in allocs if now - ts >= S)
    assert 0 < expected < snap.total_pages
    out = tmp_path / "old.json"
    assert main(["report", str(dump_path), "--older-than", "1s", "--by", "age", "--json", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    assert data["total_pages"] == expected
    assert "By age" in capsys.readouterr().out
    assert main(["report", str(dump_path), "--older-than", "soon"]) == 2
    assert "--older-than 'soon'" in capsys.readouterr().err


def test_guest_clock_is_read_from_the_kmsg_marker_or_uptime():
    from pagelab.collect.collector import parse_clock

    assert parse_clock("<7>[   12.345678] pagelab-clock\n13.01 20.00\n") == 12_345_678_000
    assert parse_clock("13.01 20.00\n") == 13_010_000_000  # no marker: /proc/uptime
    assert parse_clock("") is None


def test_benchmark_runs_keep_identities_like_one_boot(tmp_path: Path) -> None:
    """scripts/bench/make_dump.py --run: allocations keep PFN and ts; 10% are freed and their PFNs reused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dump", FIXTURES.parents[1] / "scripts/bench/make_dump.py")
    make_dump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_dump)
    records = make_dump.load_records([str(FIXTURES / "report_po612.txt.xz")])
    made = make_dump.generate_run(records, tmp_path, size=400_000, iterations=2, seed=3, churn=0.1, growth=0.02)
    snaps = [load_snapshot(path) for path, _, _ in made]
    assert [n for _, n, _ in made] == [s.records for s in snaps]
    t = track(snaps)
    assert t.available
    kept = sum(h.cohorts[0][1] for h in t.histories.values())
    assert abs(kept / snaps[0].total_pages - 0.9) < 0.05  # pages, not records: orders differ a little
    assert max(snaps[1].allocs.ts) > max(snaps[0].allocs.ts)  # the clock only moves forward


def test_real_guest_leaks_and_cache_from_the_leaky_module():
    """Four snapshots of a 6.12 guest running leaky-slab 2048, leaky-vmalloc 256 and leaky-cache 512 (their
    records and the first 400 of each dump, tests/e2e/test_verdicts_e2e.py's run)."""
    snaps = [load_snapshot(p) for p in sorted(FIXTURES.glob("verdicts_leaky612_*.txt.xz"))]
    found = {s.callsite: s for s in suspects(snaps)}
    slab, vm, cache = found["leaky_slab_leak"], found["leaky_vmalloc_leak"], found["leaky_cache_refill"]
    # Attribution through kmalloc (__kmalloc_cache_noprof, ___slab_alloc, new_slab) and vmalloc
    # (__vmalloc_node_noprof, __vmalloc_node_range_noprof, alloc_pages_bulk_noprof) to the module's functions.
    assert slab.cls == "slab" and vm.cls == "vmalloc" and slab.module == vm.module == cache.module == "leaky"
    assert (slab.per_snapshot, vm.per_snapshot, cache.per_snapshot) == (
        [0, 508, 1016, 1528],
        [0, 256, 512, 768],
        [0, 512, 512, 512],
    )
    assert (slab.verdict, vm.verdict, cache.verdict) == ("leak", "leak", "cache")
    assert [c["alive"] for c in cache.cohorts()] == [[512, 0, 0], [512, 0], [512]]
    assert slab.history.freed == vm.history.freed == 0


def test_terminal_report_has_a_verdict_column_and_cohort_lines():
    from pagelab.pageowner.render import as_text, render_diff, render_suspects

    snaps = run(3, leak=64, cache=512)
    text = as_text(lambda ui: render_suspects(ui, snaps, suspects(snaps)))
    assert " verdict " in text.splitlines()[1]  # the column header
    assert "leaky_cache_refill  +512 pages  cache" in text
    assert "born in iter1: 512 → 0 → 0 alive" in text and "born in iter1: 64 → 64 → 64 alive" in text
    assert "turnover 100%" in text
    d = as_text(lambda ui: render_diff(ui, diff(snaps[0], snaps[-1])))
    assert " kept " in d and " freed " in d and "allocations followed: 100 pages of before survive" in d
