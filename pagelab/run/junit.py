"""JUnit XML for CI: one testcase per workload iteration and per check (boot, crash-free, growth)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pagelab.cache import atomic_write


@dataclass
class Case:
    """One testcase. ``outcome`` is passed, failure, error or skipped; ``message`` says why if not passed."""

    classname: str
    name: str
    seconds: float = 0.0
    outcome: str = "passed"
    message: str = ""
    details: str = ""
    output: str = ""

    OUTCOMES = ("passed", "failure", "error", "skipped")

    def __post_init__(self) -> None:
        if self.outcome not in self.OUTCOMES:
            raise ValueError(f"junit outcome {self.outcome!r}: expected one of {', '.join(self.OUTCOMES)}")


# XML 1.0 cannot carry most control characters; console output is full of them.
_BAD_XML = {c: None for c in range(32) if c not in (9, 10, 13)}


def _clean(text: str) -> str:
    return text.translate(_BAD_XML)


def junit_xml(suite: str, cases: Sequence[Case], *, timestamp: str | None = None, hostname: str = "") -> bytes:
    """The XML document for one test suite."""
    counts = {o: sum(1 for c in cases if c.outcome == o) for o in Case.OUTCOMES}
    root = ET.Element("testsuites", name="pagelab")
    attrs = {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(counts["failure"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"]),
        "time": f"{sum(c.seconds for c in cases):.3f}",
    }
    if timestamp:
        attrs["timestamp"] = timestamp
    if hostname:
        attrs["hostname"] = hostname
    ts = ET.SubElement(root, "testsuite", attrs)
    for c in cases:
        tc = ET.SubElement(ts, "testcase", classname=c.classname, name=c.name, time=f"{c.seconds:.3f}")
        if c.outcome != "passed":
            tag = "skipped" if c.outcome == "skipped" else c.outcome
            el = ET.SubElement(tc, tag, message=_clean(c.message))
            if c.outcome != "skipped":
                el.set("type", c.outcome)
                el.text = _clean(c.details or c.message)
        if c.output:
            ET.SubElement(tc, "system-out").text = _clean(c.output)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: str | Path, suite: str, cases: Sequence[Case], **kw: str) -> None:
    """Write ``junit.xml`` atomically (a CI publisher never sees half a file)."""
    atomic_write(path, junit_xml(suite, cases, **kw))
