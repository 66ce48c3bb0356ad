#!/usr/bin/env python3
"""Benchmark resolving every distinct frame of a dump to file:line, and the resolvers to choose from.

Usage: .venv/bin/python scripts/bench/symbolize.py DUMP --build DIR [--module KO ...] [--alt-python PY]

Measures, on the distinct frames of DUMP (parsing the dump is timed apart: it is not part of the goal):
- pagelab's Symbolizer (pagelab/source/symbolize.py: ELF symbols + one ``addr2line -f -i`` per binary)
  cold (an empty private symbol cache) and cached (a second Symbolizer, same cache);
- the same vmlinux addresses through ``llvm-symbolizer --inlines`` (one process, JSON output);
- pyelftools and drgn on the same addresses when ``--alt-python`` names an interpreter that has them
  (they are not pagelab dependencies: a throwaway venv is enough). A resolver that has not finished after
  ``--limit`` seconds is reported as such.
Goal (issue 11): ≤ 3 s cold, ≤ 0.2 s cached for a 244 MB dump.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pagelab.pageowner.analyse import load_snapshot  # noqa: E402
from pagelab.source import symbolize  # noqa: E402

# Both alternatives get the addresses pagelab computes (symbol + offset - 1) and print one answer per line.
_PYELFTOOLS = r"""
import sys, bisect
from elftools.elf.elffile import ELFFile
addrs = [int(a, 16) for a in sys.stdin.read().split()]
with open(sys.argv[1], "rb") as f:
    dwarf = ELFFile(f).get_dwarf_info()
    rows = []  # (address, file, line) of every line-table row
    for cu in dwarf.iter_CUs():
        lp = dwarf.line_program_for_CU(cu)
        if lp is None:
            continue
        names = [e.name.decode() for e in lp["file_entry"]]
        base = 0 if lp.header.version >= 5 else 1
        for e in lp.get_entries():
            s = e.state
            if s is not None and not s.end_sequence:
                rows.append((s.address, names[s.file - base] if 0 <= s.file - base < len(names) else "?", s.line))
    rows.sort()
    keys = [r[0] for r in rows]
    for a in addrs:
        i = bisect.bisect_right(keys, a) - 1
        print(f"{rows[i][1]}:{rows[i][2]}" if i >= 0 else "??")
"""

_DRGN = r"""
import sys, drgn
addrs = [int(a, 16) for a in sys.stdin.read().split()]
prog = drgn.Program()
prog.load_debug_info([sys.argv[1]])
for a in addrs:
    try:
        loc = prog.source_location(a)
        print(str(loc).splitlines()[0])
    except Exception as e:
        print("??", e)
"""


def distinct_frames(dump: str) -> tuple[set[str], float]:
    t0 = time.perf_counter()
    snap = load_snapshot(dump)
    return {f for stack in snap.stacks for f in stack}, time.perf_counter() - t0


def vmlinux_addresses(build: Path, frames: set[str]) -> list[int]:
    b = symbolize.Binary.open("vmlinux", build / "vmlinux")
    out = []
    for text in frames:
        f = symbolize.parse(text)
        if f is None or f.module is not None:
            continue
        sym = b.symbol_for(f)
        if sym is not None:
            out.append(sym.value + max(f.offset - 1, 0))
    return sorted(set(out))


def timed_process(cmd: list[str], stdin: str, limit: float) -> tuple[float | None, str]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return None, ""
    if proc.returncode != 0:
        return None, proc.stderr[-400:]
    return time.perf_counter() - t0, proc.stdout


def _answered(out: str) -> int:
    """Output lines that carry a ``file:line`` (inline chains count each step)."""
    return sum(1 for line in out.splitlines() if re.search(r"\S+:\d+", line) and not line.startswith("??"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--build", required=True, type=Path, help="kernel build dir (O=) with debug info")
    ap.add_argument("--module", action="append", default=[], help="a module's .ko (repeatable)")
    ap.add_argument("--alt-python", help="an interpreter with pyelftools/drgn for the alternatives")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds before an alternative is cut off")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--all-functions", action="store_true", help="stress: one frame in every function of vmlinux instead of DUMP's"
    )
    args = ap.parse_args()

    frames, parse_s = distinct_frames(args.dump)
    if args.all_functions:
        b = symbolize.Binary.open("vmlinux", args.build / "vmlinux")
        frames = {f"{n}+{s.size // 2:#x}/{s.size:#x}" for n, syms in b.functions.items() for s in syms if s.size > 8}
    rows: list[tuple[str, str, str]] = []
    size = os.path.getsize(args.dump) / 1e6
    print(f"{args.dump}: {size:.1f} MB, {len(frames)} distinct frames (parse {parse_s:.1f} s, not counted)")

    cold_times, warm_times = [], []
    stats = None
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache  # cold: an empty symbol cache (test modules via --module)
            t0 = time.perf_counter()
            s = symbolize.Symbolizer(args.build, args.module)
            resolved = s.resolve(frames)
            cold_times.append(time.perf_counter() - t0)
            stats = s.stats
            t0 = time.perf_counter()
            w = symbolize.Symbolizer(args.build, args.module)
            again = w.resolve(frames)
            warm_times.append(time.perf_counter() - t0)
            assert again == resolved and w.stats.processes == 0
    n_ok = sum(v is not None for v in resolved.values())
    cold, warm = sorted(cold_times)[len(cold_times) // 2], sorted(warm_times)[len(warm_times) // 2]
    rows.append(("pagelab Symbolizer (addr2line), cold", f"{cold:.2f} s", f"{n_ok}/{len(frames)} resolved, {stats}"))
    rows.append(("pagelab Symbolizer, cached", f"{warm:.3f} s", "no process started"))

    addrs = vmlinux_addresses(args.build, frames)
    stdin = "".join(f"{a:#x}\n" for a in addrs)
    vmlinux = str(args.build / "vmlinux")
    for name, cmd in (
        ("addr2line -f -i (vmlinux only)", ["addr2line", "-e", vmlinux, "-a", "-f", "-i"]),
        ("llvm-symbolizer --inlines (vmlinux only)", ["llvm-symbolizer", f"--obj={vmlinux}", "--inlines"]),
    ):
        s, out = timed_process(cmd, stdin, args.limit)
        rows.append((name, "n/a" if s is None else f"{s:.2f} s", f"{len(addrs)} addresses, {_answered(out)} lines"))
    if args.alt_python:
        for name, code in (("pyelftools (line tables only, no inlines)", _PYELFTOOLS), ("drgn source_location", _DRGN)):
            s, out = timed_process([args.alt_python, "-c", code, vmlinux], stdin, args.limit)
            if s is not None:
                note = f"{len(addrs)} addresses, {_answered(out)} answered with file:line"
            else:
                note = (out.strip().splitlines() or ["did not finish"])[-1]
            rows.append(
                (
                    name,
                    f"> {args.limit:.0f} s" if s is None and not out else ("failed" if s is None else f"{s:.2f} s"),
                    note,
                )
            )

    print(
        f"machine {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {args.repeat}"
    )
    print("| resolver | seconds | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(json.dumps({"frames": len(frames), "cold_s": cold, "cached_s": warm}))


if __name__ == "__main__":
    main()
