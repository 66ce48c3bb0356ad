#!/usr/bin/env python3
"""Throughput of `pagelab report` / `pagelab diff` against the kernel's page_owner_sort, as a markdown table.

Usage: report.py [DUMP [SHOW_STACKS]] [--repeat N]
Without DUMP, an ~18 MB dump is made by concatenating copies of tests/fixtures/report_po612.txt.xz
(same stacks and record mix; the parser's cost per byte is the same). Each figure is the median of
--repeat runs (default 3). MB/s is uncompressed dump bytes per second of wall time.

Rows:
- parse: iter_records over the dump (Record objects, interned stacks)
- snapshot: load_snapshot (parse + the per-row aggregation every report view is built from)
- pagelab report / diff: the whole CLI in a fresh process (start-up, rendering, JSON to /dev/null)
- baseline, python split+count: a throwaway loop (split records, count stacks)
- baseline, page_owner_sort --cull stacktrace: the kernel's C tool (6.12 tools/mm), built from
  /usr/src/linux-source-6.12.tar.xz into the cache on first use; it needs a plain regular file.
"""

from __future__ import annotations

import argparse
import datetime
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pagelab.cache import cache_root  # noqa: E402
from pagelab.pageowner.analyse import load_snapshot  # noqa: E402
from pagelab.pageowner.inputs import open_input  # noqa: E402
from pagelab.pageowner.parse import iter_records  # noqa: E402

KERNEL_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_process(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, 0 if unknown) of one child process.

    The RSS comes from /usr/bin/time: a child spawned from this (large) process would report this
    process's peak, which ru_maxrss keeps across vfork and exec.
    """
    rss = 0
    with tempfile.NamedTemporaryFile("r") as out:
        wrapped = ["/usr/bin/time", "-q", "-f", "%M", "-o", out.name, *cmd] if Path("/usr/bin/time").exists() else cmd
        t0 = time.perf_counter()
        res = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}")
        text = out.read().strip()
        if text.isdigit():
            rss = int(text)
    return wall, rss


def timed_process(cmd: list[str], repeat: int) -> tuple[float, int]:
    runs = [run_process(cmd) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def naive_split_count(path: Path) -> int:
    data = path.read_bytes()
    counts: Counter[bytes] = Counter()
    for rec in data.split(b"\n\n"):
        i = rec.find(b"\n ")
        if i >= 0:
            counts[rec[i:]] += 1
    return len(counts)


def page_owner_sort() -> Path | None:
    """The 6.12 C tool, built once into the cache; None when the tarball or a compiler is missing."""
    out = cache_root() / "bench" / "page_owner_sort-6.12"
    if out.exists():
        return out
    if not KERNEL_TARBALL.exists() or shutil.which("gcc") is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(KERNEL_TARBALL) as tar:
        for member in tar:
            if member.name.endswith("tools/mm/page_owner_sort.c"):
                src = Path(tmp) / "page_owner_sort.c"
                src.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
                subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
                return out
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", nargs="?", help="page_owner dump (plain or compressed)")
    ap.add_argument("show_stacks", nargs="?", help="show_stacks file of the same guest (for diff)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "dump.txt"
        if args.dump:
            with open_input(args.dump) as f, plain.open("wb") as out:
                shutil.copyfileobj(f, out)
            name = Path(args.dump).name
        else:
            one = lzma.decompress((ROOT / "tests/fixtures/report_po612.txt.xz").read_bytes())
            plain.write_bytes(one * max(1, (18 << 20) // len(one)))
            name = "report_po612 fixture × N"
        size_mb = plain.stat().st_size / 1e6
        records = sum(1 for _ in iter_records(plain))
        rows: list[tuple[str, float, str]] = []

        def add(what: str, seconds: float, note: str = "") -> None:
            rows.append((what, seconds, note))

        add("parse (iter_records)", timed(lambda: sum(1 for _ in iter_records(plain)), args.repeat))
        add("snapshot (load_snapshot)", timed(lambda: load_snapshot(plain), args.repeat))
        if args.dump and args.dump.endswith((".xz", ".gz", ".zst")):
            add(f"snapshot from {Path(args.dump).suffix}", timed(lambda: load_snapshot(args.dump), args.repeat))
        py = [sys.executable, "-m", "pagelab"]
        wall, rss = timed_process([*py, "report", str(plain), "--json", os.devnull], args.repeat)
        add("pagelab report --json (process)", wall, f"peak RSS {rss // 1024} MiB")
        wall, rss = timed_process([*py, "diff", str(plain), str(plain), "--json", os.devnull], args.repeat)
        add("pagelab diff DUMP DUMP (process)", wall * 0.5, f"2 dumps in {wall:.2f} s, peak RSS {rss // 1024} MiB")
        if args.show_stacks:
            wall, rss = timed_process([*py, "diff", str(plain), args.show_stacks, "--json", os.devnull], args.repeat)
            add("pagelab diff DUMP SHOW_STACKS (process)", wall, f"peak RSS {rss // 1024} MiB")
        add("baseline: python split+count", timed(lambda: naive_split_count(plain), args.repeat))
        tool = page_owner_sort()
        if tool is not None:
            out = Path(tmp) / "sorted.txt"
            wall, rss = timed_process([str(tool), "--cull", "stacktrace", str(plain), str(out)], args.repeat)
            add("baseline: page_owner_sort --cull stacktrace (C)", wall, f"peak RSS {rss // 1024} MiB")

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"### report/diff throughput — {datetime.date.today()}, {os.cpu_count()} cores, {cpu}")
    print()
    print(f"Input: {name}, {size_mb:.1f} MB uncompressed, {records:,} records; median of {args.repeat} runs.")
    print()
    print("| what | seconds | MB/s | notes |")
    print("|---|---:|---:|---|")
    for what, seconds, note in rows:
        print(f"| {what} | {seconds:.3f} | {size_mb / seconds:.0f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
