"""allocinfo: /proc/allocinfo v1 and v2 (accurate:no), growth between snapshots, the join to suspects, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from pagelab.cli import main
from pagelab.errors import InputError
from pagelab.source import allocinfo as ai

# The header and row layout are those lib/alloc_tag.c and lib/codetag.c print (6.12: version 1.0).
V1_BEFORE = """allocinfo - version: 1.0
#     <size>  <calls> <tag info>
           0        0 mm/compaction.c:1880 func:compaction_alloc
      131072       32 mm/shmem.c:1843 func:shmem_alloc_folio
        4096        4 /build/leaky/leaky.c:104 [leaky] func:leaky_slab_leak
"""
V1_AFTER = """allocinfo - version: 1.0
#     <size>  <calls> <tag info>
        8192        2 mm/compaction.c:1880 func:compaction_alloc
       65536       16 mm/shmem.c:1843 func:shmem_alloc_folio
     2101248     2052 /build/leaky/leaky.c:104 [leaky] func:leaky_slab_leak
       12288        3 fs/pipe.c:800 func:alloc_pipe_info
"""
# Version 2.0 (Linux 6.15+) may end a row with key:value words; accurate:no flags lost counts.
V2 = """allocinfo - version: 2.0
#     <size>  <calls> <tag info>
        4096        1 lib/maple_tree.c:165 func:mt_alloc_one
       40960       10 /m/leaky.c:104 [leaky] func:leaky_slab_leak accurate:no
"""


def test_v1_rows_keep_file_line_module_function_bytes_and_calls() -> None:
    info = ai.parse(V1_AFTER, source="x")
    assert info.version == "1.0" and len(info.rows) == 4
    top = info.ranked()[0]
    assert (top.site.file, top.site.line, top.site.module, top.site.function) == (
        "/build/leaky/leaky.c",
        104,
        "leaky",
        "leaky_slab_leak",
    )
    assert (top.bytes, top.calls, top.accurate) == (2101248, 2052, True)
    assert info.total_bytes == 8192 + 65536 + 2101248 + 12288


def test_v2_accurate_no_marks_the_row_inaccurate() -> None:
    info = ai.parse(V2, source="x")
    rows = {r.site.function: r for r in info.rows.values()}
    assert info.version == "2.0"
    assert rows["leaky_slab_leak"].accurate is False and rows["mt_alloc_one"].accurate is True
    assert rows["leaky_slab_leak"].bytes == 40960


def test_growth_ranks_by_bytes_and_leaves_out_shrinkers() -> None:
    before, after = ai.parse(V1_BEFORE, label="a"), ai.parse(V1_AFTER, label="b")
    rows = ai.growth([before, after])
    got = [(g.site.function, g.bytes, g.calls) for g in rows]
    assert got == [
        ("leaky_slab_leak", 2101248 - 4096, 2048),
        ("alloc_pipe_info", 12288, 3),
        ("compaction_alloc", 8192, 2),
    ]
    assert rows[0].per_snapshot == [4096, 2101248]
    data = ai.growth_json([before, after])
    assert data["growth"][0] == {
        "file": "/build/leaky/leaky.c",
        "line": 104,
        "module": "leaky",
        "function": "leaky_slab_leak",
        "bytes": 2097152,
        "calls": 2048,
        "per_snapshot": [4096, 2101248],
        "accurate": True,
    }


def test_a_suspect_joins_the_row_of_its_callsite_function_and_module() -> None:
    rows = ai.growth([ai.parse(V1_BEFORE), ai.parse(V1_AFTER)])
    hit = ai.join("leaky_slab_leak", "leaky", rows)
    assert hit is not None and hit.site.line == 104
    assert ai.join("leaky_slab_leak.constprop.0", "leaky", rows) is hit  # compiler clones are the same function
    assert ai.join("leaky_slab_leak", None, rows) is None  # built-in code of the same name is another function
    assert ai.join("shmem_alloc_folio", None, rows) is None  # it shrank: no growth row


def test_suspects_join_by_the_module_of_their_callsite_frame_not_of_the_stack() -> None:
    # Built-in alloc_pipe_info called from a module: the stack's module is leaky, but allocinfo tags the
    # row with the callsite's own (vmlinux); a module's own callsite keeps its module.
    from types import SimpleNamespace

    from pagelab.pageowner.analyse import module_of
    from pagelab.source.lens import NOWHERE
    from pagelab.source.report import annotate_suspects, suspect_notes

    rows = ai.growth([ai.parse(V1_BEFORE), ai.parse(V1_AFTER)])
    alloc = ("get_page_from_freelist+0x1/0x2", "__alloc_pages_noprof+0x1/0x2")
    pipe = (*alloc, "alloc_pipe_info+0x1/0x2", "leaky_pipe+0x1/0x2 [leaky]")
    slab = (*alloc, "leaky_slab_leak+0x1/0x2 [leaky]", "vfs_write+0x1/0x2")
    assert module_of(pipe) == "leaky"
    suspects = [
        {"callsite": "alloc_pipe_info", "module": "leaky", "frames": list(pipe)},
        {"callsite": "leaky_slab_leak", "module": "leaky", "frames": list(slab)},
    ]
    annotate_suspects(suspects, {}, rows)
    assert [s["allocinfo"]["function"] for s in suspects] == ["alloc_pipe_info", "leaky_slab_leak"]
    notes = suspect_notes(
        [SimpleNamespace(callsite="alloc_pipe_info", module="leaky", frames=pipe)], {pipe: NOWHERE}, rows
    )
    assert "fs/pipe.c:800" in " ".join(notes[pipe])


def test_the_inline_chain_of_the_callsite_finds_the_row_of_an_inlined_allocation() -> None:
    # 6.12 inlines shmem_alloc_folio (where allocinfo tags the allocation) into shmem_get_folio_gfp
    # (the frame page owner prints): the resolved chain of that frame names both.
    before = ai.parse("allocinfo - version: 1.0\n  4096 1 mm/shmem.c:1812 func:shmem_alloc_folio\n")
    after = ai.parse("allocinfo - version: 1.0\n  16781312 4097 mm/shmem.c:1812 func:shmem_alloc_folio\n")
    rows = ai.growth([before, after])
    chain = [("folio_alloc_noprof", "include/linux/gfp.h", 326), ("shmem_alloc_folio", "mm/shmem.c", 1812)]
    assert ai.join("shmem_get_folio_gfp.constprop.0", None, rows) is None
    hit = ai.join("shmem_get_folio_gfp.constprop.0", None, rows, chain)
    assert hit is not None and hit.bytes == 16777216 and hit.site.function == "shmem_alloc_folio"
    # By line alone (a function renamed by the compiler still sits at its line).
    assert ai.join("x", None, rows, [("y", "mm/shmem.c", 1812)]) is hit


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "allocinfo - version"),
        ("Page allocated via order 0\n", 1, "allocinfo - version"),
        ("allocinfo - version: 3.0\n", 1, "not supported"),
        ("allocinfo - version: 1.0\n# h\n  12 x mm/a.c:1 func:f\n", 3, "BYTES CALLS FILE:LINE"),
        ("allocinfo - version: 1.0\n  12 1 mm/a.c func:f\n", 2, "BYTES CALLS FILE:LINE"),
    ],
)
def test_bad_input_names_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(InputError) as err:
        ai.parse(text, source="f.allocinfo")
    assert err.value.line == line and what in str(err.value) and "f.allocinfo" in str(err.value)


def _write(path: Path, text: str, compress: bool = False) -> Path:
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()) if compress else text.encode())
    return path


def test_report_and_diff_read_allocinfo_files(tmp_path: Path, capsys) -> None:
    a = _write(tmp_path / "00-baseline.allocinfo.zst", V1_BEFORE, compress=True)
    b = _write(tmp_path / "01-iter1.allocinfo", V1_AFTER)
    assert ai.is_allocinfo(a) and ai.is_allocinfo(b)
    assert main(["report", str(b), "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["kind"] == "allocinfo" and r["callsites"][0]["function"] == "leaky_slab_leak"
    assert "leaky_slab_leak" in capsys.readouterr().out  # the table
    assert main(["diff", str(a), str(b), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    top = d["allocinfo"]["growth"][0]
    assert (top["function"], top["bytes"], top["line"]) == ("leaky_slab_leak", 2097152, 104)
    assert [s["label"] for s in d["allocinfo"]["snapshots"]] == ["00-baseline", "01-iter1"]


def test_a_bad_allocinfo_file_is_exit_2_naming_the_line(tmp_path: Path, capsys) -> None:
    bad = _write(tmp_path / "x.allocinfo", "allocinfo - version: 1.0\n  12 1 nothing here\n")
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x.allocinfo" in err and ":2" in err and "Traceback" not in err


def test_sibling_finds_the_allocinfo_saved_beside_a_snapshot(tmp_path: Path) -> None:
    dump = tmp_path / "01-iter1.page_owner.zst"
    dump.write_bytes(b"")
    assert ai.sibling(dump) is None
    _write(tmp_path / "01-iter1.allocinfo.zst", V1_AFTER, compress=True)
    assert ai.sibling(dump) == str(tmp_path / "01-iter1.allocinfo.zst")
