"""``pagelab boot``: build (cached) or take a bzImage, build the image, boot, run CMD or open a shell."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import BinaryIO

from pagelab.errors import GuestCrash, UsageError
from pagelab.guest.image import build_image
from pagelab.guest.session import Guest, GuestOptions, bzimage_version
from pagelab.procs import signals_interrupt
from pagelab.ui import UI


def parse_upload(spec: str) -> tuple[Path, str]:
    """``SRC:DST`` → (host path, guest path). Raises UsageError if malformed or SRC is not a file."""
    src, sep, dst = spec.partition(":")
    if not sep or not src or not dst:
        raise UsageError(f"--upload {spec!r}: expected SRC:DST (host file : guest path)")
    path = Path(src)
    if not path.is_file():
        raise UsageError(f"--upload {spec!r}: {src} is not a file")
    return path, dst


def command_line(argv: list[str]) -> str | None:
    """The guest command: one argument is a shell string, several are an exact argv (quoted)."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        return None
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def boot_from_args(args: argparse.Namespace, ui: UI, stdout: BinaryIO, stderr: BinaryIO) -> int:
    """Run ``pagelab boot``; returns CMD's exit status (or the shell's).

    Raises UsageError (2), GuestCrash (3), BuildError/InfraError (4).
    """
    options = GuestOptions.from_args(args)
    uploads = [parse_upload(spec) for spec in getattr(args, "upload", None) or []]
    command = command_line(list(getattr(args, "cmd", None) or []))

    modules_dir = None
    build_flags = [
        flag
        for flag, value in (("--kernel-src", "kernel_src"), ("--base", "base"), ("--fragment", "fragment"))
        if getattr(args, value, None)
    ]
    if getattr(args, "kernel", None) and build_flags:
        raise UsageError(f"--kernel boots a ready bzImage: {', '.join(build_flags)} would be ignored")
    if getattr(args, "kernel", None):
        kernel: object = Path(args.kernel)
        if not Path(args.kernel).is_file():
            raise UsageError(f"--kernel {args.kernel}: not a file")
        if bzimage_version(Path(args.kernel)) is None:
            raise UsageError(f"--kernel {args.kernel}: not an x86 bzImage (no setup header)")
    else:
        from pagelab.kernel.build import BuildOptions, build_kernel

        result = build_kernel(BuildOptions.from_args(args), ui)
        kernel = result
        modules_dir = result.modules_dir
    image = build_image(modules_dir=modules_dir, ui=ui)

    ui.step("booting guest")
    # SIGTERM unwinds like Ctrl-C, so the guest is shut down and the run directory removed.
    with signals_interrupt():
        try:
            with Guest(kernel, image, options, ui) as guest:  # type: ignore[arg-type]
                t = guest.timings
                ui.step(
                    f"guest {guest.kernel_version} ready ({guest.accel}) in {t['launch_to_ssh']:.1f} s: "
                    f"qemu {t['qemu_start']:.1f} · kernel {t['kernel_boot']:.1f} · init {t['init']:.1f} "
                    f"· sshd {t['sshd']:.1f}"
                )
                for src, dst in uploads:
                    ui.step(f"uploaded {src} -> {guest.upload(src, dst)}")
                if command is None:
                    return guest.shell()

                def out(chunk: bytes) -> None:
                    stdout.write(chunk)
                    stdout.flush()

                def err(chunk: bytes) -> None:
                    stderr.write(chunk)
                    stderr.flush()

                started = time.monotonic()
                status = guest.run_stream(command, out, options.timeout, stderr_sink=err)
                ui.step(f"command exited with status {status} after {time.monotonic() - started:.1f} s")
                return status
        except GuestCrash as crash:
            lines = crash.excerpt.splitlines() or ["(no console lines)"]
            ui.info("guest console:\n" + "\n".join(f"  | {line}" for line in lines))
            raise
