#!/usr/bin/env python3
"""Benchmark `pagelab build`: cold, warm no-op and incremental, each beside a plain-make baseline.

Usage: .venv/bin/python scripts/bench/build.py [--jobs N] [--extras kmemleak,memcg] [--skip-baseline-cold] [--keep]

Runs in a private cache ($XDG_CACHE_HOME pointed at a temp dir) so "cold" is really cold
(unpacking the Debian tarball included). Prints a markdown table for BENCHMARKS.md.

Rows:
- cold: `pagelab build` of the default config; baseline: the same steps by hand in a fresh O= dir
  (make tinyconfig, merge_config.sh -m, make olddefconfig, make -jN bzImage modules).
- warm no-op: the same `pagelab build` again (a cache hit); baseline: `make -jN bzImage modules`
  in the built tree (what a build system without a result cache has to run).
- + extras: `--fragment kconfigs/extras/X.config`, one at a time (each after the previous one);
  baseline: the cold build above. Then the default config again (a cache hit: nothing is rebuilt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGELAB = [sys.executable, "-m", "pagelab"]


CPU = {"seconds": 0.0}  # CPU seconds (user+sys) of the last timed() call's process tree


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    """Run ``cmd``; return wall seconds and stdout, and leave its process tree's CPU time in CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-baseline-cold", action="store_true", help="skip the hand-made cold build")
    ap.add_argument("--keep", action="store_true", help="keep the private cache")
    ap.add_argument("--extras", default="kmemleak,memcg", help="extras fragments added one at a time")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pagelab-bench-build-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    jobs = f"--jobs={args.jobs}"
    rows: list[tuple[str, str, str, str]] = []

    def pagelab_build(*fragments: str) -> tuple[float, dict, dict]:
        cmd = [*PAGELAB, "build", "--json", jobs]
        for frag in fragments:
            cmd += ["--fragment", str(ROOT / "kconfigs" / "extras" / f"{frag}.config")]
        seconds, out = timed(cmd, env)
        result = json.loads(out)
        return seconds, result, json.loads(Path(result["metadata"]).read_text())

    def cpu() -> str:
        return f", {fmt(CPU['seconds'])} CPU"

    try:
        load_start = os.getloadavg()[0]
        cold_s, cold, meta = pagelab_build()
        cold_cpu = cpu()
        tree = meta["source"]["tree"]
        base_s = None
        if not args.skip_baseline_cold:
            obj = tmp / "baseline-obj"
            frags = [str(ROOT / "kconfigs" / n) for n in ("qemu-x86_64.config", "page_owner.config")]
            t0 = time.monotonic()
            timed(["make", "-C", tree, f"O={obj}", "tinyconfig"], env)
            base = tmp / "tiny.config"
            shutil.copy(obj / ".config", base)
            merge = f"{tree}/scripts/kconfig/merge_config.sh"
            timed([merge, "-m", "-O", str(obj), str(base), *frags], env, cwd=Path(tree))
            timed(["make", "-C", tree, f"O={obj}", "olddefconfig"], env)
            timed(["make", "-C", tree, f"O={obj}", f"-j{args.jobs}", "bzImage", "modules"], env)
            base_s = time.monotonic() - t0
            base_cpu = cpu()  # the compile dominates; kconfig steps are a few seconds
            shutil.rmtree(obj, ignore_errors=True)
        cold_base = f"{fmt(base_s)}{base_cpu}" if base_s else "skipped"
        cold_row = f"{fmt(cold_s)}{cold_cpu} ({meta['objects']} lines)"
        rows.append(("cold, default config", cold_row, cold_base, "the same steps by hand (no unpacking)"))

        warm_s, warm, _ = pagelab_build()
        assert warm["cached"] is True
        make_j = ["make", "-C", tree, f"-j{args.jobs}", "bzImage", "modules"]
        noop_s, _ = timed([*make_j, f"O={cold['build_dir']}"], env)
        rows.append(("warm no-op (cache hit)", fmt(warm_s), fmt(noop_s), "`make bzImage modules`, nothing to do"))

        for extra in args.extras.split(","):
            incr_s, _, incr_meta = pagelab_build(extra)
            row = f"{fmt(incr_s)}{cpu()} ({incr_meta['objects']} lines)"
            rows.append((f"+ extras/{extra}.config", row, cold_base, "cold build by hand"))

        back_s, back, _ = pagelab_build()
        rows.append(("back to the default config", fmt(back_s) + (" (cache hit)" if back["cached"] else ""), "", ""))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True, text=True).stdout
    print(f"Machine: {platform.node()}, {os.cpu_count()} cores ({cpu.split(':')[-1].strip()}), ")
    print(
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, jobs {args.jobs}, kernel {cold['kernel_version']},"
    )
    print(
        f"compiler {meta['compiler']}; load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print("| scenario | pagelab build | baseline | baseline is |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
