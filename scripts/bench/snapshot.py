#!/usr/bin/env python3
"""Snapshot speed: pagelab's parallel po-read collector vs `cat` over SSH, on the same guest, same run.

The baseline is OpenSSH's `ssh guest cat /sys/kernel/debug/page_owner > file`.

    .venv/bin/python scripts/bench/snapshot.py [--kernel BZIMAGE | --kernel-src 7.3] [--memory 3G] [--cpus 2]
        [--fill-mib 1536] [--mode stack --mode handle]

Boots the default kernel (built and cached if needed), fills a tmpfs with --fill-mib MiB so that
page_owner has hundreds of thousands of records, then alternates: `cat /sys/kernel/debug/page_owner`
over SSH into a host file (the baseline), and Collector.take (parallel PFN ranges, merged in order,
compressed and parsed on the fly), once per --mode: ``stack`` reads page_owner as the kernel formats it
by default, ``handle`` (7.x) reads handles and puts the stacks back on the host from
show_stacks_handles (pagelab/pageowner/handles.py). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pagelab.collect.collector import READER_GUEST_PATH, Collector, build_reader
from pagelab.guest.image import build_image
from pagelab.guest.session import Guest, GuestOptions
from pagelab.run import workloads as wl
from pagelab.ui import UI


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", help="bzImage (default: pagelab's default build)")
    ap.add_argument("--kernel-src", help="build this source (a path or a Debian version: 7.3) instead of the default")
    ap.add_argument("--mode", action="append", choices=["auto", "stack", "handle"], help="collector read modes")
    ap.add_argument("--memory", default="3G")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--accel", default="auto")
    ap.add_argument("--fill-mib", type=int, default=1536)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--readers", type=int, action="append", help="reader counts to try (default: one per vCPU)")
    args = ap.parse_args()
    ui = UI(plain=True)

    if args.kernel:
        kernel: object = Path(args.kernel)
    else:
        from pagelab.kernel.build import BuildOptions, build_kernel

        kernel = build_kernel(BuildOptions(kernel_src=args.kernel_src), ui)
    extra = wl.guest_files()
    extra[READER_GUEST_PATH] = build_reader(ui=ui)
    image = build_image(None, extra, ui)
    options = GuestOptions(memory=args.memory, cpus=args.cpus, accel=args.accel)
    rows: list[tuple[str, int, int | None, float]] = []
    with Guest(kernel, image, options, ui) as guest, tempfile.TemporaryDirectory() as tmp:  # type: ignore[arg-type]
        ui.step(f"filling a tmpfs with {args.fill_mib} MiB")
        res = guest.run(f"sh {wl.catalogue()['tmpfs-grow'].guest_path} {args.fill_mib}", timeout=1200)
        if res.status != 0:
            print(f"fill failed: {res.stderr}", file=sys.stderr)
            return 4
        cpus = guest.run("nproc").stdout.strip()
        # The baseline is the plain thing a person would type: OpenSSH's client, `cat`, a redirect.
        # The guest's host key is pagelab's own, pinned through a known_hosts file as everywhere else.
        known_hosts = Path(tmp) / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{guest.ssh_port} {guest.keys.host_public}\n")
        ssh = [
            "ssh", "-p", str(guest.ssh_port), "-i", str(guest.keys.client_key),
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "LogLevel=ERROR",
            "root@127.0.0.1",
        ]  # fmt: skip
        for r in range(args.rounds):
            ui.step(f"round {r + 1}: cat over ssh")
            raw = Path(tmp) / f"cat-{r}.txt"
            t0 = time.perf_counter()
            with open(raw, "wb") as f:
                subprocess.run([*ssh, "cat /sys/kernel/debug/page_owner"], stdout=f, check=True, timeout=3600)
            cat_s = time.perf_counter() - t0
            rows.append(("`ssh guest cat …/page_owner > file` (OpenSSH)", raw.stat().st_size, None, cat_s))
            raw.unlink()
            for readers, mode in [(n, m) for n in args.readers or [None] for m in args.mode or ["auto"]]:
                ui.step(f"round {r + 1}: pagelab collector ({mode} mode)")
                out = Path(tmp) / f"snap-{r}-{readers}-{mode}"
                with Collector(guest, out, ui, readers=readers, read_mode=mode) as collector:
                    taken = collector.take("bench")
                rows.append(
                    (
                        f"pagelab collect, {taken.read_mode} mode ({taken.readers} readers, {taken.ranges} ranges, "
                        "zstd + parse)",
                        taken.bytes,
                        taken.snapshot.records,
                        taken.seconds,
                    )
                )
        kver = guest.kernel_version
        accel = guest.accel

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nSnapshot of page_owner — {platform.node()} ({os.cpu_count()} host cores), {time.strftime('%Y-%m-%d')}")
    print(f"guest: {kver}, {accel}, {args.memory}, {cpus} vCPUs online, after writing {args.fill_mib} MiB to tmpfs")
    print(f"host load average at the end (1/5/15 min): {load}\n")
    print("| round | method | dump MB | records | seconds | MB/s | speed-up vs this round's cat |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    rnd, base = 0, 0.0
    for name, size, records, secs in rows:
        if name.startswith("`ssh"):
            rnd, base = rnd + 1, secs
        rec = f"{records:,}" if records is not None else "–"
        print(
            f"| {rnd} | {name} | {size / 1e6:.1f} | {rec} | {secs:.1f} | {size / 1e6 / secs:.2f} | {base / secs:.2f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
