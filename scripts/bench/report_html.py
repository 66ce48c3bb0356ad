#!/usr/bin/env python3
"""Size and render time of report.html for a run with big snapshots, as a markdown table.

Usage: report_html.py [--size MB] [--keep DIR] [--repeat N]
Makes two synthetic dumps of --size MB (default 244) with scripts/bench/make_dump.py from the real 6.12
dump in tests/fixtures (different seeds, so stacks grow and shrink between them), writes the run page
the way `pagelab run` does (pagelab/html/run.py: suspects, last snapshot's owners, icicle, pageblock
map, culprits) and a `pagelab diff --html` page, then loads each in headless Chromium
(tests/e2e/chromium.py) and times load (navigation to the load event), paint (navigation to the second
animation frame after load: laid out and painted; also as the page's own clock sees it) and a full-page
screenshot (adds PNG encoding).
Figures are medians of --repeat loads in a fresh browser each.

Baselines in the same run: report.json's size; Chromium loading a one-line page (the browser's own cost).
Goal (issue 12): report.html ≤ 5 MB, rendered in ≤ 2 s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from chromium import Chromium  # noqa: E402

from pagelab.html import diff_page, write_html  # noqa: E402
from pagelab.html.run import write_run_html  # noqa: E402
from pagelab.pageowner import diff as pdiff  # noqa: E402
from pagelab.pageowner.analyse import Snapshot, load_snapshot  # noqa: E402
from pagelab.pageowner.pollution import scan  # noqa: E402
from pagelab.procs import tool_version  # noqa: E402
from pagelab.ui import UI  # noqa: E402

SOURCE = ROOT / "tests" / "fixtures" / "report_po612.txt.xz"


@dataclass
class Taken:
    """What write_run_html reads of a collector's SnapshotFile."""

    label: str
    path: Path
    snapshot: Snapshot
    stacks_path: Path | None = None


def make_dumps(work: Path, size: float) -> list[Path]:
    out = []
    for i, seed in enumerate((1, 2)):
        path = work / "snapshots" / f"{i:02d}-{'baseline' if i == 0 else 'iter1'}.page_owner.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            cmd = [sys.executable, str(ROOT / "scripts/bench/make_dump.py"), str(SOURCE), "-o", str(path)]
            subprocess.run([*cmd, "--size", str(size), "--seed", str(seed)], check=True)
        out.append(path)
    return out


def browser_times(url: str, repeat: int, profile: Path) -> tuple[float, float, float, float, int]:
    loads, paints, page, shots = [], [], [], []
    errors = 0
    for i in range(repeat):
        with Chromium(profile / f"p{i}") as b:
            res = b.load(url, settle=0.2, scale=1.0)
            loads.append(res.load_seconds)
            paints.append(res.paint_seconds)
            page.append(res.page_ms / 1000)
            shots.append(res.screenshot_seconds)
            errors += len(res.errors) + len(res.requests)
    med = statistics.median
    return med(loads), med(paints), med(page), med(shots), errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=244, help="MB per synthetic snapshot (default 244)")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep (dumps are reused when present)")
    ap.add_argument("--repeat", type=int, default=3, help="browser loads per page (default 3)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pagelab-bench-html-"))
    work.mkdir(parents=True, exist_ok=True)
    dumps = make_dumps(work, args.size)
    ui = UI(plain=True)

    t0 = time.perf_counter()
    snaps = [load_snapshot(p) for p in dumps]
    t_load = time.perf_counter() - t0
    found = pdiff.suspects(snaps)
    report = pdiff.to_json(snaps, found, top=50, paths=[str(p) for p in dumps])
    t1 = time.perf_counter()
    blocks = scan(dumps[-1])
    t_scan = time.perf_counter() - t1
    report["pollution"] = blocks.to_json()
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    t2 = time.perf_counter()
    taken = [Taken(s.label, p, s) for s, p in zip(snaps, dumps, strict=True)]
    write_run_html(work, report, taken, blocks, ui)
    t_page = time.perf_counter() - t2
    diff_html = work / "diff.html"
    write_html(diff_html, diff_page(pdiff.diff_to_json(pdiff.diff(snaps[0], snaps[1])), snaps[1], blocks))
    blank = work / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><link rel=icon href='data:,'></head><body>pagelab</body></html>")

    profile = work / "chromium"
    rows = []
    pages = (("report.html (run)", work / "report.html"), ("diff.html", diff_html), ("baseline: one-line page", blank))
    for name, path in pages:
        rows.append((name, path.stat().st_size, *browser_times(path.as_uri(), args.repeat, profile)))

    dump_mb = sum(p.stat().st_size for p in dumps) / len(dumps) / 1e6
    print(
        f"#### report.html — {datetime.date.today()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}"
    )
    print()
    print(
        f"Two synthetic snapshots of {dump_mb:.0f} MB ({snaps[-1].records:,} records, "
        f"{len(snaps[-1].stacks):,} stacks, "
        f"{len(blocks.blocks):,} pageblocks of order {blocks.order}); {len(found):,} suspects. "
        f"Loading both: {t_load:.1f} s; pageblock scan of the last: {t_scan:.1f} s; run page built and written: "
        f"{t_page:.2f} s. report.json: {(work / 'report.json').stat().st_size / 1e6:.2f} MB."
    )
    print()
    print("| page | size MB | load event s | painted s | painted, page clock s | + full-page PNG s | errors/requests |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size, load, paint, page, shot, errors in rows:
        print(f"| {name} | {size / 1e6:.2f} | {load:.2f} | {paint:.2f} | {page:.2f} | {shot:.2f} | {errors} |")
    print()
    print(f"Chromium: {tool_version(['chromium', '--version'])}")
    print(f"(work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
