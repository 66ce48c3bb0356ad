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
    """The shipped data ``name`` (``kconfigs``, ``guest``, ``profiles``, ``get-kernel-source.sh``) as a real path.

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


def kernel_source_script() -> Path:
    """scripts/get-kernel-source.sh as installed: the wheel has no scripts/, so it ships under pagelab/data/."""
    return data_dir("get-kernel-source.sh").resolve()


# -- shipped files by name (``--fragment NAME``, ``--profile NAME``) -----------------------------------------
def shipped(directory: Path, suffix: str) -> dict[str, Path]:
    """The shipped files ``directory/*suffix`` by name (the file name without ``suffix``), sorted."""
    return {p.name.removesuffix(suffix): p for p in sorted(directory.glob(f"*{suffix}")) if p.is_file()}


def is_file_spec(value: str, suffix: str, base_dir: Path | None = None) -> bool:
    """Whether ``value``, as the user gave it, names their own file rather than a shipped one.

    Decided once, when a flag or a profile value is read (``pagelab/settings.py`` then makes a file absolute):
    anything containing ``/``, starting with ``~`` or ending in ``suffix`` is a file, and so is an existing
    regular file (relative to ``base_dir``, else the working directory). A directory of that name is not: it
    is most likely an output directory (``--out smoke``) and must not hide the shipped ``smoke``.
    """
    if looks_like_path(value, suffix):
        return True
    return bool(value) and ((base_dir or Path.cwd()) / value).is_file()


def looks_like_path(value: str, suffix: str) -> bool:
    """Whether ``value`` is a path by its spelling alone: no shipped name contains ``/`` or ends in ``suffix``."""
    return "/" in value or value.endswith(suffix) or value.startswith("~")


def resolve_named(value: str, directory: Path, suffix: str, option: str, base_dir: Path | None = None) -> Path:
    """``option NAME|FILE`` as given by the user → the file: their path (relative to ``base_dir``) or a shipped name.

    Raises UsageError (one line, listing the known names) for an empty value or an unknown name; whether a
    user's file exists is for the caller to report.
    """
    if not value:
        raise UsageError(f"{option} '': expected a shipped name or a file")
    if is_file_spec(value, suffix, base_dir):
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return named(value, directory, suffix, option)


def resolve_read(value: str, directory: Path, suffix: str, option: str) -> Path:
    """A value that was already read (``pagelab/settings.py``) → the file, without asking the disk again.

    Reading made every user's file absolute and left names as they were, so an absolute path (or anything
    spelled like a path) is a file and anything else a shipped name, whatever the working directory holds now.
    """
    if looks_like_path(value, suffix):
        return Path(value).expanduser()
    return named(value, directory, suffix, option)


def named(value: str, directory: Path, suffix: str, option: str) -> Path:
    """The shipped file ``value``. Raises UsageError (one line, listing the known names) for an unknown name."""
    known = shipped(directory, suffix)
    if value not in known:
        names = ", ".join(known) or "none"
        raise UsageError(
            f"{option} {value}: no such file and no shipped {option.lstrip('-')} of that name (known: {names})"
        )
    return known[value]
