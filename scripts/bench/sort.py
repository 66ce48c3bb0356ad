#!/usr/bin/env python3
"""Benchmark ``pagelab sort`` against the kernel's page_owner_sort (6.12) on a large dump; print a markdown table.

The C tool is built from /usr/src/linux-source-6.12.tar.xz with tools/mm/Makefile's flags plus -O2
(tests/unit/sort_ctool.py, cached). The dump is made by scripts/bench/make_dump.py from a real
fixture dump (deterministic seed) unless --dump is given. Each tool runs --runs times per mode,
alternating, under GNU time (wall time and peak RSS of the tool process itself). pagelab runs with -d,
which reports both peaks when it reads a big file as two halves in two processes: their sum is shown.
Every pagelab output is compared with the C tool's (they must be byte-identical).

Usage: scripts/bench/sort.py [--dump FILE] [--size MB] [--source FIXTURE] [--fresh-free-ts] [--runs N] [--mode ARGS]...
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(ROOT))

from sort_ctool import build_c_tools  # noqa: E402

from pagelab.cache import cache_dir  # noqa: E402

TIME = "/usr/bin/time"  # GNU time (Debian package "time", in scripts/setup-host.sh)
MODES = {"default": [], "--cull stacktrace": ["--cull", "stacktrace"]}


def measure(argv: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB, stderr) of one run of argv; its output is discarded.

    GNU time measures both: a child's ru_maxrss also counts the memory of the process that forked it
    (Linux carries the parent's RSS into the child's peak at fork/exec), and time is tiny, this script is not.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        result = subprocess.run(
            [TIME, "-o", report.name, "-f", "%e %M", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.decode()[-500:]}")
        wall, rss = report.read().split()[-2:]
    return float(wall), int(rss), result.stderr.decode(errors="replace")


def pagelab_peak_rss(time_rss: int, stderr: str) -> int:
    """Peak RSS of a pagelab sort run in KiB: with two processes, the sum of both peaks (from its -d line).

    GNU time reports the larger of the two only; their sum bounds what they held at the same time.
    """
    m = re.search(r"two processes, peak RSS (\d+) MiB \+ worker (\d+) MiB", stderr)
    return (int(m[1]) + int(m[2])) * 1024 if m else time_rss


def count_records(path: Path) -> int:
    """Records in a dump, without holding it in memory (this process's size would not matter, but still)."""
    needle = b"\n\nPage allocated via order "
    count, tail = 0, b""
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            data = tail + block
            count += data.count(needle)
            tail = data[-(len(needle) - 1) :]
    return count + 1


def make_dump(source: Path, size_mb: float, seed: int, fresh_free_ts: bool) -> Path:
    unique = "-fresh-free-ts" if fresh_free_ts else ""
    out = cache_dir("bench") / f"sort-{source.name.split('.')[0]}-{size_mb:g}MB-seed{seed}{unique}.txt"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench" / "make_dump.py"),
                str(source),
                "-o",
                str(tmp),
                "--size",
                str(size_mb),
                "--seed",
                str(seed),
                *(["--fresh-free-ts"] if fresh_free_ts else []),
            ],
            check=True,
        )
        tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", type=Path, help="benchmark this dump instead of generating one")
    ap.add_argument("--source", type=Path, default=ROOT / "tests" / "fixtures" / "sort_po612.txt.xz")
    ap.add_argument("--size", type=float, default=244.0, help="generated dump size in MB (default 244)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh-free-ts", action="store_true", help="generate the worst case (see make_dump.py)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", action="append", help="extra sort options to benchmark (default: default, --cull st)")
    args = ap.parse_args(argv)

    stock, _ = build_c_tools()
    dump = args.dump or make_dump(args.source, args.size, args.seed, args.fresh_free_ts)
    modes = {m: m.split() for m in args.mode} if args.mode else MODES
    pagelab = [str(ROOT / ".venv" / "bin" / "pagelab"), "sort"]
    if not Path(pagelab[0]).exists():
        pagelab = [sys.executable, "-m", "pagelab", "sort"]
    records = count_records(dump)
    load = os.getloadavg()
    print(f"Dump: `{dump.name}`, {dump.stat().st_size / 1e6:.0f} MB, {records:,} records.  ")
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, load average at start {load[0]:.1f}.  "
    )
    print(f"page_owner_sort: linux-source-6.12 `tools/mm/page_owner_sort.c`, gcc -O2; {args.runs} runs each.\n")
    print("| mode | tool | wall median (min–max) | peak RSS | speed-up | output |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in modes.items():
            c_out, p_out = Path(tmp) / "c.out", Path(tmp) / "p.out"
            c_times, p_times, c_rss, p_rss = [], [], [], []
            for _ in range(args.runs):
                wall, rss, _ = measure([str(stock), *opts, str(dump), str(c_out)])
                c_times.append(wall)
                c_rss.append(rss)
                wall, rss, err = measure([*pagelab, "-d", *opts, str(dump), str(p_out)])
                p_times.append(wall)
                p_rss.append(pagelab_peak_rss(rss, err))
                two = "two processes" in err
            same = c_out.read_bytes() == p_out.read_bytes()
            c_med, p_med = statistics.median(c_times), statistics.median(p_times)
            print(
                f"| `{name}` | page_owner_sort | {c_med:.2f} s ({min(c_times):.2f}–{max(c_times):.2f}) "
                f"| {max(c_rss) / 1024:.0f} MB | 1.0× | |"
            )
            print(
                f"| `{name}` | pagelab sort | {p_med:.2f} s ({min(p_times):.2f}–{max(p_times):.2f}) "
                f"| {max(p_rss) / 1024:.0f} MB{' (2 processes)' if two else ''} | **{c_med / p_med:.1f}×** "
                f"| {'identical' if same else 'DIFFERENT'} |"
            )
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
