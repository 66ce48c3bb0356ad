"""report.html: self-contained, escaped, every section present, the other stages' fields shown when present."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pagelab.cli import main
from pagelab.html import diff_page, report_page, run_page
from pagelab.html.charts import blockmap_svg, growth_chart
from pagelab.html.markup import Html, esc, fmt
from pagelab.html.run import write_run_html
from pagelab.pageowner.analyse import load_snapshot
from pagelab.pageowner.pollution import scan
from pagelab.ui import UI

HOSTILE_COMM = "<script>"  # a comm is at most 15 characters; a process can pick this one
HOSTILE_FRAME = 'evil"><img src=x onerror=alert(1)>+0x1/0x2 [<b>mod</b>]'


def hostile_dump(tmp_path: Path) -> Path:
    """A 6.12 dump whose comm and symbols are markup, with one page across the movable line."""
    records = []
    for i, (mt, bmt) in enumerate([("Unmovable", "Movable"), ("Movable", "Movable"), ("Movable", "Movable")]):
        records.append(
            f"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 66, tgid 66 ({HOSTILE_COMM}), ts {i + 1} ns\n"
            f"PFN {0x20000 + i:#x} type {mt} Block {(0x20000 + i) >> 9} type {bmt} Flags 0x0(zone=1)\n"
            f" get_page_from_freelist+0x43f/0x581\n {HOSTILE_FRAME}\n do_syscall_64+0x4e/0xa4\n\n"
        )
    path = tmp_path / "hostile.txt"
    path.write_text("".join(records))
    return path


def assert_self_contained(page: str) -> None:
    """No reference that a browser would fetch: every src/href is a fragment, data: or a relative file."""
    for attr, value in re.findall(r'\b(src|href|xlink:href)\s*=\s*"([^"]*)"', page):
        assert value.startswith(("#", "data:")) or (":" not in value and not value.startswith("//")), (attr, value)
    assert "@import" not in page and "@font-face" not in page and not re.search(r"url\((?!#)", page)


def assert_escaped(page: str) -> None:
    # Our own single script tag is the only one; the dump's markup shows as text.
    assert page.count("<script>") == 1 and page.count("<script") == 1
    assert "<img" not in page and "<b>mod" not in page
    assert "&lt;script&gt;" in page or "&lt;img" in page


def test_markup_escapes_everything_that_is_not_html() -> None:
    assert esc("<a href='x'>&") == "&lt;a href=&#x27;x&#x27;&gt;&amp;"
    assert fmt("<td>{}</td>", "<i>") == "<td>&lt;i&gt;</td>"
    assert fmt("<td>{}</td>", Html("<i>x</i>")) == "<td><i>x</i></td>"


def test_a_hostile_comm_and_symbols_are_escaped_in_the_report(tmp_path: Path) -> None:
    path = hostile_dump(tmp_path)
    snap = load_snapshot(path)
    page = report_page(snap, scan(path))
    assert_escaped(page)
    assert_self_contained(page)
    assert "evil&quot;&gt;&lt;img" in page  # the symbol is there, as text (in the stack and the map's hover)


def test_a_hostile_run_report_is_escaped(tmp_path: Path) -> None:
    path = hostile_dump(tmp_path)
    snap = load_snapshot(path)
    report = {
        "status": "crash",
        "error": "<script>alert(1)</script>",
        "kernel": "6.12<b>",
        "snapshots": [{"label": "<b>a", "total_pages": 1}, {"label": "b", "total_pages": 3}],
        "suspects": [
            {
                "rank": 1,
                "growth_pages": 2,
                "per_snapshot": [1, 3],
                "callsite": "<script>",
                "frames": [HOSTILE_FRAME],
                "verdict": "<script>",
                "cohorts": [{"<script>": "<script>"}],
            }
        ],
        "crashes": [{"kind": "oops", "title": "<script>", "excerpt": "</pre><script>alert(1)</script>"}],
        "workloads": [{"spec": "echo '<script>'", "iteration": 1, "status": 0, "seconds": 1.0}],
    }
    page = run_page(report, snapshot=snap, blocks=scan(path), artifacts=[("report.json", "<script>")])
    assert_escaped(page)
    assert_self_contained(page)


def test_the_report_page_has_every_section(fixtures: Path) -> None:
    path = fixtures / "parse_6_12_frag.txt.xz"
    page = report_page(load_snapshot(path), scan(path))
    for heading in ("Summary", "Top owners", "Ownership icicle", "Pageblock map", "Fragmentation culprits"):
        assert f"<h2>{heading}" in page
    assert 'id="icicle"' in page and 'class="blockmap"' in page
    assert "alloc_inode" in page and "Unmovable in Movable 5" in page
    assert_self_contained(page)


def test_report_page_shows_source_lines_when_given(fixtures: Path) -> None:
    snap = load_snapshot(fixtures / "parse_6_12_frag.txt.xz")
    top = snap.ranked()[0]
    where = {"source": "fs/inode.c:261", "subsystem": "FILESYSTEMS (VFS)", "frame_sources": [None] * len(top.stack)}
    where["frame_sources"][-1] = "fs/namei.c:4000"
    page = report_page(snap, None, sources={top.stack: where})
    assert "fs/inode.c:261" in page and " · FILESYSTEMS (VFS)" in page and "  (fs/namei.c:4000)" in page


def test_show_stacks_input_says_why_there_is_no_map(fixtures: Path) -> None:
    page = report_page(load_snapshot(fixtures / "report_ss612.txt.xz"), None)
    assert "Not available: the input has no PFN lines" in page


def test_the_blockmap_marks_mixed_blocks_and_names_owners(fixtures: Path) -> None:
    bm = scan(fixtures / "parse_6_12_frag.txt.xz")
    svg = blockmap_svg(bm)
    assert svg.count('class="b mixed"') == bm.mixed_blocks == 2
    assert svg.count('class="b"') == len(bm.blocks) - 2
    assert "block 248 · PFN 0x1f000–0x1f1ff · Movable" in svg and "owners: alloc_inode 5" in svg
    assert "no allocated page in this pageblock" in svg  # the background of the empty cells


def test_the_growth_chart_draws_one_point_per_snapshot() -> None:
    svg = growth_chart([0, 10, 30], ["base", "i1", "i2"])
    assert svg.count("<circle") == 3 and "i2: 30 pages" in svg


def test_verdicts_cohorts_and_source_lines_show_when_present_and_absence_is_fine(fixtures: Path) -> None:
    base = {
        "status": "leak",
        "snapshots": [{"label": "00-baseline"}, {"label": "01-iter1"}],
        "suspects": [{"rank": 1, "growth_pages": 9, "per_snapshot": [0, 9], "callsite": "hoard", "frames": ["x+1/2"]}],
    }
    plain = run_page(base, snapshot=None, blocks=None)
    assert "hoard" in plain and plain.count('<span class="status ') == 1  # the run's, no verdict
    rich = json.loads(json.dumps(base))
    rich["suspects"][0].update(
        verdict="cache", cohorts=[{"age": "old", "pages": 4}], source="mm/shmem.c:1823", subsystem="SHMEM", ages=[1, 2]
    )
    rich["suspects"][0]["frame_sources"] = ["mm/shmem.c:1823"]
    page = run_page(rich, snapshot=None, blocks=None)
    assert '<span class="status cache">cache</span>' in page
    assert "mm/shmem.c:1823" in page and "SHMEM" in page and "<th>age</th>" in page and "ages" in page
    assert "x+1/2  (mm/shmem.c:1823)" in page  # the frame with its own source line
    assert "Not available: no snapshot was taken" in page


def test_report_and_diff_write_html_files(fixtures: Path, tmp_path: Path, capsys) -> None:
    before, after = fixtures / "report_po612.txt.xz", fixtures / "parse_6_12_frag.txt.xz"
    assert main(["report", str(after), "--html", str(tmp_path / "r.html")]) == 0
    assert main(["diff", str(before), str(after), "--html", str(tmp_path / "d.html")]) == 0
    r, d = (tmp_path / "r.html").read_text(), (tmp_path / "d.html").read_text()
    assert r.startswith("<!DOCTYPE html>") and "Pageblock map (parse_6_12_frag)" in r
    assert "<h2>Suspects" in d and "<h2>Shrunk" in d and "Pageblock map (parse_6_12_frag)" in d


def test_an_unwritable_html_path_is_exit_2(fixtures: Path, tmp_path: Path, capsys) -> None:
    code = main(["report", str(fixtures / "parse_6_12_frag.txt.xz"), "--html", str(tmp_path / "no" / "r.html")])
    assert code == 2 and "--html" in capsys.readouterr().err


def test_diff_page_of_a_real_pair(fixtures: Path) -> None:
    from pagelab.pageowner.diff import diff, diff_to_json

    before = load_snapshot(fixtures / "report_po612.txt.xz")
    after = load_snapshot(fixtures / "sort_po612.txt.xz")
    page = diff_page(diff_to_json(diff(before, after)), after, scan(fixtures / "sort_po612.txt.xz"))
    assert "pagelab diff" in page and page.count('class="suspect"') > 0
    assert_self_contained(page)


def test_a_run_page_that_cannot_render_becomes_an_error_page(tmp_path: Path) -> None:
    report = {"status": "ok", "snapshots": [{"label": "a"}, {"label": "b"}], "suspects": [{"per_snapshot": ["x"]}]}
    write_run_html(tmp_path, report, [], None, UI(plain=True))
    page = (tmp_path / "report.html").read_text()
    assert "Report unavailable" in page and "rendering failed: ValueError" in page


@pytest.mark.parametrize("name", ["report_po612.txt.xz", "sort_po612.txt.xz"])
def test_the_icicle_width_is_bounded_and_sums_pages(fixtures: Path, name: str) -> None:
    from pagelab.html.charts import icicle_svg

    snap = load_snapshot(fixtures / name)
    svg = icicle_svg(snap)
    assert f"{snap.total_pages:,} pages (100.0 %)" in svg  # the root
    assert svg.count('<g class="n"') < 3000


def test_an_unreadable_last_snapshot_costs_the_run_only_its_map(fixtures: Path, tmp_path: Path, capsys) -> None:
    from dataclasses import dataclass

    from pagelab.html.run import last_blockmap

    @dataclass
    class Taken:  # what the collector's SnapshotFile offers
        label: str
        path: Path
        snapshot: object
        stacks_path: Path | None = None

    snap = load_snapshot(fixtures / "parse_6_12_frag.txt.xz")
    assert last_blockmap([Taken("iter1", tmp_path / "gone.page_owner.zst", snap)], UI(plain=True)) is None
    assert "pageblock map of" in capsys.readouterr().err
    bm = last_blockmap([Taken("iter1", fixtures / "parse_6_12_frag.txt.xz", snap)], UI(plain=True))
    assert bm is not None and bm.mixed_blocks == 2


@pytest.mark.parametrize("stop", ["crash", "error"])
def test_a_run_that_stops_still_writes_report_html_and_pollution(fixtures: Path, tmp_path: Path, stop: str) -> None:
    import lzma

    import zstandard

    from pagelab.cli import build_parser
    from pagelab.collect.collector import SnapshotFile
    from pagelab.pageowner.analyse import SnapshotBuilder
    from pagelab.run.artifacts import RunDir
    from pagelab.run.pipeline import RunState, _analyse, _write_artifacts
    from pagelab.run.profiles import settings_from
    from pagelab.settings import given

    args = build_parser().parse_args(["run", "--workload", "true"])
    state = RunState(settings_from(given(args), args.profile), RunDir(tmp_path / "out"))
    data = lzma.decompress((fixtures / "parse_6_12_frag.txt.xz").read_bytes())
    for i, label in enumerate(("baseline", "iter1")):
        b = SnapshotBuilder(label=label, source=label)
        b.feed(data)
        path = state.out.snapshots / f"{i:02d}-{label}.page_owner.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
        state.snapshots.append(SnapshotFile(i, label, path, b.finish(), 1.0, len(data), 1, 1))
    if stop == "crash":
        state.crashes.append({"kind": "oops", "title": "<b>BUG</b>", "excerpt": "kernel BUG at mm/slub.c:42!"})
    else:
        state.error = "SSH lost <script>"
    ui = UI(plain=True, quiet=True)
    _write_artifacts(state, _analyse(state, ui), ui, None)
    page = (state.out.path / "report.html").read_text()
    assert f'<span class="status {stop}">{stop}</span>' in page and "<h2>Pageblock map (iter1)" in page
    assert f"<td>exit code</td><td>{3 if stop == 'crash' else 4}</td>" in page
    if stop == "crash":
        assert "kernel BUG at mm/slub.c:42!" in page and "&lt;b&gt;BUG&lt;/b&gt;" in page and "<b>BUG" not in page
    else:
        assert "SSH lost &lt;script&gt;" in page and page.count("<script") == 1
    report = json.loads((state.out.path / "report.json").read_text())
    assert report["pollution"]["culprits"][0]["callsite"] == "alloc_inode"


def test_report_html_of_stdin_says_why_there_is_no_map(fixtures: Path, tmp_path: Path) -> None:
    import lzma
    import subprocess
    import sys

    out = tmp_path / "r.html"
    data = lzma.decompress((fixtures / "parse_6_12_frag.txt.xz").read_bytes())
    res = subprocess.run(
        [sys.executable, "-m", "pagelab", "report", "-", "--html", str(out)],
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert "Not available: the input was read from stdin" in page and "<h2>Top owners" in page
