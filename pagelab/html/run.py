"""report.html and report.json's ``pollution`` for a ``pagelab run`` directory.

Called from run/pipeline.py's artifact writing on every exit path (a crash, an error and an interrupt
too), so nothing here may stop the other artifacts from being written: failures become a warning and,
for the page, an error page that still carries report.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pagelab.errors import PagelabError
from pagelab.html import error_page, run_page, write_html
from pagelab.pageowner.analyse import Snapshot
from pagelab.pageowner.pollution import BlockMap, scan
from pagelab.ui import UI

__all__ = ["REPORT_HTML", "last_blockmap", "write_run_html"]

REPORT_HTML = "report.html"

# The artifacts a run directory holds (run/artifacts.py), linked when present.
_ARTIFACTS = (
    ("report.json", "the report as JSON"),
    ("report.txt", "the plain-text report"),
    ("junit.xml", "JUnit results"),
    ("metadata.json", "versions, timings, the reproducer command"),
    ("console.log", "the guest's serial console"),
)


class _Taken(Protocol):
    """What a snapshot taken by the collector offers (collect/collector.py's SnapshotFile)."""

    label: str
    path: Path
    snapshot: Snapshot
    stacks_path: Path | None


def last_blockmap(taken: Sequence[_Taken], ui: UI) -> BlockMap | None:
    """The pageblock map of the last dump snapshot, or None (no snapshot, show_stacks, unreadable: warned)."""
    if not taken or taken[-1].snapshot.kind != "dump":
        return None
    last = taken[-1]
    try:
        return scan(last.path)
    except Exception as err:  # a bad snapshot or a bug here must not cost the run its report.json
        ui.warn(f"pageblock map of {last.path}: {err}")
        return None


def write_run_html(
    out: Path,
    report: Mapping[str, Any],
    taken: Sequence[_Taken],
    blocks: BlockMap | None,
    ui: UI,
    *,
    exit_code: int | None = None,
) -> None:
    """Write ``out/report.html``; never raises for a rendering failure (an error page replaces the report)."""
    target = out / REPORT_HTML
    links = {t.label: _rel(t.path, out) for t in taken}
    artifacts = [(name, what) for name, what in _ARTIFACTS if (out / name).exists() or name == "report.json"]
    for t in taken:
        artifacts.append((_rel(t.path, out), f"snapshot {t.label} (zstd page_owner dump)"))
        if t.stacks_path is not None:
            artifacts.append((_rel(t.stacks_path, out), f"snapshot {t.label} show_stacks"))
    try:
        page = run_page(
            report,
            snapshot=taken[-1].snapshot if taken else None,
            blocks=blocks,
            artifacts=artifacts,
            snapshot_links=links,
            summary=[("exit code", exit_code)] if exit_code is not None else (),
        )
    except Exception as err:  # the report must not cost the run its other artifacts
        ui.warn(f"{target}: could not render the report ({type(err).__name__}: {err}); writing an error page")
        page = error_page("pagelab run", f"rendering failed: {type(err).__name__}: {err}", report)
    try:
        write_html(target, page, option="report.html")
    except PagelabError as err:
        ui.warn(str(err))


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).as_uri() if Path(path).is_absolute() else str(path)
