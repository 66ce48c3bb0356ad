"""Run profiles: the settings of ``pagelab run`` as TOML, overridden by command-line flags.

A profile has up to four tables; every key but ``description`` mirrors a flag (``fragments`` ↔ ``--fragment``)::

    description = "what this profile hunts"
    [kernel]      src, base, fragments, jobs
    [guest]       kernel, accel, memory, cpus, append, upload, timeout
    [run]         workloads, iterations, settle, drop_caches, top, readers
    [thresholds]  fail_on_growth

Relative paths in a profile are relative to the profile file. A flag given on the command line
replaces the profile's value (lists too: ``--workload`` replaces ``workloads``).
"""

from __future__ import annotations

import argparse
import shlex
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pagelab.errors import UsageError
from pagelab.run.workloads import DEFAULT_WORKLOADS

# (table, key) -> (RunSettings attribute, expected type, is a path relative to the profile)
_SCHEMA: dict[tuple[str, str], tuple[str, type | tuple[type, ...], str]] = {
    ("kernel", "src"): ("kernel_src", str, "path"),
    ("kernel", "base"): ("base", str, "base"),
    ("kernel", "fragments"): ("fragments", list, "paths"),
    ("kernel", "jobs"): ("jobs", int, ""),
    ("guest", "kernel"): ("kernel", str, "path"),
    ("guest", "accel"): ("accel", str, ""),
    ("guest", "memory"): ("memory", (str, int), ""),
    ("guest", "cpus"): ("cpus", int, ""),
    ("guest", "append"): ("append", list, ""),
    ("guest", "upload"): ("upload", list, "uploads"),
    ("guest", "timeout"): ("timeout", (int, float), ""),
    ("run", "workloads"): ("workloads", list, ""),
    ("run", "iterations"): ("iterations", int, ""),
    ("run", "settle"): ("settle", (int, float), ""),
    ("run", "drop_caches"): ("drop_caches", bool, ""),
    ("run", "top"): ("top", int, ""),
    ("run", "readers"): ("readers", int, ""),
    ("thresholds", "fail_on_growth"): ("fail_on_growth", int, ""),
}

# RunSettings attribute -> argparse dest of the flag that overrides it.
_FLAG_DEST = {
    "kernel_src": "kernel_src",
    "base": "base",
    "fragments": "fragment",
    "jobs": "jobs",
    "kernel": "kernel",
    "accel": "accel",
    "memory": "memory",
    "cpus": "cpus",
    "append": "append",
    "upload": "upload",
    "timeout": "timeout",
    "workloads": "workload",
    "iterations": "iterations",
    "settle": "settle",
    "drop_caches": "drop_caches",
    "top": "top",
    "readers": "readers",
    "fail_on_growth": "fail_on_growth",
}


@dataclass
class RunSettings:
    """Everything a run needs to know, after profile and flags are merged. ``None`` means the stage's default."""

    kernel_src: str | None = None
    base: str | None = None
    fragments: list[str] = field(default_factory=list)
    jobs: int | None = None
    kernel: str | None = None
    accel: str | None = None
    memory: str | None = None
    cpus: int | None = None
    append: list[str] = field(default_factory=list)
    upload: list[str] = field(default_factory=list)
    timeout: float | None = None
    workloads: list[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS))
    iterations: int = 3
    settle: float = 1.0
    drop_caches: bool = False
    top: int = 10
    readers: int | None = None
    fail_on_growth: int | None = None
    profile: str | None = None
    description: str = ""

    def validate(self) -> None:
        """Check ranges a type check cannot. Raises UsageError naming the setting."""
        if self.iterations < 1:
            raise UsageError(f"--iterations: expected at least 1, got {self.iterations}")
        if self.settle < 0:
            raise UsageError(f"--settle: expected seconds ≥ 0, got {self.settle}")
        if self.top < 1:
            raise UsageError(f"--top: expected at least 1, got {self.top}")
        if self.cpus is not None and self.cpus < 1:
            raise UsageError(f"--cpus: expected at least 1, got {self.cpus}")
        if self.readers is not None and self.readers < 1:
            raise UsageError(f"readers: expected at least 1, got {self.readers}")
        if self.fail_on_growth is not None and self.fail_on_growth < 0:
            raise UsageError(f"--fail-on-growth: expected pages ≥ 0, got {self.fail_on_growth}")
        if not self.workloads:
            raise UsageError("no workloads: give --workload or a profile with [run] workloads")
        for up in self.upload:
            if ":" not in up:
                raise UsageError(f"--upload {up!r}: expected SRC:DST")

    def namespace(self) -> argparse.Namespace:
        """An argparse-like namespace with the flag names, for the stages' ``from_args``."""
        ns = argparse.Namespace()
        for attr, dest in _FLAG_DEST.items():
            setattr(ns, dest, getattr(self, attr))
        ns.keep = False
        return ns

    def reproduce_argv(self) -> list[str]:
        """The ``pagelab run`` command line that repeats this run with every setting explicit."""
        argv = ["pagelab", "run"]
        scalar = [
            ("kernel_src", "--kernel-src"),
            ("base", "--base"),
            ("jobs", "--jobs"),
            ("kernel", "--kernel"),
            ("accel", "--accel"),
            ("memory", "--memory"),
            ("cpus", "--cpus"),
            ("timeout", "--timeout"),
        ]
        for attr, flag in scalar:
            value = getattr(self, attr)
            if value is not None:
                argv += [flag, str(value)]
        for frag in self.fragments:
            argv += ["--fragment", frag]
        for extra in self.append:
            argv += ["--append", extra]
        for up in self.upload:
            argv += ["--upload", up]
        for w in self.workloads:
            argv += ["--workload", w]
        argv += ["--iterations", str(self.iterations), "--settle", f"{self.settle:g}"]
        if self.drop_caches:
            argv.append("--drop-caches")
        if self.fail_on_growth is not None:
            argv += ["--fail-on-growth", str(self.fail_on_growth)]
        argv += ["--top", str(self.top)]
        if self.readers is not None:
            argv += ["--readers", str(self.readers)]
        return argv

    def reproduce(self) -> str:
        return shlex.join(self.reproduce_argv())


def _check_type(where: str, value: Any, expected: type | tuple[type, ...]) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    # bool is an int in Python; a TOML `true` is not a count.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        raise UsageError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: expected a list of strings")


def _resolve(base_dir: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a profile into RunSettings attribute values. Raises UsageError naming the file and key."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--profile {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML: {err}") from None
    base_dir = path.resolve().parent
    values: dict[str, Any] = {"profile": str(path)}
    for table, content in data.items():
        if table == "description":
            _check_type(f"{path}: description", content, str)
            values["description"] = content
            continue
        if not isinstance(content, dict):
            raise UsageError(f"{path}: unknown top-level key {table!r} (expected description, [kernel], [guest], …)")
        for key, value in content.items():
            spec = _SCHEMA.get((table, key))
            if spec is None:
                known = ", ".join(k for (t, k) in _SCHEMA if t == table) or "none (unknown table)"
                raise UsageError(f"{path}: unknown key [{table}] {key!r}; known: {known}")
            attr, expected, kind = spec
            _check_type(f"{path}: [{table}] {key}", value, expected)
            is_file_base = kind == "base" and value not in ("tinyconfig", "defconfig", "allnoconfig")
            if kind == "path" or is_file_base:
                value = _resolve(base_dir, value)
            elif kind == "paths":
                value = [_resolve(base_dir, v) for v in value]
            elif kind == "uploads":
                value = [_resolve_upload(base_dir, v) for v in value]
            elif attr == "memory":
                value = str(value)
            values[attr] = value
    return values


def _resolve_upload(base_dir: Path, spec: str) -> str:
    src, sep, dst = spec.partition(":")
    return f"{_resolve(base_dir, src)}{sep}{dst}" if sep else spec


def settings_from(args: argparse.Namespace) -> RunSettings:
    """Merge ``--profile`` (if any) with the flags; flags win. Raises UsageError on bad values."""
    settings = RunSettings()
    profile = getattr(args, "profile", None)
    if profile:
        for attr, value in load_profile(profile).items():
            setattr(settings, attr, value)
    for attr, dest in _FLAG_DEST.items():
        value = getattr(args, dest, None)
        if value is None or value == []:
            continue
        setattr(settings, attr, list(value) if isinstance(value, list) else value)
    valid = {f.name for f in fields(RunSettings)}
    assert set(_FLAG_DEST) <= valid
    settings.validate()
    return settings
