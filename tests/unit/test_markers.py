"""Honest markers: the fast selection (-m "not slow and not vm") builds no kernel, compiles no C tool, boots nothing."""

from __future__ import annotations

import ast
import json
import os
import re
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


def test_every_test_the_scan_flags_is_marked_slow_in_the_unfiltered_collection(tmp_path: Path) -> None:
    """On the whole suite (no -m), so that the check does not run on a selection the marks already shaped."""
    report = _selection(tmp_path)
    everything, heavy_fixtures = report["selected"], set(report["heavy_fixtures"])
    assert len(everything) > 200, "the collection is suspiciously small"
    flagged = [t for t in everything if heavy_fixtures.intersection(t["fixtures"]) or t["calls"]]
    # Each heavy fixture and each heavy call is found somewhere: a renamed fixture or a scan that stopped
    # seeing calls would silently let tests escape the rule.
    assert heavy_fixtures <= {f for t in flagged for f in t["fixtures"]}
    seen_calls = {c.rpartition(": ")[2] for t in flagged for c in t["calls"]}
    assert set(report["heavy_calls"]) <= seen_calls, set(report["heavy_calls"]) - seen_calls
    unmarked = [t["nodeid"] for t in flagged if "slow" not in t["markers"]]
    assert not unmarked, f"tests that build, compile or boot without the slow mark: {unmarked}"
    assert any("test_sort_differential.py" in t["nodeid"] and "slow" in t["markers"] for t in everything)
    assert any("test_boot.py" in t["nodeid"] and "Guest(" in " ".join(t["calls"]) for t in everything)


# Independent of tests/conftest.py's lists: what booting looks like in a test's own source.
BOOT_FIXTURES = {"kernel_build", "default_kernel", "guest_image"}
_BOOTS = re.compile(
    r"""\bGuest\(                                        # the Guest API (pagelab/guest/session.py)
      | \bmain\(\s*\[\s*["'](?:boot|run)["']             # pagelab.cli.main(["boot"|"run", …])
    """,
    re.VERBOSE,
)
# A `pagelab boot|run` (or `python -m pagelab boot|run`) process: the words in a test that starts processes.
_BOOT_ARGV = re.compile(r"""["']pagelab["']\s*,\s*["'](?:boot|run)["']""")
_STARTS_PROCESSES = re.compile(r"\bsubprocess\.|\bPopen\(")


def _boots(source: str) -> bool:
    return bool(_BOOTS.search(source) or (_BOOT_ARGV.search(source) and _STARTS_PROCESSES.search(source)))


def _functions(path: Path) -> dict[str, str]:
    """The test functions of a file by name, with their source."""
    source = path.read_text()
    return {
        node.name: ast.get_source_segment(source, node) or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_no_fast_test_boots_a_guest(tmp_path: Path) -> None:
    fast = _selection(tmp_path, "-m", "not slow and not vm")["selected"]
    assert len(fast) > 100, "the fast selection is suspiciously small"
    with_fixtures = [t["nodeid"] for t in fast if BOOT_FIXTURES.intersection(t["fixtures"])]
    assert not with_fixtures, f"fast tests using a kernel or guest image fixture: {with_fixtures}"
    booting = []
    for t in fast:
        path, _, name = t["nodeid"].partition("::")
        source = _functions(TESTS.parent / path).get(name.split("[")[0].split("::")[-1], "")
        if not _boots(source):
            continue
        # `pagelab boot|run` in a fast test only to show that it stops before anything boots: a usage error
        # (exit 2), or with the pipeline's stages replaced (monkeypatch).
        if re.search(r"==\s*2\b", source) or "monkeypatch.setattr" in source:
            continue
        booting.append(t["nodeid"])
    assert not booting, f"fast tests that boot a guest (mark them vm and slow): {booting}"
    # The scan sees booting where it is: the e2e boot tests (not selected here) match it.
    assert any(_boots(src) for src in _functions(TESTS / "e2e" / "test_boot.py").values())
    assert any(_boots(src) for src in _functions(TESTS / "unit" / "test_fault_holes.py").values())


def test_test_module_names_are_unique_across_the_suite() -> None:
    # Without __init__.py files pytest imports test modules by basename: two test_x.py in different
    # folders break the collection of the whole suite ("import file mismatch").
    names: dict[str, list[str]] = {}
    for path in TESTS.rglob("*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in names.items() if len(paths) > 1 and name != "conftest.py"}
    assert not clashes, clashes
