"""A kernel source or C tool the test needs is missing: a skip on a developer's machine, a failure under CI.

As tests/e2e/chromium.py does for the browser: CI (CI set) runs scripts/setup-host.sh, so a missing source
there means its fetch failed (it warns and goes on) and must not pass as a skip. tests/ is on sys.path
because tests/conftest.py lives there (pytest's default prepend import mode).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

HINT = "fetch the source with scripts/get-kernel-source.sh VERSION SUITE (7.3: trixie-backports)"


def missing_source(reason: str) -> NoReturn:
    """Skip, or fail when CI is set, naming what is missing and how to get it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure: {HINT}", pytrace=False)
    pytest.skip(f"{reason} ({HINT})")
