#!/usr/bin/env python3
"""Boot benchmark: launch to SSH-ready (per phase) and `pagelab boot -- true`, beside a raw-QEMU baseline.

Baseline: the same kernel and image started by a hand-written QEMU command line (`-nographic`, default devices),
timed from launch to the first SSH banner byte on the forwarded port — no pagelab in the loop.
Prints a markdown table (medians of --runs runs). Usage:
    .venv/bin/python scripts/bench/boot.py [--runs 5] [--kernel BZIMAGE] [--accel tcg]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pagelab.guest import Guest, GuestOptions
from pagelab.guest.image import build_image
from pagelab.guest.machine import free_port
from pagelab.guest.qemu import qemu_version
from pagelab.ui import UI


def raw_qemu_to_banner(kernel: Path, image: Path, accel: str) -> float:
    """Seconds from launching a hand-made QEMU command to the guest's SSH banner on the forward."""
    port = free_port()
    argv = [
        "qemu-system-x86_64", "-accel", accel, "-m", "1G", "-smp", "2,sockets=2", "-nographic", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(image), "-append", "console=ttyS0 page_owner=on panic=-1",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < 120:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(8).startswith(b"SSH-"):
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("raw QEMU: no SSH banner within 120 s")
    finally:
        proc.kill()
        proc.wait()


def pagelab_boot(kernel: Path, image: Path, accel: str) -> dict[str, float]:
    with Guest(kernel, image, GuestOptions(accel=accel), UI(plain=True, quiet=True)) as g:
        timings = dict(g.timings)
    return timings


def stream_rates(kernel: Path, image: Path, accel: str, size_mb: int) -> dict[str, float]:
    """MB/s of run_stream over the SSH channel and over the direct TCP path, zeros and page_owner."""
    rates: dict[str, float] = {}
    with Guest(kernel, image, GuestOptions(accel=accel), UI(plain=True, quiet=True)) as g:
        session = g._ssh
        assert session is not None
        for what, cmd in (
            (f"{size_mb} MB of zeros", f"head -c {size_mb * 1000 * 1000} /dev/zero"),
            ("page_owner dump after boot", "cat /sys/kernel/debug/page_owner"),
        ):
            for direct in (False, True):
                if direct and "page_owner" in cmd:
                    cmd = f"{cmd} | dd obs=1M 2>/dev/null"  # what Guest.stream does on the direct path
                count = [0]

                def sink(chunk: bytes, count: list[int] = count) -> None:
                    count[0] += len(chunk)

                start = time.monotonic()
                session.run_stream(cmd, sink, 600, direct=direct)
                elapsed = time.monotonic() - start
                rates[f"stream {what}: {'direct TCP' if direct else 'SSH channel (baseline)'}, MB/s"] = (
                    count[0] / elapsed / 1e6
                )
        start = time.monotonic()
        size = int(g.run("cat /sys/kernel/debug/page_owner | wc -c", timeout=600).stdout)
        rates["page_owner read in the guest only (no transfer), MB/s"] = size / (time.monotonic() - start) / 1e6
    return rates


def cli_boot_true(kernel: Path, accel: str) -> float:
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pagelab", "boot", "--kernel", str(kernel), "--accel", accel, "--", "true"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", type=Path, help="bzImage (default: the cached default build)")
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm", "auto"])
    ap.add_argument("--stream-mb", type=int, default=50, help="size of the zeros stream (0: skip streams)")
    args = ap.parse_args()
    ui = UI(plain=True, quiet=True)
    modules = None
    kernel = args.kernel
    if kernel is None:
        from pagelab.kernel.build import BuildOptions, build_kernel

        build = build_kernel(BuildOptions(), ui)
        kernel, modules = build.bzimage, build.modules_dir
    image = build_image(modules_dir=modules, ui=ui)
    lean = build_image(modules_dir=modules, ui=ui, tools=())

    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    for _ in range(args.runs):
        add("baseline: raw QEMU launch → SSH banner (same kernel + image)", raw_qemu_to_banner(kernel, image, "tcg"))
        t = pagelab_boot(kernel, image, args.accel)
        add("pagelab: launch → SSH ready (authenticated)", t["launch_to_ssh"])
        for phase in ("qemu_start", "kernel_boot", "init", "sshd"):
            add(f"  phase {phase}", t[phase])
        add(
            "pagelab, image without stress-ng: launch → SSH ready",
            pagelab_boot(kernel, lean, args.accel)["launch_to_ssh"],
        )
        add("`pagelab boot -- true` end to end (warm cache)", cli_boot_true(kernel, args.accel))
    if args.stream_mb:
        for _ in range(min(args.runs, 3)):
            for name, value in stream_rates(kernel, image, args.accel, args.stream_mb).items():
                add(name, value)

    host = f"{platform.node()}, {os.cpu_count()} cores, {platform.release()}"
    print(f"Machine: {host}; {qemu_version()}; accel {args.accel}")
    print(f"Load average at the end (other work on the host skews TCG timings): {os.getloadavg()[0]:.1f}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; kernel {kernel}; runs {args.runs}")
    sizes = f"{image.stat().st_size / 1e6:.1f} MB, {lean.stat().st_size / 1e6:.1f} MB without stress-ng"
    print(f"Image: uncompressed cpio, {sizes}")
    print()
    print("| measure | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
