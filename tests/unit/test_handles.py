"""Handle-mode dumps resolved through a show_stacks_handles file: the bytes, the parser, the commands.

The handle-mode inputs here are made from real stack-mode dumps the way 7.3's mm/page_owner.c prints
them (``handle: N`` where the frames were, one handle per distinct stack); tests/e2e/test_kernels.py
compares a real 7.3 handle-mode read with a stack-mode read of the same guest.
"""

from __future__ import annotations

import io
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pagelab.errors import InputError
from pagelab.pageowner.handles import Resolver, load_stacks, parse_stacks
from pagelab.pageowner.parse import Parser, iter_items, iter_records

PAGELAB = [sys.executable, "-m", "pagelab"]
_FRAMES = re.compile(rb"((?:^ .*\n)+)", re.M)


def to_handle_mode(dump: bytes, stack_handle: bool = False) -> tuple[bytes, bytes, dict[bytes, int]]:
    """(handle-mode dump, show_stacks_handles text, frames → handle) for a stack-mode dump."""
    handles: dict[bytes, int] = {}

    def repl(m: re.Match[bytes]) -> bytes:
        frames = m.group(1)
        h = handles.setdefault(frames, 1000 + 7 * len(handles))
        return (frames if stack_handle else b"") + b"handle: %d\n" % h

    converted = _FRAMES.sub(repl, dump)
    stacks = b"".join(frames + b"handle: %d\n\n" % h for frames, h in handles.items())
    return converted, stacks, handles


@pytest.fixture(scope="module")
def dump612() -> bytes:
    return lzma.decompress((Path(__file__).parent.parent / "fixtures" / "report_po612.txt.xz").read_bytes())


def resolve(data: bytes, table: dict[int, bytes], chunk: int) -> tuple[bytes, Resolver]:
    r = Resolver(table)
    out = [r.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    out.append(r.close())
    return b"".join(out), r


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 30])
def test_resolving_a_handle_mode_dump_gives_the_stack_mode_bytes(dump612: bytes, chunk: int) -> None:
    data = dump612 if chunk > 1 else dump612[:20000].rsplit(b"\n\n", 1)[0] + b"\n\n"
    handle_mode, stacks, handles = to_handle_mode(data)
    assert b"handle: " in handle_mode and len(handle_mode) < len(data)
    table = parse_stacks(stacks, "show_stacks_handles")
    assert len(table) == len(handles)
    out, r = resolve(handle_mode, table, chunk)
    assert out == data and not r.unresolved and r.resolved == data.count(b"Page allocated via")


def test_stack_handle_mode_drops_the_handle_lines(dump612: bytes) -> None:
    both, stacks, _ = to_handle_mode(dump612, stack_handle=True)
    out, r = resolve(both, parse_stacks(stacks, "s"), 65536)
    assert out == dump612 and r.resolved == 0
    # Parsed without resolving: the same stacks, and every record knows its handle.
    recs = list(iter_records(io.BytesIO(both)))
    plain = list(iter_records(io.BytesIO(dump612)))
    assert [x.stack for x in recs] == [x.stack for x in plain] and all(x.handle for x in recs)
    assert [x.extra for x in recs] == [x.extra for x in plain]


def test_unknown_handles_keep_their_line_and_are_counted(dump612: bytes) -> None:
    handle_mode, stacks, handles = to_handle_mode(dump612)
    table = parse_stacks(stacks, "s")
    gone = next(iter(handles.values()))
    del table[gone]
    out, r = resolve(handle_mode, table, 1 << 20)
    assert r.unresolved[gone] == handle_mode.count(b"handle: %d\n" % gone) > 0
    assert b"handle: %d\n" % gone in out and "keep their 'handle: N' line" in (r.warning("d") or "")
    # The parser takes them (no stack, the handle kept) and says so.
    items: list = []
    p = Parser(items.append, name="d", handles=True)
    p.feed(out)
    summary = p.close()
    lost = [x for x in items if x.stack == ()]
    assert lost and {x.handle for x in lost} == {gone} and "1 handle(s) have no stack" in summary.warnings[-1]


def test_fetch_supplies_unknown_handles_once_with_the_record_pfn(dump612: bytes) -> None:
    handle_mode, stacks, handles = to_handle_mode(dump612)
    table = parse_stacks(stacks, "s")
    frames, gone = next(iter(handles.items()))
    del table[gone]
    asked: list[tuple[int, int | None]] = []

    def fetch(handle: int, pfn: int | None) -> bytes | None:
        asked.append((handle, pfn))
        return frames

    r = Resolver(table, fetch)
    out = r.feed(handle_mode) + r.close()
    assert out == dump612 and r.fetched == 1 and len(asked) == 1
    first = re.search(rb"\nPFN (0x[0-9a-f]+) [^\n]*\nhandle: %d\n" % gone, handle_mode)
    assert first is not None and asked[0] == (gone, int(first.group(1), 16))


def test_a_handle_mode_dump_without_stacks_is_refused_with_the_way_out(dump612: bytes) -> None:
    handle_mode, _, _ = to_handle_mode(dump612)
    with pytest.raises(InputError, match=r"t:3: 'handle: 1000' where the stack should be.*--stacks FILE"):
        Parser(lambda _: None, name="t").feed(handle_mode)


def test_show_handles_and_show_stacks_handles_with_counts() -> None:
    show_handles = b"handle: 5\nnr_base_pages: 3\n\nhandle: 9\nnr_base_pages: 12\n\n"
    table = {5: b" a+0x1/0x2\n b+0x3/0x4\n", 9: b" c+0x5/0x6 [mod]\n"}
    with pytest.raises(InputError, match="show_handles entry"):
        list(iter_items(io.BytesIO(show_handles)))
    items = list(iter_items(io.BytesIO(show_handles), stacks=table))
    assert [(x.stack, x.pages) for x in items] == [(("a+0x1/0x2", "b+0x3/0x4"), 3), (("c+0x5/0x6 [mod]",), 12)]
    # Frames, handle and page count (show_stacks_handles with nr_base_pages): a show_stacks with handles,
    # and a stacks table too.
    counted = b" a+0x1/0x2\nhandle: 5\nnr_base_pages: 3\n\n"
    (item,) = list(iter_items(io.BytesIO(counted)))
    assert item.stack == ("a+0x1/0x2",) and item.handle == 5 and item.pages == 3
    assert parse_stacks(counted, "s") == {5: b" a+0x1/0x2\n"}


@pytest.mark.parametrize(
    ("data", "line", "expect"),
    [
        (b" a\nnr_base_pages: 3\n\n", 2, "where 'handle: N' was due"),
        (b"handle: 5\nnr_base_pages: 3\n\n", 1, "without frames (a show_handles file?)"),
        (b" a\nhandle: x\n\n", 2, "not a number"),
        (b" a\nhandle: 5\n\n b\nhandle: 6\nbogus\n\n", 6, "after the handle"),
        (b"Page allocated via order 0, mask 0x0()\nPFN 0x1 type A\nhandle: 5\n\n", 1, "this is a page_owner dump"),
        (b"\n\n", None, "no stacks"),
    ],
)
def test_bad_stacks_files_name_the_line(data: bytes, line: int | None, expect: str) -> None:
    with pytest.raises(InputError) as err:
        parse_stacks(data, "st.txt")
    assert expect in str(err.value) and err.value.line == line


def test_report_sort_and_diff_take_stacks(tmp_path: Path, dump612: bytes) -> None:
    handle_mode, stacks, _ = to_handle_mode(dump612)
    (tmp_path / "s").mkdir()
    (tmp_path / "h").mkdir()
    (tmp_path / "s" / "d.txt").write_bytes(dump612)
    (tmp_path / "h" / "d.txt").write_bytes(handle_mode)
    (tmp_path / "st.txt").write_bytes(stacks)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PAGELAB, *args], capture_output=True, text=True, cwd=tmp_path, check=False)

    ref = run("report", "s/d.txt", "--json", "r1.json", "--top", "5")
    got = run("report", "h/d.txt", "--stacks", "st.txt", "--json", "r2.json", "--top", "5")
    assert ref.returncode == got.returncode == 0, got.stderr
    j1 = json.loads((tmp_path / "r1.json").read_text().replace("s/d.txt", "X"))
    j2 = json.loads((tmp_path / "r2.json").read_text().replace("h/d.txt", "X"))
    assert j1 == j2 and ref.stdout.replace("s/d.txt", "X") == got.stdout.replace("h/d.txt", "X")
    # The pageblock map (--by pollution, --html) reads the dump a second time, through the same stacks.
    assert run("report", "h/d.txt", "--stacks", "st.txt", "--by", "pollution").returncode == 0
    refused = run("report", "h/d.txt")
    assert refused.returncode == 2 and "--stacks FILE" in refused.stderr and refused.stderr.count("\n") == 1
    assert run("sort", "s/d.txt", "o1.txt").returncode == 0
    assert run("sort", "--stacks", "st.txt", "h/d.txt", "o2.txt").returncode == 0
    assert (tmp_path / "o1.txt").read_bytes() == (tmp_path / "o2.txt").read_bytes()
    d = run("diff", "s/d.txt", "h/d.txt", "--stacks", "st.txt", "--json", "d.json")
    assert d.returncode == 0, d.stderr
    totals = json.loads((tmp_path / "d.json").read_text())["totals"]
    assert totals["growth_pages"] == totals["stacks_new"] == totals["stacks_vanished"] == 0
    assert totals["before_pages"] == totals["after_pages"] > 0
    bad = run("report", "h/d.txt", "--stacks", "s/d.txt")
    assert bad.returncode == 2 and "s/d.txt:" in bad.stderr and "show_stacks_handles" in bad.stderr


def test_load_stacks_reads_compressed_files(tmp_path: Path) -> None:
    p = tmp_path / "st.xz"
    p.write_bytes(lzma.compress(b" a\nhandle: 1\n\n"))
    assert load_stacks(p) == {1: b" a\n"}


def test_a_stack_handle_record_teaches_the_stack_of_an_unlisted_handle(dump612: bytes) -> None:
    # What po-read -s prints for a handle show_stacks_handles lacks: its first record with frames and
    # handle, the later ones short.
    handle_mode, stacks, handles = to_handle_mode(dump612)
    frames, gone = max(handles.items(), key=lambda kv: handle_mode.count(b"handle: %d\n" % kv[1]))
    assert handle_mode.count(b"handle: %d\n" % gone) > 1
    first = handle_mode.index(b"handle: %d\n" % gone)
    taught = handle_mode[:first] + frames + handle_mode[first:]
    table = parse_stacks(stacks, "s")
    del table[gone]
    for chunk in (5, 1 << 20):
        out, r = resolve(taught, table, chunk)
        assert out == dump612 and not r.unresolved and r.learned == 1


# -- a real 7.3.4 guest (tests/fixtures/po73_*: one `po-read -m stack_handle 0` read and the three
# page_owner_stacks files, read right after it on a quiet, freshly booted 2-vCPU guest) -------------------
def _fixture(name: str) -> bytes:
    return lzma.decompress((Path(__file__).parent.parent / "fixtures" / name).read_bytes())


@pytest.fixture(scope="module")
def real73() -> dict[str, bytes]:
    names = ("stack_handle", "show_stacks_handles", "show_handles", "show_stacks")
    return {n: _fixture(f"po73_{n}.txt.xz") for n in names}


def test_a_real_7_3_stack_handle_dump_parses_with_every_handle(real73: dict[str, bytes]) -> None:
    recs = list(iter_records(io.BytesIO(real73["stack_handle"])))
    assert len(recs) == real73["stack_handle"].count(b"Page allocated via") > 10_000
    assert all(r.handle and r.stack and r.pfn is not None and r.free_ts_ns is None for r in recs)
    assert not any(x.startswith("handle:") for r in recs for x in r.extra)
    # One handle, one stack.
    by_handle: dict[int, set] = {}
    for r in recs:
        by_handle.setdefault(r.handle or 0, set()).add(r.stack)
    assert all(len(s) == 1 for s in by_handle.values())


def test_a_real_7_3_handle_dump_resolves_to_the_stack_text(real73: dict[str, bytes]) -> None:
    both = real73["stack_handle"]
    table = parse_stacks(real73["show_stacks_handles"], "show_stacks_handles")
    stack_text = re.sub(rb"(?m)^handle: \d+\n", b"", both)
    records = both.split(b"\n\n")[:-1]
    handles = [int(re.search(rb"\nhandle: (\d+)$", rec).group(1)) for rec in records]  # type: ignore[union-attr]
    unlisted = {h for h in handles if h not in table}
    early = {h for rec, h in zip(records, handles, strict=True) if b"\n register_early_stack+" in rec}
    assert len(early) == 1 and early <= unlisted  # init_page_owner's stack is never listed
    # mode=handle as the kernel prints it: the unlisted handles stay unresolved...
    out, r = resolve(re.sub(rb"(?m)^ .*\n", b"", both), table, 1 << 20)
    assert set(r.unresolved) == unlisted
    # ...and as po-read -s prints it (each unlisted handle's first record in stack_handle form) all resolve.
    seen: set[int] = set()
    taught = []
    for rec, h in zip(records, handles, strict=True):
        keep = h in unlisted and h not in seen
        seen.add(h)
        taught.append(rec if keep else re.sub(rb"(?m)^ .*\n", b"", rec + b"\n")[:-1])
    out, r = resolve(b"\n\n".join(taught) + b"\n\n", table, 65536)
    assert out == stack_text and not r.unresolved and r.learned == len(unlisted)


def test_real_7_3_show_handles_resolve_to_show_stacks(real73: dict[str, bytes]) -> None:
    table = parse_stacks(real73["show_stacks_handles"], "show_stacks_handles")
    with pytest.raises(InputError, match="show_handles entry"):
        list(iter_items(io.BytesIO(real73["show_handles"])))
    resolved = list(iter_items(io.BytesIO(real73["show_handles"]), stacks=table))
    direct = list(iter_items(io.BytesIO(real73["show_stacks"])))
    # Read one after the other on a quiet guest: the same stacks, the same page counts but for a few.
    assert len({x.stack for x in resolved} & {x.stack for x in direct}) >= 0.95 * len(direct)
    same = {x.stack: x.pages for x in resolved}.items() & {x.stack: x.pages for x in direct}.items()
    assert len(same) >= 0.8 * len(direct)  # measured: 134 of 160 (the cats ran while the guest's shell ran)
    total_r, total_d = sum(x.pages for x in resolved), sum(x.pages for x in direct)
    assert abs(total_r - total_d) <= 0.01 * total_d
    with pytest.raises(InputError, match="give it as --stacks FILE"):
        list(iter_items(io.BytesIO(real73["show_stacks_handles"])))


def test_7x_slab_and_memcg_lines_follow_the_handle_and_stay_extra_lines() -> None:
    # mm/page_owner.c (7.3) print_page_owner: header, PFN, stack or handle, migrate reason, then
    # print_page_owner_memcg: "Slab cache page" (and no Charged line) for slab pages, else the memcg.
    head = "Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (init), ts 5 ns\n"
    pfn = "PFN 0x{:x} type Unmovable Block 0 type Unmovable Flags 0x200(slab|zone=1)\n"
    dump = (
        head + pfn.format(1) + "handle: 7\nSlab cache page\n\n"
        + head + pfn.format(2) + "handle: 7\nPage has been migrated, last migrate reason: compaction\n"
        + "Charged (via objcg) to offline memcg leaky\n\n"
    ).encode()  # fmt: skip
    a, b = list(iter_records(io.BytesIO(dump), stacks={7: b" kmem_cache_alloc+0x1/0x2\n"}))
    assert a.stack == b.stack == ("kmem_cache_alloc+0x1/0x2",) and a.handle is None
    assert a.extra == ("Slab cache page",)
    assert b.extra == (
        "Page has been migrated, last migrate reason: compaction",
        "Charged (via objcg) to offline memcg leaky",
    )


def test_a_stacks_file_of_another_boot_is_refused_when_a_record_prints_other_frames(
    tmp_path: Path, dump612: bytes, real73: dict[str, bytes]
) -> None:
    # Same boot (a real 7.3 read and its show_stacks_handles): every printed stack matches the table.
    table = parse_stacks(real73["show_stacks_handles"], "show_stacks_handles")
    out, _ = resolve(real73["stack_handle"], table, 65536)
    assert out == re.sub(rb"(?m)^handle: \d+\n", b"", real73["stack_handle"])
    # Another boot: the same handle numbers name other stacks.
    both, stacks, handles = to_handle_mode(dump612, stack_handle=True)
    numbers = list(handles.values())
    shifted = {numbers[i]: numbers[(i + 1) % len(numbers)] for i in range(len(numbers))}
    other = b"".join(frames + b"handle: %d\n\n" % shifted[h] for frames, h in handles.items())
    (tmp_path / "d.txt").write_bytes(both)
    (tmp_path / "st.txt").write_bytes(other)
    res = subprocess.run(
        [*PAGELAB, "report", "d.txt", "--stacks", "st.txt"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "d.txt" in res.stderr and "stacks file is from another boot" in res.stderr
    (tmp_path / "st.txt").write_bytes(stacks)
    res = subprocess.run(
        [*PAGELAB, "report", "d.txt", "--stacks", "st.txt"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.returncode == 0, res.stderr
