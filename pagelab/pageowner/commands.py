"""The ``pagelab report`` and ``pagelab diff`` commands: validate, load, analyse, render, export.

cli.py parses the command line into a ``ReportOptions`` / ``DiffOptions`` and calls ``report`` / ``diff``;
everything after parsing happens here. A new flag is a field on the options class (with its default), one
``add_argument`` in cli.py and the code below that uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pagelab.errors import UsageError
from pagelab.pageowner import analyse, export, handles, pollution, render
from pagelab.pageowner import diff as diff_mod
from pagelab.ui import UI


@dataclass
class ReportOptions:
    """What ``pagelab report`` was asked for (``None`` for an output means: not written)."""

    input: str
    top: int = 10
    by: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    json: str | None = None
    csv: str | None = None
    folded: str | None = None
    html: str | None = None
    stacks: str | None = None  # a show_stacks_handles file resolving a handle-mode input (handles.py)
    build: str | None = None  # kernel build dir: source lines and MAINTAINERS sections (pagelab/source/)
    older_than: str | None = None  # a duration: only allocations at least that old (analyse.parse_duration)


@dataclass
class DiffOptions:
    """What ``pagelab diff`` was asked for."""

    before: str
    after: str
    top: int = 20
    json: str | None = None
    html: str | None = None
    stacks: str | None = None  # one show_stacks_handles file for both inputs (the stack list only grows)
    build: str | None = None  # kernel build dir: source lines and MAINTAINERS sections (pagelab/source/)


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top {top}: expected a positive number of stacks")


def report(opts: ReportOptions, ui: UI) -> int:
    """Render the ranked owner report of one input and write the requested exports; returns the exit code.

    Raises UsageError for bad options and InputError for an unreadable or malformed input.
    """
    _check_top(opts.top)
    from pagelab.source import report as src

    if src.is_allocinfo(opts.input):
        return src.report_allocinfo(opts.input, ui, top=opts.top, json_out=opts.json)
    opts.by, source_views = src.split_views(opts.by)
    src.check_views(source_views, opts.build)
    lens = src.lens_for(opts.build, ui)
    by_pollution, by = pollution.split_views(opts.by)
    if by_pollution and opts.input == "-":
        raise UsageError("--by pollution: needs INPUT as a file (it reads the dump a second time), not stdin")
    views = analyse.parse_views(by)
    min_age = analyse.parse_duration(opts.older_than) if opts.older_than is not None else None
    for expr in opts.filters:
        analyse.parse_filter(expr)  # usage errors before reading a large input
    with ui.progress(f"reading {opts.input}"):
        table = handles.load_stacks(opts.stacks) if opts.stacks else None
        snap = analyse.load_snapshot(opts.input, stacks=table)
    for warning in snap.warnings:
        ui.warn(warning)
    if min_age is not None:
        snap = snap.older_than(min_age)
    snap = snap.filtered(opts.filters)
    missing = [k for k in views if not snap.has_view(k)]
    if missing:
        ui.warn(f"--by {', '.join(missing)}: unavailable for show_stacks input (no per-record fields)")
    where = src.where_for(lens, (st.stack for st in snap.stacks.values()), ui)
    render.render_report(
        ui, snap, top=opts.top, views=[k for k in views if k not in missing], notes=src.notes_for(where)
    )
    src.render_views(ui, snap, source_views, where, opts.top)
    blocks = pollution.blocks_for(snap, opts.input, ui, table) if by_pollution or opts.html else None
    if by_pollution and blocks is not None:
        pollution.render_pollution(ui, blocks, top=opts.top)
    elif by_pollution:
        ui.warn("--by pollution: unavailable for show_stacks input (no PFN lines)")
    if opts.json:
        with export.open_output(opts.json, "--json") as fp:
            data = export.report_json(snap)
            src.annotate_report(data, snap, where, source_views)
            if blocks is not None:
                data["pollution"] = blocks.to_json()
            export.write_json(data, fp)
    if opts.html:
        from pagelab import html

        sources = {stack: w.to_json() for stack, w in where.items()}
        page = html.report_page(snap, blocks, top=opts.top, why_no_map=_no_map(opts.input), sources=sources)
        html.write_html(opts.html, page)
    if opts.csv:
        with export.open_output(opts.csv, "--csv") as fp:
            export.write_csv(snap, fp)
    if opts.folded:
        with export.open_output(opts.folded, "--folded") as fp:
            export.write_folded(snap, fp)
    return 0


def diff(opts: DiffOptions, ui: UI) -> int:
    """Render per-stack growth between two snapshots and write the requested JSON; returns the exit code.

    Raises UsageError for bad options and InputError for an unreadable or malformed input.
    """
    _check_top(opts.top)
    from pagelab.source import report as src

    if src.is_allocinfo(opts.before) and src.is_allocinfo(opts.after):
        return src.diff_allocinfo(opts.before, opts.after, ui, top=opts.top, json_out=opts.json)
    lens = src.lens_for(opts.build, ui)
    t0 = time.perf_counter()
    with ui.progress(f"reading {opts.before} and {opts.after}"):
        table = handles.load_stacks(opts.stacks) if opts.stacks else None
        before = analyse.load_snapshot(opts.before, stacks=table)
        after = analyse.load_snapshot(opts.after, stacks=table)
    for warning in before.warnings + after.warnings:
        ui.warn(warning)
    t1 = time.perf_counter()
    result = diff_mod.diff(before, after)
    timings = {"parse_s": round(t1 - t0, 3), "diff_s": round(time.perf_counter() - t1, 3)}
    where = src.where_for(lens, [c.frames for c in result.changes], ui)
    alloc = src.sibling_allocinfo([opts.before, opts.after])
    growth = src.allocinfo_growth(alloc)
    render.render_diff(ui, result, top=opts.top, notes=src.suspect_notes(result.grown[: opts.top], where, growth))
    if alloc:
        src.render_growth(ui, alloc, top=opts.top)
    out = diff_mod.diff_to_json(result, timings=timings)
    src.annotate_diff(out, where, alloc)
    if opts.json:
        with export.open_output(opts.json, "--json") as fp:
            export.write_json(out, fp)
    if opts.html:
        from pagelab import html

        blocks = pollution.blocks_for(after, opts.after, ui, table)
        page = html.diff_page(out, after, blocks, top=opts.top, why_no_map=_no_map(opts.after))
        html.write_html(opts.html, page)
    return 0


def _no_map(path: str) -> str | None:
    return "the input was read from stdin (the map reads the dump a second time)" if path == "-" else None
