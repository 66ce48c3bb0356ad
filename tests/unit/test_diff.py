"""Growth across snapshots: two-snapshot diff, N-snapshot suspects, and the diff/run JSON."""

from __future__ import annotations

import json

import pytest

from pagelab.pageowner.analyse import Snapshot, SnapshotBuilder, load_snapshot
from pagelab.pageowner.diff import diff, diff_to_json, suspects, to_json

LEAK = ("hoard_stash_pages+0x1c/0x54 [hoard]", "hoard_write+0x3e/0x70 [hoard]", "vfs_write+0xe6/0x143")
NOISE = ("skb_page_frag_refill+0x5c/0x8e", "try_fill_recv+0x12d/0x3a6", "virtnet_poll+0x283/0x4c7")
STEADY = ("alloc_large_system_hash+0x1/0x2", "inet_init+0x1/0x2")
SHRINK = ("pipe_write+0x1/0x2", "vfs_write+0xe6/0x143")
FAST = ("get_page_from_freelist+0x531/0x68c", "__alloc_pages_noprof+0xfd/0x11a")
SLOW_SLAB = (
    "get_page_from_freelist+0x531/0x68c",
    "__alloc_pages_noprof+0xfd/0x11a",
    "alloc_slab_page+0x15/0x33",
    "allocate_slab+0x59/0x119",
    "___slab_alloc+0x3b1/0x5e0",
    "kmem_cache_alloc_noprof+0xf/0x10",
)
EARLY = ("register_early_stack+0x23/0x3e", "init_page_owner+0x2e/0x257")


def dump(label: str, pages: dict[tuple[str, ...], int]) -> Snapshot:
    """A 6.12 dump with ``n`` order-0 records of each stack (empty stacks get no records)."""
    out = []
    for stack, n in pages.items():
        for i in range(n):
            out.append(
                f"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (t), ts {i} ns\n"
                f"PFN {i:#x} type Unmovable Block 0 type Unmovable Flags 0x0(zone=1)\n"
                + "".join(f" {f}\n" for f in stack)
                + "\n"
            )
    b = SnapshotBuilder(label=label, source=f"/snap/{label}")
    b.feed("".join(out).encode())
    return b.finish()


def show_stacks(label: str, pages: dict[tuple[str, ...], int]) -> Snapshot:
    b = SnapshotBuilder(label=label, source=f"/snap/{label}")
    b.feed("".join("".join(f" {f}\n" for f in s) + f"nr_base_pages: {n}\n\n" for s, n in pages.items()).encode())
    return b.finish()


def series(*steps: dict[tuple[str, ...], int]) -> list[Snapshot]:
    return [dump(f"{i:02d}", {FAST + s: n for s, n in step.items() if n}) for i, step in enumerate(steps)]


# -- two snapshots ----------------------------------------------------------------------------------
def test_diff_ranks_growth_and_marks_new_and_vanished():
    before, after = series({LEAK: 2, STEADY: 5, SHRINK: 4}, {LEAK: 9, STEADY: 5, NOISE: 3})
    d = diff(before, after)
    assert [(c.callsite, c.delta, c.status) for c in d.changes] == [
        ("hoard_stash_pages", 7, "grown"),
        ("skb_page_frag_refill", 3, "new"),
        ("alloc_large_system_hash", 0, "same"),
        ("pipe_write", -4, "vanished"),
    ]
    assert (d.total_before, d.total_after, d.excluded_early) == (11, 17, 0)
    assert [c.callsite for c in d.shrunk] == ["pipe_write"]
    assert d.changes[0].module == "hoard"


def test_diff_of_a_snapshot_with_itself_is_empty(fixtures):
    snap = load_snapshot(fixtures / "report_po61.txt.xz")
    d = diff(snap, snap)
    assert not d.grown and not d.shrunk
    assert to_json([snap, snap])["status"] == "ok"


def test_stacks_match_from_the_callsite_down():
    """The slab fast and slow paths of one callsite are one stack for the diff."""
    before = dump("a", {FAST + LEAK: 3})
    after = dump("b", {SLOW_SLAB + LEAK: 5})
    d = diff(before, after)
    assert [(c.before, c.after, c.status) for c in d.changes] == [(3, 5, "grown")]


def test_diff_dump_against_show_stacks_of_the_same_guest(fixtures):
    po = load_snapshot(fixtures / "report_po612.txt.xz")
    ss = load_snapshot(fixtures / "report_ss612.txt.xz")
    d = diff(po, ss)
    assert d.excluded_early == po.early_pages > 0
    assert d.total_before == po.total_pages - po.early_pages
    assert d.total_after == ss.total_pages
    assert all(c.cls != "early" for c in d.changes)
    unchanged = [c for c in d.changes if c.status == "same"]
    assert len(unchanged) > 200  # most stacks (those the fixture keeps whole) agree page for page


def test_mixed_kinds_leave_early_boot_pages_out():
    before = dump("a", {EARLY: 50, FAST + LEAK: 1})
    after = show_stacks("b", {FAST + LEAK: 4})
    d = diff(before, after)
    assert [(c.callsite, c.delta) for c in d.changes] == [("hoard_stash_pages", 3)]
    assert d.excluded_early == 50
    assert to_json([before, after])["excluded_early_pages"] == 50


# -- suspects over N snapshots ------------------------------------------------------------------------
def test_monotonic_growth_ranks_above_noise_of_the_same_size():
    snaps = series(
        {LEAK: 0, NOISE: 5, STEADY: 8, SHRINK: 9},
        {LEAK: 10, NOISE: 40, STEADY: 8, SHRINK: 6},
        {LEAK: 20, NOISE: 1, STEADY: 8, SHRINK: 3},
        {LEAK: 30, NOISE: 35, STEADY: 8, SHRINK: 0},
    )
    found = suspects(snaps)
    assert [(s.rank, s.callsite, s.growth_pages, s.monotonic) for s in found] == [
        (1, "hoard_stash_pages", 30, True),
        (2, "skb_page_frag_refill", 30, False),
    ]
    assert found[0].per_snapshot == [0, 10, 20, 30] and found[0].new and found[0].increases == 3
    assert found[1].per_snapshot == [5, 40, 1, 35] and not found[1].new


def test_larger_growth_ranks_first_and_flat_steps_stay_monotonic():
    snaps = series({LEAK: 1, NOISE: 1}, {LEAK: 1, NOISE: 50}, {LEAK: 4, NOISE: 50})
    found = suspects(snaps)
    assert [(s.callsite, s.growth_pages, s.monotonic) for s in found] == [
        ("skb_page_frag_refill", 49, True),
        ("hoard_stash_pages", 3, True),
    ]


def test_suspects_need_two_snapshots():
    with pytest.raises(ValueError):
        suspects(series({LEAK: 1}))


# -- JSON -------------------------------------------------------------------------------------------
def test_run_json_shape_and_status():
    snaps = series({LEAK: 1}, {LEAK: 2}, {LEAK: 5})
    out = to_json(snaps, kernel="6.12.57", timings={"total_s": 1.5})
    assert set(out) >= {"status", "kernel", "snapshots", "suspects", "crashes", "timings"}
    assert out["status"] == "leak" and out["kernel"] == "6.12.57" and out["crashes"] == []
    assert out["snapshots"][0] == {"label": "00", "records": 1, "total_pages": 1, "path": "/snap/00", "kind": "dump"}
    s = out["suspects"][0]
    assert {k: s[k] for k in ("rank", "growth_pages", "per_snapshot", "monotonic", "callsite", "module")} == {
        "rank": 1,
        "growth_pages": 4,
        "per_snapshot": [1, 2, 5],
        "monotonic": True,
        "callsite": "hoard_stash_pages",
        "module": "hoard",
    }
    assert s["frames"][2] == "hoard_stash_pages+0x1c/0x54 [hoard]"  # as printed, no leading space
    json.dumps(out)  # serialisable


def test_status_crash_threshold_and_error():
    snaps = series({LEAK: 1}, {LEAK: 5})
    assert to_json(snaps, threshold=4)["status"] == "ok"
    assert to_json(snaps, threshold=3)["status"] == "leak"
    crash = {"kind": "oops", "title": "BUG: unable to handle page fault", "excerpt": "..."}
    assert to_json(snaps, crashes=[crash])["status"] == "crash"
    assert to_json(snaps, status="error")["status"] == "error"
    assert to_json(snaps, paths=["a.zst", None])["snapshots"][0]["path"] == "a.zst"


def test_noisy_growth_alone_is_not_a_leak():
    snaps = series({NOISE: 5}, {NOISE: 1}, {NOISE: 9})
    assert to_json(snaps)["status"] == "ok"
    assert suspects(snaps)[0].monotonic is False


def test_diff_json_has_shrunk_and_totals():
    before, after = series({LEAK: 2, SHRINK: 4, STEADY: 3}, {LEAK: 9, STEADY: 1})
    out = diff_to_json(diff(before, after), timings={"parse_s": 0.1})
    assert out["status"] == "leak" and out["kernel"] is None and out["crashes"] == []
    assert [s["callsite"] for s in out["suspects"]] == ["hoard_stash_pages"]
    assert [(s["callsite"], s["growth_pages"], s["vanished"]) for s in out["shrunk"]] == [
        ("pipe_write", -4, True),
        ("alloc_large_system_hash", -2, False),
    ]
    assert out["totals"]["growth_pages"] == 1 and out["totals"]["stacks_vanished"] == 1
    assert out["timings"] == {"parse_s": 0.1}
