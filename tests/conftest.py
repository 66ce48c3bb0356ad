"""Shared fixtures. Fixture dumps live compressed in tests/fixtures/.

Honest markers: ``-m "not slow and not vm"`` must build no kernel, compile no C tool and boot nothing.
Every fixture that does one of those is listed in HEAVY_FIXTURES, and a test that uses one (directly or
through another fixture) is marked ``slow`` at collection, whatever its module says;
tests/unit/test_markers.py proves the fast selection holds none of them and calls none of HEAVY_CALLS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Fixtures that build a kernel (kernel_build, default_kernel), boot material built from one
# (guest_image) or compile a C tool (c_tool/c_tools: the kernel's page_owner_sort; po_read: the guest reader).
HEAVY_FIXTURES = frozenset({"kernel_build", "default_kernel", "guest_image", "c_tool", "c_tools", "po_read"})
# The functions behind them: a test must reach them through a fixture above, never call them itself.
HEAVY_CALLS = ("build_kernel(", "build_reader(", "build_c_tools(")
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


@pytest.hookimpl(tryfirst=True)  # before the mark plugin's own hook deselects by -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    report = os.environ.get(SELECTION_REPORT)
    if not report:
        return
    import inspect

    selected = []
    for item in session.items:
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        selected.append(
            {
                "nodeid": item.nodeid,
                "fixtures": sorted(getattr(item, "fixturenames", ())),
                "markers": sorted({m.name for m in item.iter_markers()}),
                "calls": [c for c in HEAVY_CALLS if c in source],
            }
        )
    Path(report).write_text(
        json.dumps({"heavy_fixtures": sorted(HEAVY_FIXTURES), "heavy_calls": HEAVY_CALLS, "selected": selected})
    )
