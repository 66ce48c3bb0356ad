"""A run's artifact directory: console.log, snapshots/, report.json, report.txt, junit.xml, metadata.json."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pagelab import __version__
from pagelab.cache import atomic_write
from pagelab.errors import UsageError
from pagelab.procs import tool_version


def default_out_dir(root: str | Path = "runs", now: float | None = None) -> Path:
    """``runs/<UTC timestamp>`` (suffixed ``-2``, ``-3``… if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    base = Path(root) / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    return path


class RunDir:
    """Paths of one run's artifacts; created on construction. Raises UsageError if it cannot be."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--out {self.path}: cannot create: {err.strerror or err}") from None

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def report_txt(self) -> Path:
        return self.path / "report.txt"

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def metadata_json(self) -> Path:
        return self.path / "metadata.json"

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, path: Path, text: str) -> None:
        atomic_write(path, text)


def kernel_compiler(config: str | Path | None) -> str | None:
    """``CONFIG_CC_VERSION_TEXT`` of a kernel .config: the compiler that built the kernel."""
    if config is None:
        return None
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("CONFIG_CC_VERSION_TEXT="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def tool_versions(config: str | Path | None = None) -> dict[str, str | None]:
    """pagelab, Python, QEMU and compiler versions (None where a tool is missing)."""
    return {
        "pagelab": __version__,
        "python": platform.python_version(),
        "qemu": tool_version(["qemu-system-x86_64", "--version"]),
        "host_compiler": tool_version(["gcc", "--version"]),
        "kernel_compiler": kernel_compiler(config),
    }


def metadata(
    *,
    settings_reproduce: str,
    build: dict[str, Any] | None,
    guest: dict[str, Any],
    timings: dict[str, float],
    status: str,
    exit_code: int,
    started: float,
    argv: list[str] | None = None,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """metadata.json: versions, kernel, guest, timings, the command line and the exact reproducer."""
    argv = list(sys.argv if argv is None else argv)
    return {
        "versions": tool_versions(config),
        "kernel": build or {},
        "guest": guest,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "status": status,
        "exit_code": exit_code,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"system": platform.platform(), "cpus": os.cpu_count(), "node": platform.node()},
        "cmdline": shlex.join(argv),
        "cwd": os.getcwd(),
        "reproduce": settings_reproduce,
    }
