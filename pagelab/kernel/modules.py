"""Test kernel modules (``guest/modules/<name>/``) built out of tree against a pagelab kernel build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pagelab.cache import cache_dir, content_key, file_lock, file_sha256, mark_in_use, mark_used
from pagelab.errors import UsageError
from pagelab.procs import step_failed
from pagelab.resources import guest_dir
from pagelab.ui import UI

MODULES_DIR = guest_dir() / "modules"


def available() -> list[str]:
    """Names of the test modules shipped in the repository."""
    return sorted(p.name for p in MODULES_DIR.iterdir() if (p / "Makefile").is_file()) if MODULES_DIR.is_dir() else []


def build_module(name: str, build_dir: Path, kernel_key: str, ui: UI, *, jobs: int | None = None) -> Path:
    """``guest/modules/NAME`` built with ``make -C BUILD_DIR M=DIR MO=DIR modules`` (cached by sources and kernel).

    ``kernel_key`` identifies the kernel (its config sha256 and version). Returns the ``.ko``.
    Raises UsageError for an unknown module, BuildError when make fails.
    """
    src = MODULES_DIR / name
    if not (src / "Makefile").is_file():
        raise UsageError(f"test module {name!r}: no {src}/Makefile (available: {', '.join(available()) or 'none'})")
    files = sorted(p for p in src.iterdir() if p.is_file())
    key = content_key([kernel_key, str(build_dir), "MO", *(f"{p.name}:{file_sha256(p)}" for p in files)])
    directory = cache_dir("modules", name, key)
    ko = directory / "src" / f"{name}.ko"
    with file_lock(directory / ".lock"):
        if ko.exists():
            mark_used(directory)
            mark_in_use(directory)
            return ko
        ui.step(f"building test module {name} against {build_dir}")
        work = directory / "src"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        # MO= names the output directory (Documentation/kbuild/modules.rst, 6.13+): 7.3 invoked with -C on
        # an O= build dir writes the objects there instead of into M=. Older trees ignore MO= and use M=.
        cmd = ["make", "-C", str(build_dir), f"M={work}", f"MO={work}", f"-j{jobs or os.cpu_count() or 1}", "modules"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not ko.exists():
            hint = f"no {ko.name} produced" if proc.returncode == 0 else ""
            raise step_failed(
                f"test module {name}: `{' '.join(cmd)}`", proc.returncode, output=proc.stdout + proc.stderr, hint=hint
            )
        mark_in_use(directory)
    return ko
