#!/usr/bin/env python3
"""Benchmark `pagelab build`: cold, warm no-op and incremental, each beside a plain-make baseline.

Usage: .venv/bin/python scripts/bench/build.py [--jobs N] [--skip-baseline-cold] [--keep]

Runs in a private cache ($XDG_CACHE_HOME pointed at a temp dir) so "cold" is really cold
(unpacking the Debian tarball included). Prints a markdown table for BENCHMARKS.md.

Rows:
- cold: `pagelab build` of the default config; baseline: the same steps by hand in a fresh O= dir
  (make tinyconfig, merge_config.sh -m, make olddefconfig, make -jN bzImage modules).
- warm no-op: the same `pagelab build` again (a cache hit); baseline: `make -jN bzImage modules`
  in the built tree (what a build system without a result cache has to run).
- incremental: `--fragment kconfigs/extras/memcg.config`; baseline: the cold build above.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGELAB = [sys.executable, "-m", "pagelab"]


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
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
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pagelab-bench-build-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    jobs = f"--jobs={args.jobs}"
    rows: list[tuple[str, str, str, str]] = []
    try:
        cold_s, out = timed([*PAGELAB, "build", "--json", jobs], env)
        cold = json.loads(out)
        meta = json.loads(Path(cold["metadata"]).read_text())
        tree = meta["source"]["tree"]

        warm_s, out = timed([*PAGELAB, "build", "--json", jobs], env)
        assert json.loads(out)["cached"] is True
        noop_make_s, _ = timed(
            ["make", "-C", tree, f"O={cold['build_dir']}", f"-j{args.jobs}", "bzImage", "modules"], env
        )

        memcg = str(ROOT / "kconfigs" / "extras" / "memcg.config")
        incr_s, out = timed([*PAGELAB, "build", "--json", jobs, "--fragment", memcg], env)
        incr = json.loads(out)

        base_s = None
        if not args.skip_baseline_cold:
            obj = tmp / "baseline-obj"
            frags = [str(ROOT / "kconfigs" / n) for n in ("qemu-x86_64.config", "page_owner.config")]
            t0 = time.monotonic()
            timed(["make", "-C", tree, f"O={obj}", "tinyconfig"], env)
            base = tmp / "tiny.config"
            shutil.copy(obj / ".config", base)
            timed(
                [f"{tree}/scripts/kconfig/merge_config.sh", "-m", "-O", str(obj), str(base), *frags],
                env,
                cwd=Path(tree),
            )
            timed(["make", "-C", tree, f"O={obj}", "olddefconfig"], env)
            timed(["make", "-C", tree, f"O={obj}", f"-j{args.jobs}", "bzImage", "modules"], env)
            base_s = time.monotonic() - t0

        unpack = "incl. unpacking the tarball"
        rows.append(
            ("cold, default config", fmt(cold_s), fmt(base_s) if base_s else "skipped", f"by hand ({unpack} not)")
        )
        rows.append(("warm no-op (cache hit)", fmt(warm_s), fmt(noop_make_s), "`make bzImage modules` no-op"))
        incr_meta = json.loads(Path(incr["metadata"]).read_text())
        rows.append(
            (
                "incremental, + extras/memcg.config",
                f"{fmt(incr_s)} ({incr_meta['objects']} objects)",
                f"{fmt(base_s)} ({meta['objects']} objects)" if base_s else f"{meta['objects']} objects cold",
                "cold build",
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True, text=True).stdout
    print(f"Machine: {platform.node()}, {os.cpu_count()} cores ({cpu.split(':')[-1].strip()}), ")
    print(
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, jobs {args.jobs}, kernel {cold['kernel_version']},"
    )
    print(f"compiler {meta['compiler']}; load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| scenario | pagelab build | baseline | baseline is |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
