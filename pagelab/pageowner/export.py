"""Machine-readable exports of a Snapshot: report JSON, per-stack CSV, flame-graph folded stacks.

The formats are the contract of docs/formats.md (and pagelab/schemas/report.schema.json).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from pagelab.errors import UsageError
from pagelab.pageowner.analyse import BUILTIN_MODULE, Snapshot
from pagelab.pageowner.parse import parse_frame

__all__ = ["folded_lines", "open_output", "report_json", "write_csv", "write_folded", "write_json"]


@contextlib.contextmanager
def open_output(path: str | os.PathLike[str], option: str = "--json", stdout: TextIO | None = None) -> Iterator[TextIO]:
    """A text stream for ``path``; ``-`` is stdout (left open). Raises UsageError if it cannot be written."""
    if str(path) == "-":
        yield stdout or sys.stdout
        return
    try:
        fp = open(path, "w", encoding="utf-8", newline="")
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write: {err.strerror or err}") from None
    with fp:
        yield fp


def report_json(snap: Snapshot, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """``{source, records, total_pages, stacks: [{pages, records, callsite, module, frames}], groups}``.

    Stacks are all of them, ranked by pages; frames exactly as printed without the leading space. Groups
    hold every view the input supports (or ``keys``). Extra keys: kind, label, filters, fragmentation,
    ``class`` per stack.
    """
    frag = snap.fragmentation()
    return {
        "source": snap.source,
        "kind": snap.kind,
        "label": snap.label,
        "records": snap.records,
        "total_pages": snap.total_pages,
        "filters": list(snap.filters),
        "stacks": [
            {
                "pages": st.pages,
                "records": st.records,
                "callsite": st.callsite,
                "module": st.module,
                "class": st.cls,
                "frames": list(st.stack),
            }
            for st in snap.ranked()
        ],
        "groups": {
            key: [{"key": g.key, "pages": g.pages, "records": g.records} for g in snap.group(key)]
            for key in (keys or snap.available_keys())
        },
        "fragmentation": None
        if frag is None
        else {
            "pages": frag.pages,
            "records": frag.records,
            "pairs": [{"type": a, "block_type": b, "pages": p} for a, b, p in frag.pairs],
        },
    }


def write_json(obj: Any, fp: TextIO) -> None:
    """Indented JSON with a trailing newline."""
    json.dump(obj, fp, indent=2)
    fp.write("\n")


def write_csv(snap: Snapshot, fp: TextIO) -> None:
    """One row per stack, ranked: rank, pages, records, callsite, module, class, frames (``;``-joined,
    allocation end first, as printed)."""
    w = csv.writer(fp, lineterminator="\n")
    w.writerow(["rank", "pages", "records", "callsite", "module", "class", "frames"])
    for i, st in enumerate(snap.ranked(), 1):
        w.writerow(
            [
                i,
                st.pages,
                "" if st.records is None else st.records,
                st.callsite,
                st.module or BUILTIN_MODULE,
                st.cls,
                ";".join(st.stack),
            ]
        )


def _folded_frame(frame: str) -> str:
    # Flame graphs merge by function: drop the +off/size, keep the module; ';' would split a frame.
    sym, module = parse_frame(frame)
    if module:
        sym += f" [{module}]"
    return sym.replace(";", ":")


def folded_lines(snap: Snapshot) -> list[str]:
    """Folded stacks weighted by pages: ``root;…;leaf PAGES``, root first, identical lines merged, sorted."""
    acc: dict[str, int] = {}
    for st in snap.stacks.values():
        line = ";".join(_folded_frame(f) for f in reversed(st.stack)) or "(no stack)"
        acc[line] = acc.get(line, 0) + st.pages
    return [f"{line} {pages}" for line, pages in sorted(acc.items()) if pages > 0]


def write_folded(snap: Snapshot, fp: TextIO) -> None:
    """Write folded_lines, one per line (input for flamegraph.pl, speedscope, inferno)."""
    for line in folded_lines(snap):
        fp.write(line + "\n")
