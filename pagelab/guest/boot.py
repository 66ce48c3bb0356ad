"""``pagelab boot``: build (cached) or take a bzImage, build the image, boot, run CMD or open a shell."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import BinaryIO

from pagelab.cache import mark_build_in_use
from pagelab.errors import GuestCrash, UsageError
from pagelab.guest.image import build_image
from pagelab.guest.session import BuiltKernel, Guest, GuestOptions, bzimage_version
from pagelab.procs import signals_interrupt
from pagelab.settings import BY_NAME, Settings, parse_upload
from pagelab.ui import UI


def command_line(argv: list[str]) -> str | None:
    """The guest command: one argument is a shell string, several are an exact argv (quoted)."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        return None
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def boot(settings: Settings, command: str | None, ui: UI, stdout: BinaryIO, stderr: BinaryIO) -> int:
    """Run ``pagelab boot``: CMD (``command_line``) or, for None, a shell; returns its exit status.

    Raises UsageError (2), GuestCrash (3), BuildError/InfraError (4).
    """
    options = GuestOptions.from_settings(settings)
    uploads = [parse_upload(spec) for spec in settings.upload]

    modules_dir = None
    ignored = [BY_NAME[name].flag for name in ("kernel_src", "base", "fragments") if getattr(settings, name)]
    if settings.kernel and ignored:
        raise UsageError(f"--kernel boots a ready bzImage: {', '.join(ignored)} would be ignored")
    if settings.kernel:
        kernel: Path | BuiltKernel = Path(settings.kernel)
        mark_build_in_use(settings.kernel)  # a bzImage in the build cache: no prune removes it while the guest runs
        if not Path(settings.kernel).is_file():
            raise UsageError(f"--kernel {settings.kernel}: not a file")
        if bzimage_version(Path(settings.kernel)) is None:
            raise UsageError(f"--kernel {settings.kernel}: not an x86 bzImage (no setup header)")
    else:
        from pagelab.kernel.build import BuildOptions, build_kernel

        result = build_kernel(BuildOptions.from_settings(settings), ui)
        kernel = result
        modules_dir = result.modules_dir
    image = build_image(modules_dir=modules_dir, ui=ui)

    ui.step("booting guest")
    # SIGTERM unwinds like Ctrl-C, so the guest is shut down and the run directory removed.
    with signals_interrupt():
        try:
            with Guest(kernel, image, options, ui) as guest:
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
