"""What ``pagelab report``/``diff`` add with the source lens: ``--build DIR``, ``--by file|subsystem``,
source lines and sections under stacks, allocinfo inputs and the allocinfo rows of suspects.

pageowner/commands.py calls these; they keep the command bodies to a few lines each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from pagelab.cache import mark_build_in_use
from pagelab.errors import InputError, UsageError
from pagelab.pageowner import export
from pagelab.pageowner.analyse import Snapshot, callsite_index
from pagelab.pageowner.parse import parse_frame
from pagelab.pageowner.render import mib, table
from pagelab.source import allocinfo as ai
from pagelab.source.lens import NOWHERE, SOURCE_KEYS, SourceLens, Where, annotate_stacks, group, open_lens
from pagelab.ui import UI

Notes = dict[tuple[str, ...], list[str]]


def lens_for(build: str | None, ui: UI, modules: Iterable[str] = ()) -> SourceLens | None:
    """The lens of ``--build DIR`` (None without it); says once when the build has no line tables.

    A DIR in pagelab's build cache is marked in use first: no ``pagelab cache prune`` removes it meanwhile.
    """
    if build:
        mark_build_in_use(build)
    lens = open_lens(build, modules)
    if lens is not None and (hint := lens.hint()):
        ui.info(hint)
    return lens


def where_for(lens: SourceLens | None, stacks: Iterable[Sequence[str]], ui: UI) -> dict[tuple[str, ...], Where]:
    """Every stack's Where (empty without a lens); a note when a module's .ko was not found."""
    if lens is None:
        return {}
    with ui.progress("resolving source lines"):
        where = lens.where(stacks)
    if lens.symbolizer.stats.mismatched:
        ui.warn(
            f"the input's frames do not fit {lens.build_dir}/vmlinux (symbol sizes differ: another build?): "
            "no source lines for built-in code"
        )
    missing = lens.symbolizer.stats.missing_modules
    if missing and lens.line_info:
        ui.info(f"no matching .ko for module(s) {', '.join(sorted(missing))}: their frames stay unresolved")
    return where


def note_lines(where: Where, row: ai.Growth | None = None) -> list[str]:
    """The lines printed under a stack: ``at FILE:LINE  · SECTION`` and the allocinfo row."""
    out = []
    if where.source:
        out.append(f"at {where.source}" + (f"  · {where.subsystem}" if where.subsystem else ""))
        inlined = list(reversed(where.chain[:-1]))  # from the callsite function inwards
        if inlined:
            steps = " → ".join(f"{ln.function} ({ln})" for ln in inlined[:3])
            more = f" → {len(inlined) - 3} more" if len(inlined) > 3 else ""
            out.append(f"   inlined: {steps}{more}")
    if row is not None:
        out.append(
            f"allocinfo {row.site.location}"
            + (f" [{row.site.module}]" if row.site.module else "")
            + f" func:{row.site.function}  {row.bytes:+,} bytes, {row.calls:+,} calls"
        )
    return out


def notes_for(where: Mapping[tuple[str, ...], Where]) -> Notes:
    return {s: lines for s, w in where.items() if (lines := note_lines(w))}


def split_views(by: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--by`` values as (the analyser's, ``file``/``subsystem``)."""
    theirs: list[str] = []
    ours: list[str] = []
    for raw in by:
        keep: list[str] = []
        for k in raw.split(","):
            (ours if k.strip().lower() in SOURCE_KEYS else keep).append(k.strip().lower() if k.strip() else k)
        if any(k.strip() for k in keep):
            theirs.append(",".join(keep))
    return theirs, list(dict.fromkeys(ours))


def check_views(views: Sequence[str], build: str | None) -> None:
    if views and build is None:
        raise UsageError(f"--by {', '.join(views)}: needs --build DIR (a kernel build with --fragment debuginfo)")


def render_views(
    ui: UI, snap: Snapshot, views: Sequence[str], where: Mapping[tuple[str, ...], Where], top: int
) -> None:
    """The ``--by file`` / ``--by subsystem`` tables."""
    total = snap.total_pages or 1
    for key in views:
        groups = group(snap, key, where)
        t = table(ui, f"By {key} of the callsite ({len(groups)} values)")
        t.add_column(key, overflow="fold")
        for col in ("pages", "MiB", "%"):
            t.add_column(col, justify="right")
        for g in groups[:top]:
            t.add_row(g.key, f"{g.pages:,}", mib(g.pages), f"{100 * g.pages / total:.1f}")
        if len(groups) > top:
            t.caption = f"{len(groups) - top} more not shown (--top)"
        ui.print(t)


def annotate_report(
    data: dict[str, Any], snap: Snapshot, where: Mapping[tuple[str, ...], Where], views: Sequence[str]
) -> None:
    """report.json: ``source``/``subsystem`` on every stack; the ``--by file|subsystem`` groups."""
    annotate_stacks(data.get("stacks", ()), where)
    for key in views:
        data.setdefault("groups", {})[key] = [
            {"key": g.key, "pages": g.pages, "records": g.records} for g in group(snap, key, where)
        ]


def annotate_suspects(
    rows: Iterable[dict[str, Any]],
    where: Mapping[tuple[str, ...], Where],
    growth: Sequence[ai.Growth] | None = None,
) -> None:
    """Suspect rows gain ``source``/``subsystem`` and, with allocinfo, the row of their callsite function."""
    for r in rows:
        w = where.get(tuple(r.get("frames") or ()), NOWHERE)
        r.update(w.to_json())
        if growth is not None:
            hit = ai.join(r.get("callsite", ""), callsite_module(r.get("frames") or ()), growth, _chain(w))
            r["allocinfo"] = hit.to_json() if hit else None


# -- allocinfo inputs --------------------------------------------------------------------------------
def _allocinfo_table(ui: UI, title: str) -> Table:
    """The columns of an allocinfo listing: rank, bytes, calls, file:line, module, function."""
    t = table(ui, title)
    for col, just in (("#", "right"), ("bytes", "right"), ("calls", "right"), ("file:line", "left")):
        # arg-type: rich wants a JustifyMethod literal; the tuple above widens it to str.
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    t.add_column("module")
    t.add_column("function", overflow="fold")
    return t


def report_allocinfo(path: str, ui: UI, *, top: int, json_out: str | None) -> int:
    """``pagelab report FILE.allocinfo``: callsites by live bytes."""
    info = ai.load(path)
    rows = info.ranked()
    head = Text(f"{info.source}", style="" if ui.plain else "bold")
    head.append(f"  (allocinfo {info.version})\n{len(rows):,} callsites, {info.total_bytes:,} bytes live")
    ui.print(head)
    t = _allocinfo_table(ui, f"Top {min(top, len(rows))} callsites by live bytes")
    for i, r in enumerate(rows[:top], 1):
        flag = "" if r.accurate else " (inaccurate)"
        t.add_row(
            str(i), f"{r.bytes:,}", f"{r.calls:,}", r.site.location + flag, r.site.module or "vmlinux", r.site.function
        )
    ui.print(t)
    if json_out:
        data = {
            "source": info.source,
            "kind": "allocinfo",
            "label": info.label,
            "version": info.version,
            "total_bytes": info.total_bytes,
            "callsites": [
                {
                    "file": r.site.file,
                    "line": r.site.line,
                    "module": r.site.module,
                    "function": r.site.function,
                    "bytes": r.bytes,
                    "calls": r.calls,
                    "accurate": r.accurate,
                }
                for r in rows
            ],
        }
        with export.open_output(json_out, "--json") as fp:
            export.write_json(data, fp)
    return 0


def diff_allocinfo(before: str, after: str, ui: UI, *, top: int, json_out: str | None) -> int:
    """``pagelab diff A.allocinfo B.allocinfo``: callsites ranked by growth in live bytes."""
    snaps = [ai.load(before), ai.load(after)]
    render_growth(ui, snaps, top=top)
    if json_out:
        with export.open_output(json_out, "--json") as fp:
            export.write_json({"kind": "allocinfo", "allocinfo": ai.growth_json(snaps)}, fp)
    return 0


def render_growth(ui: UI, snaps: Sequence[ai.AllocInfo], *, top: int) -> None:
    rows = ai.growth(snaps)
    labels = " → ".join(s.label for s in snaps)
    t = _allocinfo_table(ui, f"allocinfo growth ({len(rows)} callsites grew: {labels})")
    for i, g in enumerate(rows[:top], 1):
        flag = "" if g.accurate else " (inaccurate)"
        t.add_row(
            str(i),
            f"{g.bytes:+,}",
            f"{g.calls:+,}",
            g.site.location + flag,
            g.site.module or "vmlinux",
            g.site.function,
        )
    ui.print(t)


def sibling_allocinfo(paths: Sequence[str]) -> list[ai.AllocInfo] | None:
    """The allocinfo files saved beside these snapshots (NN-LABEL.allocinfo.zst), when all of them exist."""
    found = [ai.sibling(p) for p in paths]
    if not found or any(f is None for f in found):
        return None
    return [ai.load(f) for f in found if f is not None]


def is_allocinfo(path: str) -> bool:
    return ai.is_allocinfo(path)


def allocinfo_growth(snaps: Sequence[ai.AllocInfo] | None) -> list[ai.Growth] | None:
    return ai.growth(snaps) if snaps else None


def suspect_notes(
    rows: Iterable[Any], where: Mapping[tuple[str, ...], Where], growth: Sequence[ai.Growth] | None
) -> Notes:
    """Lines under each suspect/grown stack (objects with ``frames``, ``callsite``, ``module``)."""
    out: Notes = {}
    for r in rows:
        w = where.get(r.frames, NOWHERE)
        row = ai.join(r.callsite, callsite_module(r.frames), growth, _chain(w)) if growth else None
        lines = note_lines(w, row)
        if lines:
            out[r.frames] = lines
    return out


def annotate_diff(
    out: dict[str, Any], where: Mapping[tuple[str, ...], Where], alloc: Sequence[ai.AllocInfo] | None
) -> None:
    """diff/run JSON: suspects and shrunk rows gain source/subsystem; ``allocinfo`` when snapshots have it."""
    growth = ai.growth(alloc) if alloc else None
    annotate_suspects(out.get("suspects", ()), where, growth)
    annotate_stacks(out.get("shrunk", ()), where)
    out["allocinfo"] = ai.growth_json(alloc) if alloc else None


def run_lens(build_dir: str | None, modules: Iterable[str], ui: UI) -> SourceLens | None:
    """The lens of a run's own build (None with a prebuilt ``--kernel``); a broken build dir only warns."""
    if not build_dir:
        return None
    try:
        return lens_for(build_dir, ui, modules)
    except InputError as err:
        ui.warn(f"source lines unavailable: {err}")
        return None


def callsite_module(frames: Sequence[str]) -> str | None:
    """The module of the callsite frame itself (None: built-in), which allocinfo rows are tagged with.

    Not a suspect's ``module`` (analyse.module_of: the first module anywhere in the stack): built-in
    code called from a module (shmem_get_folio_gfp under a module's write handler) is tagged vmlinux.
    """
    return parse_frame(frames[callsite_index(frames)])[1] if frames else None


def _chain(w: Where) -> list[tuple[str, str, int]]:
    return [(ln.function, ln.file, ln.line) for ln in w.chain]
