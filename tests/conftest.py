"""Shared fixtures. Fixture dumps live compressed in tests/fixtures/.

Honest markers: ``-m "not slow and not vm"`` must build no kernel, compile no C tool and boot nothing.
A test is marked ``slow`` at collection, whatever its module says, when it uses a fixture of
HEAVY_FIXTURES or when it or any fixture it uses (directly or through another) calls one of HEAVY_CALLS.
tests/unit/test_markers.py checks, on the unfiltered collection, that every test this scan flags carries
``slow`` and that each fixture and call of the lists is found somewhere; and, with a scan of its own, that
no test of pytest's real fast selection boots a guest.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Fixtures that build a kernel (kernel_build, default_kernel), boot material built from one
# (guest_image) or compile a C tool (c_tool/c_tools: the kernel's page_owner_sort; po_read: the guest reader).
HEAVY_FIXTURES = frozenset({"kernel_build", "default_kernel", "guest_image", "c_tool", "c_tools", "po_read"})
# The calls that build a kernel, compile a C tool or boot a guest (pagelab/guest/session.py's Guest: what
# `pagelab boot` and `pagelab run` boot with); their call in a test or fixture marks it slow.
HEAVY_CALLS = ("build_kernel(", "build_reader(", "build_c_tools(", "Guest(")
# Set by tests/unit/test_markers.py: where a collect-only session writes what it selected.
SELECTION_REPORT = "PAGELAB_TEST_SELECTION_REPORT"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def po_read() -> Path:
    """The static guest reader (guest/tools/po-read.c) compiled with gcc (cached)."""
    from pagelab.collect.collector import build_reader

    return build_reader()


@functools.cache
def _calls_in(func: Callable[..., Any]) -> tuple[str, ...]:
    """The HEAVY_CALLS in a function's source."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return ()
    return tuple(c for c in HEAVY_CALLS if c in source)


def heavy_calls(item: pytest.Item) -> list[str]:
    """HEAVY_CALLS made by the test itself or by any fixture it uses (directly or through another)."""
    found = list(_calls_in(item.function)) if hasattr(item, "function") else []
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixture closure
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in info.name2fixturedefs.get(name, ()) if info is not None else ():
            found += [f"{name}: {c}" for c in _calls_in(fixturedef.func)]
    return found


@pytest.hookimpl(tryfirst=True)  # before the mark plugin's own hook deselects by -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())) or heavy_calls(item):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    report = os.environ.get(SELECTION_REPORT)
    if not report:
        return
    selected = [
        {
            "nodeid": item.nodeid,
            "fixtures": sorted(getattr(item, "fixturenames", ())),
            "markers": sorted({m.name for m in item.iter_markers()}),
            "calls": heavy_calls(item),
        }
        for item in session.items
    ]
    Path(report).write_text(
        json.dumps({"heavy_fixtures": sorted(HEAVY_FIXTURES), "heavy_calls": HEAVY_CALLS, "selected": selected})
    )
