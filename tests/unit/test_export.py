"""Exports: report JSON in the docs/formats.md shape, per-stack CSV, flame-graph folded stacks."""

from __future__ import annotations

import csv
import io
import json

import pytest

from pagelab.errors import UsageError
from pagelab.pageowner.analyse import load_snapshot
from pagelab.pageowner.export import folded_lines, open_output, report_json, write_csv, write_json


@pytest.fixture
def memcg(fixtures):
    return load_snapshot(fixtures / "parse_6_1_memcg.txt.xz")


def test_report_json_shape(memcg):
    out = report_json(memcg)
    assert set(out) >= {"source", "records", "total_pages", "stacks", "groups"}
    assert (out["records"], out["total_pages"]) == (4, 5)
    first = out["stacks"][0]
    assert set(first) >= {"pages", "records", "callsite", "module", "frames"}
    assert [s["pages"] for s in out["stacks"]] == sorted((s["pages"] for s in out["stacks"]), reverse=True)
    hoard = next(s for s in out["stacks"] if s["module"] == "hoard")
    assert hoard["callsite"] == "hoard_stash_pages" and hoard["records"] == 2
    assert "hoard_stash_pages+0x1c/0x54 [hoard]" in hoard["frames"]
    assert all(not f.startswith(" ") for s in out["stacks"] for f in s["frames"])
    assert out["groups"]["comm"][0] == {"key": "kworker/0:1H", "pages": 2, "records": 1}
    assert set(out["groups"]) == {"callsite", "module", "class", "comm", "pid", "tgid", "order", "gfp", "migratetype"}


def test_report_json_of_show_stacks_has_null_records(fixtures):
    out = report_json(load_snapshot(fixtures / "parse_ss_hoard.txt.xz"))
    assert out["records"] is None and out["total_pages"] == 107
    assert set(out["groups"]) == {"callsite", "module", "class"}
    buf = io.StringIO()
    write_json(out, buf)
    assert json.loads(buf.getvalue()) == out


def test_csv_has_one_row_per_stack(memcg):
    buf = io.StringIO()
    write_csv(memcg, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(rows) == len(memcg.stacks)
    assert sum(int(r["pages"]) for r in rows) == memcg.total_pages
    hoard = next(r for r in rows if r["module"] == "hoard")
    assert hoard["frames"].split(";")[3] == "hoard_stash_pages+0x1c/0x54 [hoard]"


def test_folded_stacks_are_root_first_and_weighted_by_pages(memcg):
    lines = folded_lines(memcg)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == memcg.total_pages
    hoard = next(line for line in lines if "hoard" in line)
    frames, pages = hoard.rsplit(" ", 1)
    assert pages == "2"
    assert frames.split(";")[0] == "entry_SYSCALL_64_after_hwframe"
    assert frames.split(";")[-1] == "get_page_from_freelist"
    assert "hoard_stash_pages [hoard]" in frames.split(";")


def test_folded_merges_stacks_that_differ_only_in_offsets(tmp_path):
    def record(offset: str, order: int) -> str:
        return (
            f"Page allocated via order {order}, mask 0xcc0(GFP_KERNEL), pid 1, tgid 1 (sh), ts 1 ns\n"
            f" get_page_from_freelist+0x1/0x2\n hoard_stash_pages+{offset}/0x54 [hoard]\n ksys_write+0x6d/0x9a\n\n"
        )

    dump = tmp_path / "two.txt"
    dump.write_text(record("0x1c", 0) + record("0x2c", 1))
    snap = load_snapshot(dump)
    assert len(snap.stacks) == 2  # two stacks for the report (the offsets differ) ...
    assert folded_lines(snap) == ["ksys_write;hoard_stash_pages [hoard];get_page_from_freelist 3"]  # ... one flame


def test_open_output_refuses_unwritable_paths(tmp_path):
    with pytest.raises(UsageError, match=r"--csv .*cannot write"), open_output(tmp_path / "no" / "x.csv", "--csv"):
        pass
    stdout = io.StringIO()
    with open_output("-", stdout=stdout) as fp:
        fp.write("x")
    assert stdout.getvalue() == "x"
