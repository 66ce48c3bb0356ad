"""The data pagelab ships: kernel config fragments, the guest's files and the run profiles.

They live at the repository's top level (``kconfigs/``, ``guest/``, ``profiles/``) and reach the package
through the symlinks in ``pagelab/data/``. setuptools copies the files those links point at into the wheel,
and an editable install resolves them to the checkout, so one lookup serves both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


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
