"""Snapshot analysis: callsite, module, allocator class, group-by views, filters, fragmentation."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from pagelab.errors import UsageError
from pagelab.pageowner import analyse
from pagelab.pageowner.analyse import (
    ALLOCATOR_FRAMES,
    SnapshotBuilder,
    allocator_class,
    callsite,
    identity,
    is_allocator_frame,
    load_snapshot,
    module_of,
)

SHMEM_612 = (
    "get_page_from_freelist+0x531/0x68c",
    "__alloc_pages_noprof+0xfd/0x11a",
    "__folio_alloc_noprof+0x9/0x31",
    "shmem_get_folio_gfp.constprop.0.isra.0+0x15a/0x52f",
    "shmem_write_begin+0x53/0x64",
)
SLAB_612 = (
    "get_page_from_freelist+0x531/0x68c",
    "__alloc_pages_noprof+0xfd/0x11a",
    "alloc_slab_page+0x15/0x33",
    "allocate_slab+0x59/0x119",
    "__slab_alloc_node.constprop.0+0x11d/0x1a4",
    "slab_alloc_node.isra.0+0x11/0x5b",
    "kmem_cache_alloc_noprof+0xf/0x10",
    "mm_alloc+0x15/0x34",
    "poking_init+0x10/0x79",
)
HOARD = (
    "get_page_from_freelist+0x531/0x68c",
    "__alloc_pages_noprof+0xfd/0x11a",
    "alloc_pages_noprof+0x48/0x90",
    "hoard_stash_pages+0x1c/0x54 [hoard]",
    "hoard_write+0x3e/0x70 [hoard]",
    "vfs_write+0xe6/0x143",
)


@pytest.fixture(scope="module")
def po612():
    return load_snapshot(Path(__file__).parent.parent / "fixtures" / "report_po612.txt.xz")


# -- stack functions -------------------------------------------------------------------------------
def test_callsite_is_first_frame_outside_allocator_internals():
    assert callsite(SHMEM_612) == "shmem_get_folio_gfp.constprop.0.isra.0"
    assert callsite(SLAB_612) == "mm_alloc"
    assert callsite(HOARD) == "hoard_stash_pages"
    assert callsite(()) == "(no stack)"


def test_allocator_frames_are_data_and_ignore_compiler_suffixes():
    assert isinstance(ALLOCATOR_FRAMES, tuple) and "get_page_from_freelist" in ALLOCATOR_FRAMES
    assert is_allocator_frame("__slab_alloc_node.constprop.0+0x11d/0x1a4")
    assert is_allocator_frame("__vmalloc_node_range_noprof+0x3a/0x90")
    assert not is_allocator_frame("copy_process+0x285/0x1648")


def test_stack_of_only_allocator_frames_uses_its_last_frame():
    assert callsite(SLAB_612[:5]) == "__slab_alloc_node.constprop.0"


def test_module_is_the_first_module_frame():
    assert module_of(HOARD) == "hoard"
    assert module_of(SHMEM_612) is None


def test_allocator_classes():
    assert allocator_class(SHMEM_612) == "page cache"
    assert allocator_class(SLAB_612) == "slab"
    assert allocator_class(("register_early_stack+0x23/0x3e", "init_page_owner+0x2e/0x257")) == "early"
    assert allocator_class(("get_page_from_freelist+0x1/0x2", "__vmalloc_area_node+0x1/0x2", "x+0x1")) == "vmalloc"
    assert allocator_class(("__alloc_pages+0x1/0x2", "do_anonymous_page+0x6a/0x3a0")) == "anonymous"
    assert allocator_class(("__alloc_pages+0x1/0x2", "__pte_alloc+0x1/0x2", "__handle_mm_fault+0x1")) == "other"
    assert allocator_class(HOARD) == "other"


def test_identity_is_frames_from_the_callsite_down():
    assert identity(HOARD) == HOARD[3:]
    assert identity(SLAB_612) == SLAB_612[7:]


# -- snapshots of real dumps -----------------------------------------------------------------------
def test_dump_snapshot_totals(po612):
    # Counted independently: grep -c '^Page allocated' = 1855; the sum of 2**order over them = 2212.
    assert (po612.kind, po612.label, po612.records) == ("dump", "report_po612", 1855)
    assert po612.total_pages == 2212
    assert len(po612.stacks) == 297
    top = po612.ranked()[0]
    assert top.pages >= po612.ranked()[1].pages


def test_groups_add_up_to_the_total(po612):
    for key in ("callsite", "module", "class", "comm", "pid", "tgid", "order", "migratetype"):
        groups = po612.group(key)
        assert sum(g.pages for g in groups) == po612.total_pages, key
        assert [g.pages for g in groups] == sorted((g.pages for g in groups), reverse=True)


def test_group_by_gfp_counts_each_flag(po612):
    gfp = {g.key: g.pages for g in po612.group("gfp")}
    assert gfp["(none)"] == sum(pages for row, (_, pages) in po612.rows.items() if not row[5]) > 0
    assert gfp["__GFP_COMP"] == sum(pages for row, (_, pages) in po612.rows.items() if "__GFP_COMP" in row[5])
    assert "__GFP_COMP" in gfp and "GFP_HIGHUSER_MOVABLE" in gfp


def test_group_by_order_and_comm(po612):
    orders = {g.key: g.records for g in po612.group("order")}
    assert set(orders) <= {str(i) for i in range(11)} and orders["0"] > 0
    comms = {g.key: g.pages for g in po612.group("comm")}
    assert comms["dd"] == sum(pages for row, (_, pages) in po612.rows.items() if row[3] == "dd") > 0


def test_unknown_view_is_a_usage_error(po612):
    with pytest.raises(UsageError, match="unknown view"):
        po612.group("colour")
    assert analyse.parse_views(["all"]) == list(analyse.GROUP_KEYS)
    assert analyse.parse_views(["callsite,comm", "allocator"]) == ["callsite", "comm", "class"]


def test_snapshot_builder_chunks_match_load(fixtures):
    data = lzma.decompress((fixtures / "report_po61.txt.xz").read_bytes())
    b = SnapshotBuilder(label="x", source="live")
    for i in range(0, len(data), 4093):
        b.feed(data[i : i + 4093])
    snap = b.finish()
    ref = load_snapshot(fixtures / "report_po61.txt.xz")
    assert snap.rows == ref.rows and snap.total_pages == ref.total_pages
    assert snap.bytes_read == len(data)


# -- filters ----------------------------------------------------------------------------------------
def test_filter_by_comm_and_pid(po612):
    dd = po612.filtered(["comm=dd"])
    assert dd.group("comm")[0].key == "dd" and len(dd.group("comm")) == 1
    assert 0 < dd.total_pages < po612.total_pages
    pid = dd.group("pid")[0].key
    assert po612.filtered([f"pid={pid}"]).total_pages >= dd.total_pages
    rest = po612.filtered(["comm!=dd"])
    assert rest.total_pages + dd.total_pages == po612.total_pages


def test_filtered_snapshots_keep_the_timestamps_of_their_rows(po612, fixtures, capsys):
    # --filter … --by age (and --older-than) need each kept record's ts, pointing at its kept row.
    dd = po612.filtered(["comm=dd"])
    assert dd.allocs is not None and len(dd.allocs) == dd.records and dd.allocs.pages() == dd.total_pages
    before = list(po612.rows)
    row_of = {
        (po, ts): before[r] for po, ts, r in zip(po612.allocs.pfn_order, po612.allocs.ts, po612.allocs.row, strict=True)
    }
    after = list(dd.rows)
    assert all(
        row_of[(po, ts)] == after[r] for po, ts, r in zip(dd.allocs.pfn_order, dd.allocs.ts, dd.allocs.row, strict=True)
    )
    assert sum(g.pages for g in dd.group("age")) == dd.total_pages
    from pagelab.cli import main

    assert main(["report", str(fixtures / "report_po612.txt.xz"), "--filter", "comm=dd", "--by", "age"]) == 0
    captured = capsys.readouterr()
    assert "By age" in captured.out and "unavailable" not in captured.err


def test_filter_by_callsite_substring_and_gfp_flag(po612):
    shmem = po612.filtered(["callsite=shmem_get_folio"])
    assert {st.callsite for st in shmem.stacks.values()} == {"shmem_get_folio_gfp.constprop.0.isra.0"}
    comp = po612.filtered(["gfp=__GFP_COMP"])
    assert all("__GFP_COMP" in row[5] for row in comp.rows)
    both = po612.filtered(["gfp=__GFP_COMP", "callsite=shmem_get_folio"])
    assert 0 < both.total_pages <= min(comp.total_pages, shmem.total_pages)
    assert both.filters == ("gfp=__GFP_COMP", "callsite=shmem_get_folio")


def test_filter_by_module(fixtures):
    snap = load_snapshot(fixtures / "parse_6_1_memcg.txt.xz")
    hoard = snap.filtered(["module=hoard"])
    assert (hoard.records, hoard.total_pages) == (2, 2)
    assert snap.filtered(["module=vmlinux"]).total_pages == snap.total_pages - 2


@pytest.mark.parametrize(
    ("expr", "match"),
    [("comm", "expected KEY=VALUE"), ("colour=red", "unknown key"), ("pid=abc", "takes numbers"), ("pid=", "KEY")],
)
def test_bad_filters_are_usage_errors(po612, expr, match):
    with pytest.raises(UsageError, match=match):
        po612.filtered([expr])


# -- show_stacks and fragmentation -----------------------------------------------------------------
def test_show_stacks_snapshot_has_no_per_record_views(fixtures):
    ss = load_snapshot(fixtures / "report_ss612.txt.xz")
    assert (ss.kind, ss.records, ss.total_pages) == ("show_stacks", None, 28726)
    assert ss.available_keys() == analyse.STACK_KEYS
    with pytest.raises(UsageError, match="no per-record fields"):
        ss.group("comm")
    with pytest.raises(UsageError, match="no per-record fields"):
        ss.filtered(["pid=1"])
    assert ss.filtered(["class=slab"]).total_pages == sum(g.pages for g in ss.group("class") if g.key == "slab")
    assert ss.fragmentation() is None


def test_fragmentation_counts_pages_in_another_migratetype_block(fixtures):
    frag = load_snapshot(fixtures / "parse_6_12_frag.txt.xz").fragmentation()
    assert (frag.pages, frag.records, frag.total_pages) == (6, 3, 7)
    assert frag.pairs == [("Unmovable", "Movable", 5), ("Movable", "Unmovable", 1)]


def test_fragmentation_unavailable_without_pfn_lines(fixtures):
    assert load_snapshot(fixtures / "parse_6_19_stripped.txt.xz").fragmentation() is None


def test_dump_and_show_stacks_of_one_guest_print_the_same_frames(po612, fixtures):
    """The finding behind analyse.identity: po612 and ss612 share their frame lists exactly."""
    ss = load_snapshot(fixtures / "report_ss612.txt.xz")
    common = po612.stacks.keys() & ss.stacks.keys()
    assert len(common) == 294
    assert {s[0].partition("+")[0] for s in ss.stacks} == {"get_page_from_freelist", "register_dummy_stack"}


def test_default_label_strips_dump_suffixes():
    assert analyse.default_label("/x/03-after.page_owner.zst") == "03-after"
    assert analyse.default_label("po612.txt.xz") == "po612"
    assert analyse.default_label("-") == "stdin"
