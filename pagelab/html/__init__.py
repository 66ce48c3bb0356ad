"""report.html: a self-contained page for people and CI (summary, suspects, icicle, pageblock map, culprits).

``page`` builds the markup, ``charts`` the SVG pictures, ``markup`` the escaping; ``write_html`` writes
a page atomically (a reader never sees half a file). docs/html.md explains the choices.
"""

from __future__ import annotations

import os

from pagelab.cache import atomic_write
from pagelab.errors import UsageError
from pagelab.html.page import diff_page, error_page, report_page, run_page

__all__ = ["diff_page", "error_page", "report_page", "run_page", "write_html"]


def write_html(path: str | os.PathLike[str], page: str, option: str = "--html") -> None:
    """Write ``page`` to ``path`` atomically. Raises UsageError naming ``option`` if it cannot be written."""
    try:
        atomic_write(path, page)
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write: {err.strerror or err}") from None
