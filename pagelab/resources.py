"""The data pagelab ships: kernel config fragments, the guest's files and the run profiles.

They live at the repository's top level (``kconfigs/``, ``guest/``, ``profiles/``) and reach the package
through the symlinks in ``pagelab/data/``. setuptools copies the files those links point at into the wheel,
and an editable install resolves them to the checkout, so one lookup serves both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pagelab.errors import UsageError


def data_dir(name: str) -> Path:
    """The shipped data directory ``name`` (``kconfigs``, ``guest`` or ``profiles``) as a real path.

    pip and pipx install wheels unpacked, so the directory is a file-system path. Callers report a missing
    file themselves, naming it (a broken installation then reads as such, not as a traceback).
    """
    return Path(str(resources.files("pagelab").joinpath("data", name)))


def kconfigs_dir() -> Path:
    return data_dir("kconfigs")


def guest_dir() -> Path:
    return data_dir("guest")


def profiles_dir() -> Path:
    return data_dir("profiles")


# -- shipped files by name (``--fragment NAME``, ``--profile NAME``) -----------------------------------------
def shipped(directory: Path, suffix: str) -> dict[str, Path]:
    """The shipped files ``directory/*suffix`` by name (the file name without ``suffix``), sorted."""
    return {p.name.removesuffix(suffix): p for p in sorted(directory.glob(f"*{suffix}")) if p.is_file()}


def is_file_spec(value: str, suffix: str, base_dir: Path | None = None) -> bool:
    """Whether ``value`` names a user's file rather than a shipped one.

    A file is an existing path (relative to ``base_dir``, else the working directory), or anything containing
    ``/`` or ending in ``suffix``; everything else is a name.
    """
    if "/" in value or value.endswith(suffix) or value.startswith("~"):
        return True
    return ((base_dir or Path.cwd()) / value).exists()


def resolve_named(value: str, directory: Path, suffix: str, option: str, base_dir: Path | None = None) -> Path:
    """``option NAME|FILE`` → the file: a user's path as given (relative to ``base_dir``), or a shipped name.

    Raises UsageError (one line, listing the known names) for an unknown name; whether a user's file exists is
    for the caller to report.
    """
    if is_file_spec(value, suffix, base_dir):
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    known = shipped(directory, suffix)
    if value not in known:
        names = ", ".join(known) or "none"
        raise UsageError(
            f"{option} {value}: no such file and no shipped {option.lstrip('-')} of that name (known: {names})"
        )
    return known[value]
