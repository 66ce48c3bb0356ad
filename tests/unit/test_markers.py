"""Honest markers: the fast selection (-m "not slow and not vm") builds no kernel, compiles no C tool, boots nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SELECTION_REPORT = "PAGELAB_TEST_SELECTION_REPORT"  # read by tests/conftest.py


def _selection(tmp_path: Path, *marker: str) -> dict:
    """What a collect-only session over the whole suite selects, and the heavy fixtures and calls
    (tests/conftest.py writes it)."""
    report = tmp_path / "selection.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *marker, str(TESTS)],
        capture_output=True,
        text=True,
        env={**os.environ, SELECTION_REPORT: str(report)},
        cwd=TESTS.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(report.read_text())


def test_the_fast_selection_uses_no_heavy_fixture_and_calls_no_builder(tmp_path: Path) -> None:
    report = _selection(tmp_path, "-m", "not slow and not vm")
    fast, heavy_fixtures = report["selected"], set(report["heavy_fixtures"])
    assert len(fast) > 100, "the fast selection is suspiciously small"
    assert {"kernel_build", "c_tools", "po_read"} <= heavy_fixtures
    heavy = [t["nodeid"] for t in fast if heavy_fixtures.intersection(t["fixtures"])]
    assert not heavy, f"fast tests that build a kernel, compile a C tool or boot: {heavy}"
    direct = [(t["nodeid"], t["calls"]) for t in fast if t["calls"]]
    assert not direct, f"fast tests that call a builder directly (use a fixture of HEAVY_FIXTURES): {direct}"


def test_the_heavy_fixtures_are_in_use_and_their_tests_are_marked_slow(tmp_path: Path) -> None:
    report = _selection(tmp_path)
    everything, heavy_fixtures = report["selected"], set(report["heavy_fixtures"])
    users = [t for t in everything if heavy_fixtures.intersection(t["fixtures"])]
    # Each heavy fixture is used somewhere (a renamed fixture would silently escape the rule).
    assert heavy_fixtures <= {f for t in users for f in t["fixtures"]}
    unmarked = [t["nodeid"] for t in users if "slow" not in t["markers"]]
    assert not unmarked, unmarked
    assert any("test_sort_differential.py" in t["nodeid"] and "slow" in t["markers"] for t in everything)


def test_test_module_names_are_unique_across_the_suite() -> None:
    # Without __init__.py files pytest imports test modules by basename: two test_x.py in different
    # folders break the collection of the whole suite ("import file mismatch").
    names: dict[str, list[str]] = {}
    for path in TESTS.rglob("*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in names.items() if len(paths) > 1 and name != "conftest.py"}
    assert not clashes, clashes
