#!/usr/bin/env python3
"""What following allocations costs: analysis of a run (baseline + N iterations) with identities and without.

Usage: identities.py [--size MB] [--iterations N] [--dir DIR] [--baseline-rev REV] [--repeat N]

The run is made by make_dump.py --run from the real records of tests/fixtures/report_po612.txt.xz: every
snapshot about --size MB (default 244), allocations that keep their PFN and ts from one snapshot to the
next, 10% freed and reused per iteration, 1% growth. Each row is one fresh process that does what
``pagelab run`` does after the guest is gone: parse every snapshot into a Snapshot, then suspects() and
the report JSON. Rows:
- baseline (REV): the same analysis with the code of --baseline-rev (default: before identities), when given
- without identities: this tree, ``load_snapshot(identities=False)`` (no columns, verdicts are ``growth``)
- with identities: this tree as ``pagelab run`` uses it (columns, matching, cohorts, ages, verdicts)
Wall seconds are the median of --repeat runs (the lower middle one for an even count), with that run's parse and
analysis split; peak RSS from /usr/bin/time (max over the runs).
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
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "fixtures" / "report_po612.txt.xz"

CHILD = r"""
import glob, json, sys, time
from pagelab.pageowner.analyse import load_snapshot
from pagelab.pageowner import diff
mode = sys.argv[2]
t0 = time.perf_counter()
files = sorted(glob.glob(sys.argv[1] + "/*.txt"))
if mode == "old":
    snaps = [load_snapshot(f) for f in files]
else:
    snaps = [load_snapshot(f, identities=(mode == "with")) for f in files]
t1 = time.perf_counter()
found = diff.suspects(snaps)
report = diff.to_json(snaps, found, top=50)
t2 = time.perf_counter()
verdicts = {}
for s in found:
    v = getattr(s, "verdict", "n/a")
    verdicts[v] = verdicts.get(v, 0) + 1
print(json.dumps({"parse_s": t1 - t0, "analysis_s": t2 - t1, "records": sum(s.records or 0 for s in snaps),
                  "suspects": len(found), "verdicts": verdicts}))
"""


def measure(tree: Path, run_dir: Path, mode: str) -> tuple[float, int, dict]:
    """Wall seconds, peak RSS (KiB) and the child's own figures (plus its CPU seconds) for one analysis."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.NamedTemporaryFile("r") as rss:
        cmd = ["/usr/bin/time", "-q", "-f", "%M %U %S", "-o", rss.name, sys.executable, "-c", CHILD, str(run_dir), mode]
        t0 = time.perf_counter()
        # cwd elsewhere: ``python -c`` puts the cwd first on sys.path, before PYTHONPATH's tree.
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=tempfile.gettempdir())
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"{mode}: exited {res.returncode}: {res.stderr[-2000:]}")
        peak, user, system = rss.read().split()
        child = json.loads(res.stdout.strip().splitlines()[-1])
        child["cpu_s"] = float(user) + float(system)
        return wall, int(peak), child


def baseline_tree(rev: str, into: Path) -> Path:
    """The package as it was at ``rev`` (git archive), for the 'today' row."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pagelab"], capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=244.0, help="MB per snapshot (default 244)")
    ap.add_argument("--iterations", type=int, default=3, help="iterations after the baseline (default 3)")
    ap.add_argument("--dir", type=Path, help="where the run's dumps live (made if missing; default: a temp dir)")
    ap.add_argument("--baseline-rev", help="git revision to measure as the 'today' row (e.g. b55167a^)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row (median; default 1)")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="pagelab-bench-")
    run_dir = args.dir or Path(tmp.name) / "run"
    if not sorted(run_dir.glob("*.txt")):
        sys.path.insert(0, str(ROOT / "scripts" / "bench"))
        import make_dump

        t0 = time.perf_counter()
        made = make_dump.generate_run(
            make_dump.load_records([str(SOURCE)]),
            run_dir,
            size=int(args.size * 1_000_000),
            iterations=args.iterations,
            seed=1,
            churn=0.1,
            growth=0.01,
        )
        print(f"made {len(made)} dumps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    sizes = [p.stat().st_size for p in sorted(run_dir.glob("*.txt"))]
    rows = []
    if args.baseline_rev:
        rows.append(
            (f"baseline ({args.baseline_rev})", baseline_tree(args.baseline_rev, Path(tmp.name) / "base"), "old")
        )
    rows += [("without identities", ROOT, "without"), ("with identities", ROOT, "with")]
    # Rounds interleave the rows, so that a change in the (shared) host's load hits every row alike.
    measured: dict[str, list[tuple[float, int, dict]]] = {name: [] for name, _, _ in rows}
    for _ in range(args.repeat):
        for name, tree, mode in rows:
            measured[name].append(measure(tree, run_dir, mode))
            wall, peak, child = measured[name][-1]
            print(f"{name}: {wall:.1f} s, CPU {child['cpu_s']:.1f} s, {peak / 1024:.0f} MiB", file=sys.stderr)
    results = []
    for name, _, _ in rows:
        runs = sorted(measured[name], key=lambda r: r[0])
        middle = runs[(len(runs) - 1) // 2]  # the median run (the lower one of two): its own parse/analysis split
        results.append((name, middle[0], max(r[1] for r in runs), middle[2]))

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(
        f"Machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{datetime.date.today().isoformat()}"
    )
    print(
        f"Run: {len(sizes)} snapshots of {statistics.mean(sizes) / 1e6:.0f} MB "
        f"({results[-1][3]['records']:,} records in all), median of {args.repeat}\n"
    )
    print("| analysis | wall s | CPU s | parse s | suspects+JSON s | peak RSS MiB | verdicts |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, wall, rss, child in results:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(child["verdicts"].items()))
        cells = [name, f"{wall:.1f}", f"{child['cpu_s']:.1f}", f"{child['parse_s']:.1f}", f"{child['analysis_s']:.2f}"]
        cells.append(f"{rss / 1024:.0f}")
        print("| " + " | ".join([*cells, verdicts]) + " |")
    base = results[-2]
    new = results[-1]
    print(
        f"\nwith / without: wall ×{new[1] / base[1]:.2f}, CPU ×{new[3]['cpu_s'] / base[3]['cpu_s']:.2f}, "
        f"peak RSS {(new[2] - base[2]) / 1024:+.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
