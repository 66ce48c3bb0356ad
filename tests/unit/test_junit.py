"""junit.xml: what CI publishers read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pagelab.run.junit import Case, junit_xml, write_junit


def _parse(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def test_counts_and_outcomes_are_reported_per_suite() -> None:
    cases = [
        Case("run.checks", "boot", 2.5),
        Case("run.workloads", "tmpfs-grow iteration 1", 1.0, output="ok\n"),
        Case("run.checks", "growth", 0.0, "failure", "leaky_alloc_page grew 768 pages", "rank 1 …"),
        Case("run.checks", "crash-free", 0.0, "error", "kernel BUG at mm/slub.c:123"),
        Case("run.workloads", "true iteration 2", 0.0, "skipped", "guest crashed before it ran"),
    ]
    root = _parse(junit_xml("pagelab run", cases, timestamp="2026-11-26T00:00:00"))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "5",
        "1",
        "1",
        "1",
    )
    assert suite.get("time") == "3.500"
    growth = suite.findall("testcase")[2]
    failure = growth.find("failure")
    assert failure is not None and failure.get("message") == "leaky_alloc_page grew 768 pages"
    assert failure.text == "rank 1 …"
    assert suite.findall("testcase")[1].findtext("system-out") == "ok\n"
    assert suite.findall("testcase")[4].find("skipped") is not None


def test_console_control_characters_do_not_break_the_xml() -> None:
    data = junit_xml("s", [Case("c", "n", output="\x1b[31mred\x1b[0m\x00 tail")])
    assert _parse(data).find("testsuite/testcase/system-out").text == "[31mred[0m tail"  # type: ignore[union-attr]


def test_an_unknown_outcome_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Case("c", "n", outcome="flaky")


def test_written_file_is_complete_xml(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(path, "suite", [Case("c", "boot")])
    assert _parse(path.read_bytes()).find("testsuite").get("name") == "suite"  # type: ignore[union-attr]
