"""Run profiles: the settings of ``pagelab run`` as TOML, overridden by command-line flags.

A profile has up to four tables; every key but ``description`` is a setting of ``pagelab/settings.py``
(``fragments`` ↔ ``--fragment``; the declarations say which table and key)::

    description = "what this profile hunts"
    [kernel]      src, base, fragments, jobs
    [guest]       kernel, accel, memory, cpus, append, upload, timeout, keep
    [run]         workloads, iterations, settle, drop_caches, top, readers, workload_timeout
    [thresholds]  fail_on_growth

Relative paths in a profile are relative to the profile file. A flag given on the command line
replaces the profile's value (lists too: ``--workload`` replaces ``workloads``). ``--profile NAME`` is a
shipped profile (``profiles/NAME.toml``, listed by ``pagelab profiles``), anything else a file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagelab import resources
from pagelab.errors import UsageError
from pagelab.settings import Settings, from_toml, merged, schema
from pagelab.ui import UI

SUFFIX = ".toml"


def resolve(value: str) -> Path:
    """``--profile NAME|FILE`` as given → the profile file: a regular file there (or anything spelled like a
    path) is the user's, anything else a shipped name. Raises UsageError for an empty or unknown name."""
    return resources.resolve_named(value, resources.profiles_dir(), SUFFIX, "--profile")


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a profile into setting values by name. Raises UsageError naming the file and key."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--profile {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--profile {path}: a directory, expected a .toml file") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:  # tomllib decodes the whole file first
        raise UsageError(f"{path}: not valid TOML: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UsageError(f"--profile {path}: cannot read: {err.strerror or err}") from None
    base_dir = path.resolve().parent
    keys = schema()
    values: dict[str, Any] = {"profile": str(path)}
    for table, content in data.items():
        if table == "description":
            if not isinstance(content, str):
                raise UsageError(f"{path}: description: expected str, got {type(content).__name__} {content!r}")
            values["description"] = content
            continue
        if not isinstance(content, dict):
            raise UsageError(f"{path}: unknown top-level key {table!r} (expected description, [kernel], [guest], …)")
        for key, value in content.items():
            setting = keys.get((table, key))
            if setting is None:
                known = ", ".join(k for (t, k) in keys if t == table) or "none (unknown table)"
                raise UsageError(f"{path}: unknown key [{table}] {key!r}; known: {known}")
            values[setting.name] = from_toml(setting, value, f"{path}: [{table}] {key}", base_dir)
    return values


def settings_from(flags: Mapping[str, Any], profile: str | None = None) -> Settings:
    """Defaults, then ``--profile`` (a name or a file), then the flags (``pagelab.settings.given``).

    Raises UsageError on an unknown profile or bad values.
    """
    layers: list[Mapping[str, Any]] = []
    if profile is not None:  # `--profile ""` is a usage error (resolve), not "no profile"
        layers.append(load_profile(resolve(profile)))
    layers.append(flags)
    return merged(*layers)


# -- pagelab profiles ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str


def shipped() -> dict[str, Profile]:
    """The shipped profiles by name, sorted. Raises UsageError for a broken one (a defect of the package)."""
    return {
        name: Profile(name, path, load_profile(path).get("description", ""))
        for name, path in resources.shipped(resources.profiles_dir(), SUFFIX).items()
    }


def render_catalogue(ui: UI) -> None:
    """``pagelab profiles``: the shipped run profiles with their descriptions."""
    ui.listing(
        "Shipped run profiles (pagelab run --profile NAME; a path or FILE.toml is your own profile)",
        ("name", "what it runs"),
        ((p.name, p.description) for p in shipped().values()),
        "flags given with --profile override its values (lists too)",
    )
