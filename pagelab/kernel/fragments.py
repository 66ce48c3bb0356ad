"""The shipped kconfig fragments by name: ``--fragment NAME`` and ``pagelab fragments``.

The opt-in extras are ``kconfigs/extras/NAME.config``; the listing reads that directory, so a new file there is
a new name. A fragment describes itself in its first comment line. The two default fragments
(``kconfigs/qemu-x86_64.config``, ``kconfigs/page_owner.config``) are always applied and have no name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pagelab import resources
from pagelab.ui import UI

SUFFIX = ".config"
DEFAULT_FRAGMENTS = ("qemu-x86_64.config", "page_owner.config")


def extras_dir() -> Path:
    return resources.kconfigs_dir() / "extras"


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    description: str


def describe(path: Path) -> str:
    """The first sentence of a fragment's leading comment (``# pagelab:`` directives skipped), or ''."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    words: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text:
            if words:
                break
            continue
        if not text.startswith("pagelab:"):
            words.append(text)
    head = " ".join(words)
    end = head.find(". ")
    return head if end < 0 else head[: end + 1]


def shipped() -> dict[str, Fragment]:
    """The shipped extras by name, sorted."""
    return {
        name: Fragment(name, path, describe(path)) for name, path in resources.shipped(extras_dir(), SUFFIX).items()
    }


def is_file_spec(value: str, base_dir: Path | None = None) -> bool:
    """``--fragment`` as given: an existing regular file, or anything with ``/`` or ending in ``.config``, is a file.

    Asked once, when the flag or profile value is read (pagelab/settings.py makes a file absolute then).
    """
    return resources.is_file_spec(value, SUFFIX, base_dir)


def resolve(value: str) -> Path:
    """A read ``--fragment`` value (a shipped name or an absolute path) → the fragment file.

    The working directory is not consulted again: a ``./thp`` there does not replace the shipped ``thp`` a
    profile asked for. Raises UsageError for an unknown name.
    """
    return resources.resolve_read(value, extras_dir(), SUFFIX, "--fragment")


def render_catalogue(ui: UI) -> None:
    """``pagelab fragments``: the shipped extras with what each is for."""
    ui.listing(
        "Shipped kconfig fragments (--fragment NAME, repeatable; a path or FILE.config is your own fragment)",
        ("name", "what it is for"),
        ((f.name, f.description) for f in shipped().values()),
        f"always applied (kconfigs/): {', '.join(DEFAULT_FRAGMENTS)}",
    )
