"""The page_owner parser: every header format, PFN lines or none, extra lines, show_stacks, bad input."""

from __future__ import annotations

import gzip
import io
import lzma
from pathlib import Path

import pytest
import zstandard

from pagelab.errors import InputError
from pagelab.pageowner.parse import (
    Parser,
    Record,
    StackCount,
    iter_items,
    iter_records,
    iter_show_stacks,
    parse_frame,
)


def text(fixtures: Path, name: str) -> bytes:
    return lzma.decompress((fixtures / name).read_bytes())


def parse_bytes(data: bytes, chunk: int | None = None, name: str = "t") -> tuple[list, object]:
    items: list = []
    p = Parser(items.append, name=name)
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
    return items, p.close()


# -- real dumps --------------------------------------------------------------------------------
def test_612_dump_counts_records_and_pages(fixtures):
    recs = list(iter_records(fixtures / "report_po612.txt.xz"))
    assert len(recs) == 1855
    assert sum(r.pages for r in recs) == sum(1 << r.order for r in recs) > len(recs)
    first = recs[0]
    assert (first.order, first.gfp_mask, first.gfp_flags) == (0, 0, ())
    assert (first.pid, first.tgid, first.comm, first.ts_ns, first.free_ts_ns) == (0, 0, "swapper", 171920592, None)
    assert (first.pfn, first.migratetype, first.block_migratetype) == (0x100, "Unmovable", "Unmovable")
    assert first.page_flags == "0x0(zone=0)"
    assert first.stack[0] == "register_early_stack+0x23/0x3e"  # frames without the leading space
    assert first.line == 1 and recs[1].line == 8


def test_61_dump_has_decimal_pfn_and_free_ts(fixtures):
    r = next(iter_records(fixtures / "report_po61.txt.xz"))
    assert (r.pid, r.tgid, r.comm, r.ts_ns, r.free_ts_ns, r.pfn) == (1, 1, "swapper/0", 443337601, 0, 256)


def test_identical_stacks_are_one_interned_tuple(fixtures):
    recs = list(iter_records(fixtures / "report_po612.txt.xz"))
    by_value: dict = {}
    for r in recs:
        assert by_value.setdefault(r.stack, r.stack) is r.stack
    assert len({id(r.stack) for r in recs}) == len(by_value)


def test_show_stacks_gives_pages_per_stack(fixtures):
    entries = list(iter_show_stacks(fixtures / "report_ss612.txt.xz"))
    assert len(entries) == 300
    assert sum(e.pages for e in entries) == 28726
    assert entries[0].pages == 2 and entries[0].key == "nr_base_pages"
    assert entries[0].stack[0] == "get_page_from_freelist+0x531/0x68c"


# -- formats not in the samples ------------------------------------------------------------------
def test_5_4_header_has_no_pid_ts_or_comm(fixtures):
    a, b = iter_records(fixtures / "parse_5_4.txt.xz")
    assert (a.pid, a.tgid, a.comm, a.ts_ns, a.free_ts_ns) == (None, None, None, None, None)
    assert (a.pfn, a.migratetype, a.page_flags) == (4096, "Movable", "0x1fffc000000014(uptodate|lru)")
    assert a.extra == ("Page has been migrated, last migrate reason: compaction",)
    assert (b.order, b.pages, b.gfp_mask) == (3, 8, 0x52DC0)
    assert b.gfp_flags == ("GFP_KERNEL", "__GFP_NOWARN", "__GFP_NORETRY", "__GFP_COMP", "__GFP_ZERO")


def test_pre_stripped_input_has_no_pfn_fields(fixtures):
    recs = list(iter_records(fixtures / "parse_5_8_stripped.txt.xz"))
    assert [r.order for r in recs] == [0, 1, 0]
    assert all(r.pfn is None and r.migratetype is None for r in recs)
    assert recs[1].stack[-1] == "vfs_mknod+0x10a/0x1a0"
    assert recs[2].gfp_flags == () and recs[2].stack[0].startswith("register_early_stack")


def test_5_11_header_has_pid_and_ts(fixtures):
    r = next(iter_records(fixtures / "parse_5_11.txt.xz"))
    assert (r.pid, r.tgid, r.comm, r.ts_ns, r.free_ts_ns) == (731, None, None, 2730661381, None)


def test_5_15_header_has_free_ts_without_tgid(fixtures):
    a, b = iter_records(fixtures / "parse_5_15.txt.xz")
    assert (a.pid, a.tgid, a.ts_ns, a.free_ts_ns) == (48, None, 903337601, 902000000)
    assert b.free_ts_ns == 0 and b.pfn == 12346


def test_6_19_header_without_pfn_lines(fixtures):
    recs = list(iter_records(fixtures / "parse_6_19_stripped.txt.xz"))
    assert [(r.pid, r.comm, r.pfn) for r in recs] == [(1, "swapper/0", None)] * 2 + [(0, "swapper", None)]


def test_comm_with_spaces_commas_and_parentheses(fixtures):
    comms = [r.comm for r in iter_records(fixtures / "parse_6_1_memcg.txt.xz")]
    assert comms == ["my (odd) app", "x), ts 9 ns", "kworker/0:1H", "a, b: c/d"]


def test_memcg_and_migrate_lines_are_extra_lines_not_frames(fixtures):
    recs = list(iter_records(fixtures / "parse_6_1_memcg.txt.xz"))
    assert recs[0].extra == ("Charged (via objcg) to memcg leaky.slice",)
    assert recs[1].extra == ("Charged to offline memcg gone",)
    assert recs[2].extra == ("Slab cache page",)
    assert recs[3].extra == ("Page has been migrated, last migrate reason: compaction", "Charged to memcg user.slice")
    assert all(not f.startswith(("Charged", "Slab", "Page")) for r in recs for f in r.stack)


def test_module_frames_keep_their_module_suffix(fixtures):
    r = next(iter_records(fixtures / "parse_6_1_memcg.txt.xz"))
    assert "hoard_stash_pages+0x1c/0x54 [hoard]" in r.stack
    assert parse_frame("hoard_stash_pages+0x1c/0x54 [hoard]") == ("hoard_stash_pages", "hoard")
    assert parse_frame("ksys_write+0x6d/0x9a") == ("ksys_write", None)
    assert parse_frame("hoard_write+0x3e/0x70 [hoard 5a3c0f1e2d]") == ("hoard_write", "hoard")
    assert parse_frame("0xffffffff81234567") == ("0xffffffff81234567", None)


def test_crlf_input_parses_like_lf(fixtures):
    lf = list(iter_records(fixtures / "parse_6_1_memcg.txt.xz"))
    crlf = list(iter_records(fixtures / "parse_crlf.txt.xz"))
    fields = [[(r.comm, r.stack, r.extra, r.page_flags) for r in recs] for recs in (lf, crlf)]
    assert fields[0] == fields[1]


def test_crlf_split_between_chunks(fixtures):
    data = text(fixtures, "parse_crlf.txt.xz")
    whole, _ = parse_bytes(data)
    for chunk in (1, 2, 7, 64):
        items, _ = parse_bytes(data, chunk)
        assert items == whole


def test_stack_count_show_stacks(fixtures):
    items, summary = parse_bytes(text(fixtures, "parse_stack_count.txt.xz"))
    assert [(e.key, e.count, e.pages) for e in items] == [("stack_count", 3, 3), ("stack_count", 10, 10)]
    assert summary.kind == "show_stacks"
    assert any("stack_count" in w for w in summary.warnings)


def test_last_record_without_blank_line_is_counted_with_a_warning(fixtures):
    items, summary = parse_bytes(text(fixtures, "parse_truncated.txt.xz"))
    assert [r.order for r in items] == [0, 1]
    assert items[1].stack[-1] == "entry_SYSCALL_64_after_hwframe+0x4b/0x53"
    assert any("no closing blank line" in w for w in summary.warnings)


def test_record_missing_its_blank_separator_still_counts():
    data = (
        b"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (a), ts 1 ns\n a+0x1/0x2\n"
        b"Page allocated via order 1, mask 0xcc0(GFP_KERNEL), pid 2, tgid 2 (b), ts 2 ns\n b+0x1/0x2\n\n"
    )
    items, _ = parse_bytes(data)
    assert [(r.pid, r.stack, r.line) for r in items] == [(1, ("a+0x1/0x2",), 1), (2, ("b+0x1/0x2",), 3)]


def test_chunk_boundaries_do_not_change_the_result(fixtures):
    data = text(fixtures, "parse_6_1_memcg.txt.xz") + text(fixtures, "parse_6_1_memcg.txt.xz")
    whole, _ = parse_bytes(data)
    for chunk in (1, 3, 50, 333):
        assert parse_bytes(data, chunk)[0] == whole


def test_extra_blank_lines_between_records(fixtures):
    data = text(fixtures, "parse_5_11.txt.xz").replace(b"\n\n", b"\n\n\n\n")
    items, _ = parse_bytes(b"\n\n" + data)
    assert [r.pid for r in items] == [731, 1]
    assert items[0].line == 3


# -- sources ---------------------------------------------------------------------------------------
def test_gzip_and_zstd_inputs_are_detected_by_content(fixtures, tmp_path):
    raw = text(fixtures, "parse_5_15.txt.xz")
    (tmp_path / "a.dump").write_bytes(gzip.compress(raw))
    (tmp_path / "b").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (tmp_path / "c.txt").write_bytes(raw)
    results = [[r.ts_ns for r in iter_records(tmp_path / n)] for n in ("a.dump", "b", "c.txt")]
    assert results == [[903337601, 903337999]] * 3


def test_binary_stream_input(fixtures):
    items = list(iter_items(io.BytesIO(text(fixtures, "parse_ss_hoard.txt.xz")), name="live"))
    assert all(isinstance(i, StackCount) for i in items) and [i.pages for i in items] == [7, 100]


def test_iter_records_refuses_show_stacks(fixtures):
    with pytest.raises(InputError, match="show stacks file; expected a page_owner dump"):
        list(iter_records(fixtures / "report_ss612.txt.xz"))


def test_iter_show_stacks_refuses_a_dump(fixtures):
    with pytest.raises(InputError, match="expected a show_stacks file"):
        list(iter_show_stacks(fixtures / "parse_5_11.txt.xz"))


# -- bad input: one InputError naming file and line ----------------------------------------------
@pytest.mark.parametrize(
    ("data", "line", "expect"),
    [
        (b"hello world\nthis is not a dump\n", 1, "not a page_owner dump"),
        (b"", None, "empty input"),
        (b"\n\n\n", None, "empty input"),
        (b"Page allocated via order x, mask 0xcc0(GFP_KERNEL)\n a+0x1/0x2\n\n", 1, "order is 'x'"),
        (b"Page allocated via order 0, mask zz(GFP_KERNEL)\n a+0x1/0x2\n\n", 1, "not hex"),
        (b"Page allocated via order 0 mask 0xcc0()\n a\n\n", 1, "no ', mask '"),
        (b"Page allocated via order 99, mask 0x0()\n a\n\n", 1, "out of range"),
        (b"Page allocated via order 0, mask 0x0(), pid 1, tgid 1 comm, ts 1 ns\n a\n\n", 1, "COMM"),
        (b"Page allocated via order 0, mask 0x0(), pid x1, ts 1 ns\n a\n\n", 1, "pid is 'x1'"),
        (b"Page allocated via order 0, mask 0x0() bogus\n a\n\n", 1, "unexpected text"),
        (b"Page allocated via order 0, mask 0x0()\n a\n\nrubbish\n a\n\n", 4, "record starts with 'rubbish'"),
        (b"Page allocated via order 0, mask 0x0()\nPFN 0xzz type A Block 0 type A Flags 0x0()\n\n", 2, "PFN is"),
        (b" a+0x1/0x2\nnr_base_pages: 1\n\n b\nnr_base_pages: lots\n\n", 5, "not a number"),
        (b" a+0x1/0x2\nnr_base_pages: 1\n\n b\n\n", 4, "expected 'nr_base_pages: N'"),
        (b" a+0x1/0x2\nhandle: 5\n\n", 2, "counts no pages; give it as --stacks FILE"),
        (b"handle: 5\nnr_base_pages: 3\n\n", 1, "show_handles"),
        (b" a\nnr_base_pages: 1\n\nPage allocated via order 0, mask 0x0()\n a\nnr_base_pages: 1\n\n", 4, "starts with"),
        (b"Page allocated via order 0, mask 0x0()\n a\n\x00\x01\x02\n\n", 3, "NUL byte"),
    ],
)
def test_bad_input_raises_one_clear_input_error(data, line, expect):
    with pytest.raises(InputError) as err:
        parse_bytes(data, name="dump.txt")
    assert expect in str(err.value)
    assert err.value.source == "dump.txt" and err.value.line == line
    assert "\n" not in str(err.value)


def test_bad_line_number_counts_across_chunks(fixtures):
    data = text(fixtures, "parse_5_15.txt.xz") * 3 + b"Page allocated via order 0, mask nothex()\n a\n\n"
    line = data.count(b"\n") - 2
    for chunk in (5, 100, None):
        with pytest.raises(InputError) as err:
            parse_bytes(data, chunk)
        assert err.value.line == line


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(iter_items(tmp_path / "nope"))
    with pytest.raises(InputError, match="is a directory"):
        list(iter_items(tmp_path))


def test_feed_after_close_is_a_programming_error():
    items: list[Record] = []
    p = Parser(items.append)
    p.feed(b"Page allocated via order 0, mask 0x0()\n a\n\n")
    assert p.close().items == 1
    with pytest.raises(ValueError):
        p.feed(b"x")


def test_a_live_stream_that_is_not_a_dump_fails_at_its_first_line():
    p = Parser(lambda item: None, name="ssh")
    with pytest.raises(InputError, match="ssh:1: not a page_owner dump") as err:
        p.feed(b"cat: can't open '/sys/kernel/debug/page_owner': No such file or directory\n")
    assert err.value.line == 1


def test_an_entry_without_blank_lines_for_a_mebibyte_is_refused():
    p = Parser(lambda item: None, name="big")
    p.feed(b"Page allocated via order 0, mask 0x0()\n")
    with pytest.raises(InputError, match="no blank line for"):
        for _ in range(20):
            p.feed(b" frame+0x1/0x2\n" * 5000)
