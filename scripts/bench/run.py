#!/usr/bin/env python3
"""End-to-end `pagelab run --workload true --iterations 1` with a warm kernel and image, vs the boot floor.

    .venv/bin/python scripts/bench/run.py [--repeat 3]

The first run warms the caches (kernel build, image, po-read) and is not counted. The baseline is
`pagelab boot -- true` (boot, one command, shutdown): what any run costs before it snapshots anything.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGELAB = [sys.executable, "-m", "pagelab"]


def _timed(argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = [*PAGELAB, "run", "--workload", "true", "--iterations", "1", "--ci"]
        warm, code = _timed([*run, "--out", f"{tmp}/warm"])
        if code != 0:
            print(f"warm-up run failed (exit {code})", file=sys.stderr)
            return code
        boots, runs = [], []
        for i in range(args.repeat):
            secs, code = _timed([*PAGELAB, "boot", "--", "true"])
            boots.append(secs)
            secs, code2 = _timed([*run, "--out", f"{tmp}/run{i}"])
            runs.append(secs)
            if code or code2:
                print(f"failed: boot exit {code}, run exit {code2}", file=sys.stderr)
                return 4
        timings = json.loads(Path(f"{tmp}/run{args.repeat - 1}/report.json").read_text())["timings"]
    print(
        f"\n`pagelab run --workload true --iterations 1`, warm caches — {platform.node()} "
        f"({os.cpu_count()} host cores), {time.strftime('%Y-%m-%d')}, "
        f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print("| command | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for name, vals in (
        ("`pagelab boot -- true` (baseline: boot + shutdown)", boots),
        ("`pagelab run --workload true --iterations 1`", runs),
    ):
        print(f"| {name} | {statistics.median(vals):.1f} | {min(vals):.1f} | {max(vals):.1f} |")
    print(
        f"\nwarm-up (first) run: {warm:.1f} s; last run's phases: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
