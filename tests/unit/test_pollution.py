"""Fragmentation culprits: pages placed across the movable line, ranked by stack, checked against the dump's text."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import pytest

from pagelab.cli import main
from pagelab.pageowner.parse import iter_records
from pagelab.pageowner.pollution import (
    PAGEBLOCK_ORDER,
    BlockMap,
    detect_pageblock_order,
    is_polluting,
    pageblock_order_of,
    scan,
)

_PFN = re.compile(r"^PFN (0x[0-9a-f]+|\d+) type (\S+) Block (\d+) type (\S+)", re.M)
_ORDER = re.compile(r"^Page allocated via order (\d+),")


def independent_culprits(text: str) -> dict[tuple[str, ...], tuple[int, set[int]]]:
    """Polluting pages and tainted blocks per stack, counted from the dump's text with regexes only."""
    out: dict[tuple[str, ...], tuple[int, set[int]]] = {}
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        m, p = _ORDER.match(lines[0]), _PFN.search(block)
        if m is None or p is None:
            continue
        mt, bmt = p.group(2), p.group(4)
        bad = (mt in ("Unmovable", "Reclaimable") and bmt == "Movable") or (
            mt == "Movable" and bmt in ("Unmovable", "Reclaimable")
        )
        if not bad:
            continue
        stack = tuple(line[1:] for line in lines[2:] if line.startswith(" "))
        pfn, block, pages = int(p.group(1), 0), int(p.group(3)), 1 << int(m.group(1))
        got_pages, blocks = out.get(stack, (0, set()))
        # The printed block, plus the next ones when the allocation is larger than a block.
        size = pfn // block if block else pages
        blocks |= {block + i for i in range(max(1, pages // max(size, 1)))}
        out[stack] = (got_pages + pages, blocks)
    return out


def dump(fixtures: Path, name: str) -> str:
    return lzma.decompress((fixtures / name).read_bytes()).decode()


def record(pfn: int, order: int, mt: str, bmt: str, stack: list[str], comm: str = "cat") -> str:
    head = f"Page allocated via order {order}, mask 0x140cca(GFP_HIGHUSER_MOVABLE), pid 7, tgid 7 ({comm}), ts 5 ns"
    pfn_line = f"PFN {pfn:#x} type {mt} Block {pfn >> 9} type {bmt} Flags 0x0(zone=1)"
    return "\n".join([head, pfn_line, *(f" {f}" for f in stack)]) + "\n\n"


def test_only_pages_across_the_movable_line_pollute() -> None:
    assert is_polluting("Unmovable", "Movable") and is_polluting("Reclaimable", "Movable")
    assert is_polluting("Movable", "Unmovable") and is_polluting("Movable", "Reclaimable")
    assert not is_polluting("Unmovable", "Reclaimable") and not is_polluting("Movable", "Movable")
    assert not is_polluting("HighAtomic", "Movable") and not is_polluting(None, "Movable")


@pytest.mark.parametrize(
    ("name", "order"),
    # po612 comes from our guest kernel (no CONFIG_HUGETLB_PAGE: MAX_PAGE_ORDER); the frag fixture from one with
    # huge pages (HUGETLB_PAGE_ORDER, 9 on x86-64).
    [("report_po612.txt.xz", 10), ("sort_po612.txt.xz", 10), ("parse_6_12_frag.txt.xz", PAGEBLOCK_ORDER)],
)
def test_the_pageblock_order_is_read_from_the_dump_and_fits_every_printed_block(
    fixtures: Path, name: str, order: int
) -> None:
    assert detect_pageblock_order(fixtures / name) == order
    bm = scan(fixtures / name)
    assert bm.order == order
    lines = _PFN.findall(dump(fixtures, name))
    assert lines and all(int(pfn, 0) >> order == int(block) for pfn, _, block, _ in lines)
    assert set(bm.blocks) == {int(block) for _, _, block, _ in lines}


def test_an_undecided_pageblock_order_is_none() -> None:
    assert pageblock_order_of(b"PFN 0x10 type Movable Block 0 type Movable Flags 0x0()\n") is None
    assert pageblock_order_of(b"no pfn lines") is None
    both = b"PFN 0x400 type Movable Block 1 type Movable F\nPFN 0x400 type Movable Block 2 type Movable F\n"
    assert pageblock_order_of(both) is None


@pytest.mark.parametrize(
    "name", ["parse_6_12_frag.txt.xz", "sort_po612.txt.xz", "report_po612.txt.xz", "sort_edge612.txt.xz"]
)
def test_the_ranking_matches_an_independent_count_of_the_dump(fixtures: Path, name: str) -> None:
    expected = independent_culprits(dump(fixtures, name))
    bm = scan(fixtures / name)
    got = {c.stack: (c.pages, c.blocks) for c in bm.culprits.values()}
    assert got == expected
    ranked = bm.ranked()
    assert [c.pages for c in ranked] == sorted((p for p, _ in expected.values()), reverse=True)


def test_an_allocation_above_pageblock_order_taints_every_block_it_covers(tmp_path: Path) -> None:
    text = record(0x40000, 10, "Unmovable", "Movable", ["get_page_from_freelist+0x1/0x2", "big_alloc+0x1/0x2"])
    text += record(0x40400, 0, "Movable", "Movable", ["get_page_from_freelist+0x1/0x2", "filemap_alloc+0x1/0x2"])
    (tmp_path / "d.txt").write_text(text)
    bm = scan(tmp_path / "d.txt")
    (c,) = bm.ranked()
    assert c.callsite == "big_alloc" and c.pages == 1024 and c.blocks == {0x200, 0x201}
    assert bm.blocks[0x200].foreign == bm.blocks[0x201].foreign == 512
    assert bm.blocks[0x202].pages == 1 and not bm.blocks[0x202].mixed
    assert bm.to_json()["mixed_blocks"] == 2  # type: ignore[index]


def test_records_without_pfn_lines_make_no_map(fixtures: Path) -> None:
    bm = BlockMap.from_records(iter_records(fixtures / "parse_5_8_stripped.txt.xz"))
    assert bm.records > 0 and bm.records_without_pfn == bm.records
    assert not bm.has_pfn and bm.to_json() is None


def test_report_by_pollution_prints_the_ranking_and_json_carries_it(fixtures: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    assert main(["report", str(fixtures / "parse_6_12_frag.txt.xz"), "--by", "pollution,comm", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Fragmentation culprits" in text and "alloc_inode" in text and "By comm" in text
    pol = json.loads(out.read_text())["pollution"]
    assert pol["pageblock_order"] == 9 and pol["pages"] == 6 and pol["mixed_blocks"] == 2
    top = pol["culprits"][0]
    assert (top["rank"], top["callsite"], top["pages"], top["blocks"]) == (1, "alloc_inode", 5, 1)
    assert top["directions"] == {"Unmovable in Movable": 5}


def test_report_by_pollution_honours_filters(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["report", str(fixtures / "parse_6_12_frag.txt.xz"), "--by", "pollution", "--filter", "comm=dd"]
    assert main([*args, "--json", str(out)]) == 0
    pol = json.loads(out.read_text())["pollution"]
    assert [c["callsite"] for c in pol["culprits"]] == ["shmem_alloc_folio"]


def test_report_by_pollution_on_stdin_is_a_usage_error(capsys) -> None:
    assert main(["report", "-", "--by", "pollution"]) == 2
    assert "--by pollution" in capsys.readouterr().err


def test_report_by_pollution_on_show_stacks_warns(fixtures: Path, capsys) -> None:
    assert main(["report", str(fixtures / "report_ss612.txt.xz"), "--by", "pollution"]) == 0
    assert "unavailable for show_stacks" in capsys.readouterr().err


def test_report_by_pollution_honours_older_than(tmp_path: Path) -> None:
    # One row (same stack, comm, order, types) with one old allocation and three young ones: only the old
    # one is at least 10 s old, so only its page pollutes.
    stack = ["get_page_from_freelist+0x1/0x2", "alloc_inode+0x1/0x2"]
    ages = [(0x40000, 1), (0x40001, 95), (0x40002, 96), (0x40003, 100)]
    text = "".join(
        record(pfn, 0, "Unmovable", "Movable", stack).replace("ts 5 ns", f"ts {s * 10**9} ns") for pfn, s in ages
    )
    (tmp_path / "d.txt").write_text(text)
    out = tmp_path / "r.json"
    assert (
        main(["report", str(tmp_path / "d.txt"), "--by", "pollution", "--older-than", "10s", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert data["total_pages"] == 1
    assert data["pollution"]["pages"] == 1 and data["pollution"]["culprits"][0]["pages"] == 1
