"""Every setting of ``pagelab build``, ``boot`` and ``run``, declared once.

A setting is a field of ``Settings`` whose metadata says how it is spelled on the command line and in a
profile, what it means and what values it takes. Everything else is derived from that one declaration:

- the argparse groups of ``build``/``boot``/``run`` (``add_arguments``) and what a command line gave (``given``),
- the profile schema: ``[kernel]``/``[guest]``/``[run]``/``[thresholds]`` keys, their types and how
  relative paths resolve (``from_toml``, used by ``pagelab.run.profiles``),
- the reproducer command line of a run (``reproduce_argv``),
- the typed options of each stage (``BuildOptions.from_settings`` in ``pagelab/kernel/build.py``,
  ``GuestOptions.from_settings`` in ``pagelab/guest/session.py``; the run reads ``Settings`` itself).

A new setting is one more field below (with an ``example``: the round-trip tests in
``tests/unit/test_settings.py`` pick it up from there) and the code of the stage that uses it.
"""

# The Settings fields below are declared by a call (_setting wraps dataclasses.field with the declaration).
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import os
import re
import shlex
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pagelab.errors import UsageError
from pagelab.run.workloads import DEFAULT_WORKLOADS

Stage = Literal["build", "guest", "run"]
#: How a value is interpreted beyond its type. ``path``: a host path (relative to the profile file in a
#: profile); ``source``: a path or, when no such path exists, a version name (``--kernel-src 7.3``,
#: pagelab/kernel/source.py); ``base``: tinyconfig, defconfig or a path; ``fragment``: a shipped fragment
#: name or a path (``pagelab/kernel/fragments.py``); ``upload``: ``SRC:DST`` with SRC a host path.
Kind = Literal["value", "path", "source", "base", "fragment", "upload"]

#: Guest defaults, also used by ``GuestOptions`` and ``QemuConfig`` when built without settings.
DEFAULT_MEMORY = "1G"
DEFAULT_CPUS = 2
MAX_CPUS = 64
ACCELS = ("auto", "kvm", "tcg")
BASES = ("tinyconfig", "defconfig")
#: The base config of a build without ``--base`` (pagelab/kernel/build.py).
DEFAULT_BASE = "tinyconfig"

_GROUP_TITLES: dict[Stage, str] = {"build": "kernel build", "guest": "guest", "run": "run"}
_TABLES: dict[Stage, str] = {"build": "kernel", "guest": "guest", "run": "run"}


# -- checks: raise ValueError("expected …"); the caller names the flag or the profile key ------------------
def _at_least(low: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < low:
            raise ValueError(f"expected at least {low:g}")

    return check


def _positive_seconds(value: float) -> None:
    if value <= 0:
        raise ValueError("expected a positive number of seconds")


def _cpus(value: int) -> None:
    if not 1 <= value <= MAX_CPUS:
        raise ValueError(f"expected 1 to {MAX_CPUS}")


_SIZE = re.compile(r"^(?P<n>\d+)(?P<unit>[KMGT]?)i?B?$", re.IGNORECASE)


def memory_mib(size: str) -> int:
    """Guest memory in MiB from ``1G``, ``2048M``, ``512`` (MiB). Raises ValueError saying what was expected."""
    m = _SIZE.match(size.strip())
    if not m:
        raise ValueError("expected a size like 1G or 2048M")
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group("unit").upper()]
    mib = int(int(m.group("n")) * factor)
    if mib < 128:
        raise ValueError("at least 128M is needed for the guest")
    return mib


def _shell_words(value: str) -> None:
    try:
        shlex.split(value)
    except ValueError as err:
        raise ValueError(str(err)) from None


def split_upload(spec: str) -> tuple[str, str]:
    """``SRC:DST`` → (SRC, DST), split at the first colon. Raises ValueError unless both are non-empty."""
    src, sep, dst = spec.partition(":")
    if not sep or not src or not dst:
        raise ValueError("expected SRC:DST (host file : guest path)")
    return src, dst


def parse_upload(spec: str) -> tuple[Path, str]:
    """``--upload SRC:DST`` → (host file, guest path): the one parser of uploads (boot, run, profiles).

    Raises UsageError if malformed or SRC is not a file.
    """
    try:
        src, dst = split_upload(spec)
    except ValueError as err:
        raise UsageError(f"--upload {spec!r}: {err}") from None
    if not Path(src).is_file():
        raise UsageError(f"--upload {spec!r}: {src} is not a file")
    return Path(src), dst


def _upload(spec: str) -> None:
    src, _ = split_upload(spec)
    if not Path(src).is_file():
        raise ValueError(f"{src} is not a file")


def _fragment(value: str) -> None:
    from pagelab.kernel.fragments import is_file_spec, shipped

    if not is_file_spec(value) and value not in shipped():
        raise ValueError(f"no such file and no shipped fragment of that name (known: {', '.join(shipped())})")


def _workloads(value: list[str]) -> None:
    if not value:
        raise ValueError("expected at least one workload")


# -- the declaration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One setting: its spellings, meaning and values (derived parts: ``type``, ``default``, ``repeatable``)."""

    name: str  # attribute of Settings, argparse dest
    flags: tuple[str, ...]  # the first is the canonical spelling (reproducer, messages)
    stage: Stage  # who consumes it
    table: str  # profile table
    key: str  # profile key
    help: str
    example: Any  # a valid non-default value, for the round-trip tests
    metavar: str | None = None
    kind: Kind = "value"
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None  # per value (per element of a repeatable setting)
    check_all: Callable[[Any], Any] | None = None  # on the whole list
    # What the stage does when the value is None, read from the stage's own constant when the help is shown
    # (not at import: the stages import this module, and importing them is slow).
    default_help: Callable[[], str] | None = None
    toml_also: tuple[type, ...] = ()  # other TOML types accepted and turned into ``type`` (memory = 1024)
    type: type = str  # str, int, float or bool (the element type of a repeatable setting)
    repeatable: bool = False
    default: Any = None

    @property
    def flag(self) -> str:
        return self.flags[0]

    def default_value(self) -> Any:
        return list(self.default) if self.repeatable else self.default


def _setting(
    default: Any,
    *flags: str,
    stage: Stage,
    help: str,
    example: Any,
    key: str | None = None,
    table: str | None = None,
    **spec: Any,
) -> Any:
    """A Settings field carrying its declaration (the type and the default come from the field)."""
    meta = {
        "setting": dict(
            flags=flags,
            stage=stage,
            table=table or _TABLES[stage],
            key=key or flags[0].removeprefix("--").replace("-", "_"),
            help=help,
            example=example,
            **spec,
        )
    }
    if isinstance(default, list | tuple):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """The values of every setting, after defaults, profile and flags (in that order). None: the stage decides."""

    # kernel build: pagelab/kernel/build.py
    kernel_src: str | None = _setting(
        None, "--kernel-src", stage="build", key="src", metavar="PATH|X.Y", kind="source", example="linux",
        default_help=lambda: _stage_default("kernel_src"),
        help="kernel tree, tarball or Debian linux-source version X.Y",
    )  # fmt: skip
    base: str | None = _setting(
        None, "--base", stage="build", metavar="tinyconfig|defconfig|FILE", kind="base", example="defconfig",
        help=f"base config (default {DEFAULT_BASE})",
    )  # fmt: skip
    fragments: list[str] = _setting(
        [], "--fragment", stage="build", key="fragments", metavar="NAME|FILE", kind="fragment",
        check=_fragment, example=["memcg", "my.config"],
        help="extra kconfig fragment: a shipped NAME (pagelab fragments) or a FILE (repeatable)",
    )  # fmt: skip
    jobs: int | None = _setting(
        None, "--jobs", "-j", stage="build", metavar="N", check=_at_least(1), example=3,
        help="make -j (default: number of cores)",
    )  # fmt: skip
    # guest: pagelab/guest/session.py (GuestOptions); --kernel and --upload: pagelab/guest/boot.py, run/pipeline.py
    kernel: str | None = _setting(
        None, "--kernel", stage="guest", metavar="BZIMAGE", kind="path", example="bzImage",
        help="boot this bzImage instead of building",
    )  # fmt: skip
    accel: str = _setting(
        "auto", "--accel", stage="guest", choices=ACCELS, example="tcg",
        help="accelerator (default auto: KVM if proven)",
    )  # fmt: skip
    memory: str = _setting(
        DEFAULT_MEMORY, "--memory", stage="guest", metavar="SIZE", check=memory_mib, toml_also=(int,), example="2G",
        help="guest memory, e.g. 1G, 2048M",
    )  # fmt: skip
    cpus: int = _setting(
        DEFAULT_CPUS, "--cpus", stage="guest", metavar="N", check=_cpus, example=3,
        help="guest vCPUs",
    )  # fmt: skip
    append: list[str] = _setting(
        [], "--append", stage="guest", metavar="ARGS", check=_shell_words, example=["loglevel=7", "quiet"],
        help="extra kernel command line",
    )  # fmt: skip
    upload: list[str] = _setting(
        [], "--upload", stage="guest", metavar="SRC:DST", kind="upload", check=_upload,
        example=["payload.sh:/root/payload.sh"],
        help="copy a host file into the guest",
    )  # fmt: skip
    timeout: float | None = _setting(
        None, "--timeout", stage="guest", metavar="SECONDS", check=_positive_seconds, example=240.5,
        default_help=lambda: _stage_default("timeout"),
        help="boot/command timeout",
    )  # fmt: skip
    keep: bool = _setting(
        False, "--keep", stage="guest", example=True,
        help="keep the run directory (console log, sockets)",
    )  # fmt: skip
    # run: pagelab/run/pipeline.py
    workloads: list[str] = _setting(
        DEFAULT_WORKLOADS, "--workload", stage="run", key="workloads", metavar="NAME|CMD", check_all=_workloads,
        example=["tmpfs-grow 4", "true"],
        help="workload (repeatable)",
    )  # fmt: skip
    iterations: int = _setting(
        3, "--iterations", stage="run", metavar="N", check=_at_least(1), example=2,
        help="workload iterations",
    )  # fmt: skip
    settle: float = _setting(
        1.0, "--settle", stage="run", metavar="SECONDS", check=_at_least(0), example=0.25,
        help="pause before each snapshot",
    )  # fmt: skip
    drop_caches: bool = _setting(
        False, "--drop-caches", stage="run", example=True,
        help="drop caches before each snapshot",
    )  # fmt: skip
    fail_on_growth: int | None = _setting(
        None, "--fail-on-growth", stage="run", table="thresholds", metavar="PAGES", check=_at_least(0), example=500,
        help="exit 1 if a suspect with verdict leak (or growth, without identities) grew more; caches never fail",
    )  # fmt: skip
    top: int = _setting(
        10, "--top", stage="run", metavar="N", check=_at_least(1), example=25,
        help="suspects/owners shown",
    )  # fmt: skip
    readers: int | None = _setting(
        None, "--readers", stage="run", metavar="N", check=_at_least(1), example=3,
        default_help=lambda: _stage_default("readers"),
        help="parallel page_owner readers",
    )  # fmt: skip
    workload_timeout: float = _setting(
        900.0, "--workload-timeout", stage="run", metavar="SECONDS", check=_positive_seconds, example=120.0,
        help="a workload still running after this fails the run (exit 4)",
    )  # fmt: skip
    # where the values came from (not settings)
    profile: str | None = None
    description: str = ""

    def stage_values(self, stage: Stage) -> dict[str, Any]:
        """The values of one stage's settings, by name."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if s.stage == stage}

    def reproduce_argv(self) -> list[str]:
        """The ``pagelab run`` command line that repeats this run with every setting explicit."""
        argv = ["pagelab", "run"]
        for s in SETTINGS:
            argv += to_argv(s, getattr(self, s.name))
        return argv

    def reproduce(self) -> str:
        return shlex.join(self.reproduce_argv())


def _declared() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    out = []
    for f in fields(Settings):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        hint = hints[f.name]
        repeatable = typing.get_origin(hint) is list
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        scalar = args[0] if args else hint
        default = f.default if f.default_factory is MISSING else f.default_factory()
        out.append(Setting(name=f.name, type=scalar, repeatable=repeatable, default=default, **spec))
    return tuple(out)


SETTINGS: tuple[Setting, ...] = _declared()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def of_stage(*stages: Stage) -> list[Setting]:
    return [s for s in SETTINGS if s.stage in stages]


# -- values from anywhere: type, check and normalise -------------------------------------------------------
def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check(name: str, value: Any, where: str | None = None) -> None:
    """Check one value of setting ``name``. Raises UsageError naming ``where`` (default: the flag) and the value."""
    s = BY_NAME[name]
    label = where or s.flag
    if s.check_all is not None:
        try:
            s.check_all(value)
        except ValueError as err:
            raise UsageError(f"{label} {_show(value)}: {err}") from None
    for item in value if s.repeatable else [value]:
        if item is None:
            continue
        if s.choices and item not in s.choices:
            raise UsageError(f"{label} {_show(item)}: expected {', '.join(s.choices)}")
        if s.check is not None:
            try:
                s.check(item)
            except ValueError as err:
                raise UsageError(f"{label} {_show(item)}: {err}") from None


def _absolute(value: str, base_dir: Path | None) -> str:
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return os.path.normpath(p)


def normalise(setting: Setting, value: str, base_dir: Path | None = None) -> str:
    """A path-like value made absolute (relative to ``base_dir``, else the working directory).

    Names stay names: ``--base defconfig``, ``--fragment memcg``. The reproducer then works from anywhere.
    """
    if setting.kind == "path":
        return _absolute(value, base_dir)
    if setting.kind == "source":
        # A version (``7.3``) stays a name unless such a path exists; everything else is a path, made absolute
        # now so the build stage (pagelab/kernel/source.py) never looks it up in another directory.
        from pagelab.kernel.source import is_version_name

        exists = ((base_dir or Path.cwd()) / Path(value).expanduser()).exists()
        return value if is_version_name(value) and not exists else _absolute(value, base_dir)
    if setting.kind == "base":
        return value if value in BASES else _absolute(value, base_dir)
    if setting.kind == "fragment":
        from pagelab.kernel.fragments import is_file_spec

        return _absolute(value, base_dir) if is_file_spec(value, base_dir) else value
    if setting.kind == "upload":
        src, sep, dst = value.partition(":")
        return f"{_absolute(src, base_dir)}{sep}{dst}" if sep and src else value
    return value


# -- argparse ---------------------------------------------------------------------------------------------
def _stage_default(name: str) -> str:
    """What the stage uses for setting ``name`` left at None, from the stage's constant (imported late: the
    stages import this module)."""
    if name == "kernel_src":
        from pagelab.kernel.source import DEFAULT_PACKAGE

        return DEFAULT_PACKAGE
    if name == "timeout":
        from pagelab.guest.qemu import BOOT_TIMEOUT

        boot = ", ".join(f"{seconds:g} s with {accel.upper()}" for accel, seconds in BOOT_TIMEOUT.items())
        return f"boot {boot}; the command of `boot -- CMD` has no limit"
    if name == "readers":
        from pagelab.collect.collector import READERS_PER_CPU

        return f"{READERS_PER_CPU} per vCPU"
    raise KeyError(name)


class _Deferred:
    """A help fragment computed only when argparse formats the help (``%(stage_default)s``).

    The stages' constants live in modules that import paramiko and zstandard: importing them to build the
    parser would slow every command's start, ``pagelab sort`` included, by ~0.1 s.
    """

    def __init__(self, compute: Callable[[], str]) -> None:
        self._compute = compute

    def __str__(self) -> str:
        return self._compute()


def _help(s: Setting) -> str:
    if s.default_help is not None:
        return f"{s.help} (default: %(stage_default)s)"
    shown = s.default not in (None, [], False) and "default" not in s.help
    if shown and not s.repeatable:
        return f"{s.help} (default {_show(s.default).strip(chr(39))})"
    return s.help


def add_arguments(parser: argparse.ArgumentParser, *stages: Stage) -> None:
    """One argument group per stage, with every setting of those stages."""
    for stage in stages:
        group = parser.add_argument_group(_GROUP_TITLES[stage])
        for s in of_stage(stage):
            kw: dict[str, Any] = {"dest": s.name, "help": _help(s), "default": None}
            if s.type is bool:
                kw["action"] = "store_true"
            else:
                kw["metavar"] = s.metavar
                if s.repeatable:
                    kw["action"] = "append"
                if s.type is not str:
                    kw["type"] = s.type
                if s.choices:
                    kw["choices"] = s.choices
                    del kw["metavar"]
            action = group.add_argument(*s.flags, **kw)
            if s.default_help is not None:
                # attr-defined: argparse.Action has no such attribute; the help formatter reads it for the default.
                action.stage_default = _Deferred(s.default_help)  # type: ignore[attr-defined]


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a parsed command line gave explicitly, checked and with paths made absolute.

    Raises UsageError naming the flag.
    """
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(args, s.name, None)
        if value is None or value is False:
            continue
        check(s.name, value)  # as given: relative paths are relative to the working directory
        if s.repeatable:
            value = [normalise(s, v) for v in value]
        elif isinstance(value, str):
            value = normalise(s, value)
        out[s.name] = value
    return out


def to_argv(s: Setting, value: Any) -> list[str]:
    """The flags that give ``value`` to setting ``s`` (nothing for None, [] or False)."""
    if value is None or value is False:
        return []
    if s.type is bool:
        return [s.flag]
    return [arg for item in (value if s.repeatable else [value]) for arg in (s.flag, _format(item))]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# -- profiles ---------------------------------------------------------------------------------------------
def schema() -> dict[tuple[str, str], Setting]:
    """(table, key) → setting: the keys a profile may set."""
    return {(s.table, s.key): s for s in SETTINGS}


def from_toml(s: Setting, value: Any, where: str, base_dir: Path) -> Any:
    """A profile value for setting ``s``: type-checked, paths resolved against ``base_dir``, checked.

    Raises UsageError naming ``where`` (file and key).
    """
    types: tuple[type, ...] = (s.type, *s.toml_also)
    if s.type is float:
        types += (int,)
    if s.repeatable:
        if not isinstance(value, list) or not all(_is(v, types) for v in value):
            raise UsageError(f"{where}: expected a list of {_names(types)}, got {_show_toml(value)}")
        value = [normalise(s, _convert(s, v), base_dir) for v in value]
    else:
        if not _is(value, types):
            raise UsageError(f"{where}: expected {_names(types)}, got {_show_toml(value)}")
        value = _convert(s, value)
        if isinstance(value, str):
            value = normalise(s, value, base_dir)
    check(s.name, value, where=where)
    return value


def _is(value: Any, types: Iterable[type]) -> bool:
    types = tuple(types)
    # bool is an int in Python; a TOML `true` is not a count.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _convert(s: Setting, value: Any) -> Any:
    if s.type is float and not isinstance(value, bool):
        return float(value)
    if s.type is str:
        return str(value)
    return value


def _names(types: Iterable[type]) -> str:
    return " or ".join(dict.fromkeys(t.__name__ for t in types))


def _show_toml(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def merged(*layers: Mapping[str, Any]) -> Settings:
    """Defaults, then each layer of values by setting name (later layers win; lists replace)."""
    settings = Settings()
    for layer in layers:
        for name, value in layer.items():
            setattr(settings, name, list(value) if isinstance(value, list) else value)
    return settings
