"""Type-checking rules the mypy configuration (pyproject.toml [tool.mypy]) cannot express itself."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pagelab"
_IGNORE = re.compile(r"#\s*type:\s*ignore\[(?P<codes>[^\]]+)\](?P<after>.*)$")


def _unexplained(lines: list[str]) -> list[int]:
    """Line numbers of `type: ignore[code]` with no why: none after it, none above naming its code."""
    found = []
    for i, line in enumerate(lines):
        m = _IGNORE.search(line)
        if m is None or m.group("after").strip().startswith("#"):
            continue
        codes = [c.strip() for c in m.group("codes").split(",")]
        above = [lines[j].strip() for j in range(max(0, i - 3), i)]
        if not any(a.startswith("#") and any(c in a for c in codes) for a in above):
            found.append(i + 1)
    return found


def test_the_rule_finds_an_unexplained_ignore_and_accepts_both_ways_of_explaining() -> None:
    lines = [
        "x = f()  # type: ignore[arg-type]",
        "y = g()  # type: ignore[arg-type]  # g is untyped upstream",
        "# union-attr: set in __enter__",
        "z = h.v  # type: ignore[union-attr]",
    ]
    assert _unexplained(lines) == [1]


def test_every_type_ignore_in_pagelab_says_why() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n in _unexplained(path.read_text(encoding="utf-8").splitlines()):
            missing.append(f"{path.relative_to(PACKAGE.parent)}:{n}")
    why = "a trailing comment, or one above naming the code"
    assert not missing, f"type: ignore without a reason ({why}): {', '.join(missing)}"
