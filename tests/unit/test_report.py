"""`pagelab report` and `pagelab diff` end to end: the real CLI on real dumps, renderings, exit codes."""

from __future__ import annotations

import csv
import json
import lzma
import os
import subprocess
import sys

import pytest

from pagelab.cli import main
from pagelab.pageowner.analyse import load_snapshot
from pagelab.pageowner.diff import diff, suspects
from pagelab.pageowner.render import as_text, render_diff, render_report, render_suspects, sparkline
from pagelab.ui import UI


def pagelab(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    # A wide console: rich wraps long messages (tmp paths) at 80 columns when stderr is not a terminal.
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "pagelab", *args], input=stdin, capture_output=True, timeout=120, check=False, env=env
    )


# -- report -----------------------------------------------------------------------------------------
def test_report_prints_totals_top_stacks_and_views(fixtures, capsys):
    assert main(["report", str(fixtures / "report_po612.txt.xz"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "1,855 records" in out and "297 stacks" in out
    assert "Top 3 stacks by pages" in out
    assert "#1 " in out and "#4 " not in out
    assert "shmem_get_folio_gfp.constprop.0.isra.0" in out
    assert "By callsite" in out and "By module" in out and "By class" in out
    assert "fragmentation:" in out


def test_report_json_to_stdout_keeps_human_output_on_stderr(fixtures):
    res = pagelab("report", str(fixtures / "report_po612.txt.xz"), "--json", "-", "--by", "comm")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["records"] == 1855 and data["stacks"][0]["pages"] >= data["stacks"][1]["pages"]
    assert b"Top 10 stacks" in res.stderr


def test_report_exports_csv_and_folded(fixtures, tmp_path, capsys):
    rc = main(
        [
            "report",
            str(fixtures / "parse_6_1_memcg.txt.xz"),
            "--csv",
            str(tmp_path / "s.csv"),
            "--folded",
            str(tmp_path / "s.folded"),
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert sum(int(r["pages"]) for r in rows) == 5
    folded = (tmp_path / "s.folded").read_text().splitlines()
    assert sum(int(line.rsplit(" ", 1)[1]) for line in folded) == 5
    assert json.loads((tmp_path / "s.json").read_text())["total_pages"] == 5
    assert "hoard_stash_pages" in capsys.readouterr().out


def test_report_filters(fixtures, capsys):
    assert main(["report", str(fixtures / "parse_6_1_memcg.txt.xz"), "--filter", "module=hoard", "--by", "comm"]) == 0
    out = capsys.readouterr().out
    assert "2 records, 2 pages" in out and "filters: module=hoard" in out
    assert "my (odd) app" in out and "kworker/0:1H" not in out


def test_report_with_filters_matching_nothing(fixtures, capsys):
    assert main(["report", str(fixtures / "report_po612.txt.xz"), "--filter", "comm=nobody"]) == 0
    out = capsys.readouterr().out
    assert "0 records, 0 pages" in out and "nothing matches the filters" in out


def test_report_on_show_stacks_says_which_views_are_unavailable(fixtures, capsys):
    assert main(["report", str(fixtures / "report_ss612.txt.xz"), "--by", "comm", "--by", "callsite"]) == 0
    captured = capsys.readouterr()
    assert "--by comm: unavailable for show_stacks" in captured.err
    assert "28,726 pages" in captured.out and "show_stacks input has no per-record fields" in captured.out
    assert "By callsite" in captured.out


def test_report_reads_stdin(fixtures):
    raw = lzma.decompress((fixtures / "parse_5_15.txt.xz").read_bytes())
    res = pagelab("report", "-", "--json", "-", stdin=raw)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["source"] == "<stdin>"
    res = pagelab("report", "-", "--json", "-", stdin=(fixtures / "parse_5_15.txt.xz").read_bytes())
    assert json.loads(res.stdout)["total_pages"] == 2


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"just some text\n", "bad.txt:1: not a page_owner dump"),
        (b"Page allocated via order 0, mask 0x0()\n a\n\nPage allocated via order q, mask 0x0()\n", "bad.txt:4: order"),
        (bytes(range(256)) * 4, "bad.txt:1: binary data"),
        (b"\xfd7zXZ\x00garbage", "bad.txt: corrupt xz data"),
        (b"", "bad.txt: no records"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, expect):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    res = pagelab("report", str(bad))
    err = res.stderr.decode()
    assert res.returncode == 2
    assert expect in err.replace(str(tmp_path) + "/", "")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_file_directory_and_bad_options_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path), "--by", "colour"]) == 2
    assert main(["report", str(tmp_path), "--filter", "pid=x"]) == 2
    assert main(["report", str(tmp_path), "--top", "0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no such file" in err and "is a directory" in err and "unknown view" in err and "takes numbers" in err


# -- diff -------------------------------------------------------------------------------------------
def test_diff_dump_against_show_stacks(fixtures):
    res = pagelab("diff", str(fixtures / "report_po612.txt.xz"), str(fixtures / "report_ss612.txt.xz"), "--json", "-")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [s["label"] for s in data["snapshots"]] == ["report_po612", "report_ss612"]
    assert data["snapshots"][1]["records"] is None
    assert data["excluded_early_pages"] > 0
    assert data["suspects"] and all(s["growth_pages"] > 0 for s in data["suspects"])
    assert [s["rank"] for s in data["suspects"]] == list(range(1, len(data["suspects"]) + 1))
    assert b"early-boot pages left out" in res.stderr


def test_diff_renders_growers_and_shrinkers(fixtures, capsys):
    assert main(["diff", str(fixtures / "report_po61.txt.xz"), str(fixtures / "report_po612.txt.xz")]) == 0
    out = capsys.readouterr().out
    assert "report_po61 → report_po612" in out
    assert "Grown" in out and "Shrunk" in out and "NEW" in out and "GONE" in out


def test_diff_bad_input_exit_2(fixtures, tmp_path, capsys):
    assert main(["diff", str(fixtures / "report_po61.txt.xz"), str(tmp_path / "missing")]) == 2
    assert "missing: no such file" in " ".join(capsys.readouterr().err.split())


# -- renderings -------------------------------------------------------------------------------------
def test_plain_rendering_is_ascii_tables_without_colour(fixtures):
    snap = load_snapshot(fixtures / "report_po612.txt.xz")
    text = as_text(lambda ui: render_report(ui, snap, top=3, views=["order", "gfp"]))
    assert "\x1b[" not in text
    assert "Top 3 stacks by pages" in text and "By order" in text and "By gfp" in text
    assert "-+-" in text or "|" in text


def test_suspects_rendering_has_a_trend_per_stack(fixtures):
    a = load_snapshot(fixtures / "report_po61.txt.xz")
    b = load_snapshot(fixtures / "report_po612.txt.xz")
    found = suspects([a, b, b])
    text = as_text(lambda ui: render_suspects(ui, [a, b, b], found, top=3))
    assert "Leak suspects" in text and found[0].callsite in text
    assert sparkline(found[0].per_snapshot, plain=True) in text
    assert sparkline([0, 5, 10], plain=True) == "_+@" and sparkline([3, 3]) == "▁▁"
    rich_ui = UI(plain=False, quiet=True)
    render_diff(rich_ui, diff(a, b), top=2)  # the rich path renders without error


# -- dump text is never rich markup ---------------------------------------------------------------------
def _hostile_dump(path, n_evil: int) -> None:
    """A 6.12 dump whose comms and frames look like rich markup: '[/x]' (a closing tag with nothing open
    raised MarkupError) and '[red]evil' (lost its brackets)."""
    recs = [(0x100 + i, "[/x]", ("[/x]+0x1/0x2 [[b]mod]", "vfs_write+0x1/0x2")) for i in range(3)]
    recs += [(0x200 + i, "[red]evil", ("[red]evil+0x1/0x2", "vfs_write+0x1/0x2")) for i in range(n_evil)]
    text = "".join(
        f"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 7, tgid 7 ({comm}), ts {1000 + pfn} ns\n"
        f"PFN {pfn:#x} type Unmovable Block 0 type Unmovable Flags 0x0(zone=1)\n"
        + "".join(f" {f}\n" for f in ("get_page_from_freelist+0x1/0x2", "__alloc_pages_noprof+0x1/0x2", *stack))
        + "\n"
        for pfn, comm, stack in recs
    )
    path.write_text(text)


def test_dump_text_that_looks_like_markup_is_printed_as_is(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    _hostile_dump(a, 2)
    _hostile_dump(b, 40)
    assert main(["report", str(b), "--by", "comm", "--by", "callsite", "--by", "module"]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[red]evil" in out and "[b]mod" in out
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "[red]evil" in out and "+38" in out
    snaps = [load_snapshot(a), load_snapshot(b)]
    text = as_text(lambda ui: render_suspects(ui, snaps, suspects(snaps)))
    assert "[red]evil" in text
    # The terminal consoles (not only the plain report.txt one) take it as text too.
    ui = UI(plain=False)
    with ui.out.capture() as cap:
        render_diff(ui, diff(*snaps))
    assert "[red]evil" in cap.get()
