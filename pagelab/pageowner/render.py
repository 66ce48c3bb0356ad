"""Rich renderings of a report, a diff and leak suspects, through the UI handed down (plain mode too).

Plain mode (``UI(plain=True)``, ``--ci``, report.txt) uses ASCII tables and an ASCII sparkline.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pagelab.pageowner.analyse import (
    BUILTIN_MODULE,
    PAGE_SIZE,
    RECORD_KEYS,
    Snapshot,
    StackStats,
    callsite_index,
)
from pagelab.pageowner.diff import Diff, Suspect
from pagelab.ui import UI

__all__ = ["as_text", "render_diff", "render_report", "render_suspects", "sparkline"]

DEFAULT_VIEWS = ("callsite", "module", "class")
_BARS = "▁▂▃▄▅▆▇█"
_ASCII_BARS = "_.-=+*#@"
_FRAMES_SHOWN = 8


def mib(pages: int) -> str:
    """Pages as MiB with one decimal."""
    return f"{pages * PAGE_SIZE / (1 << 20):.1f}"


def table(ui: UI, title: str | None = None) -> Table:
    """A report table: simple rules in colour, ASCII in plain mode."""
    if ui.plain:
        return Table(title=title, box=box.ASCII, title_justify="left", show_edge=False, pad_edge=False)
    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold", header_style="bold")


def sparkline(values: Sequence[int], plain: bool = False) -> str:
    """One character per value, scaled between the series' min and max (flat series: lowest bar)."""
    bars = _ASCII_BARS if plain else _BARS
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return bars[0] * len(values)
    return "".join(bars[round((v - lo) * (len(bars) - 1) / (hi - lo))] for v in values)


def _stack_text(ui: UI, stack: Sequence[str], limit: int = _FRAMES_SHOWN) -> Text:
    """The frames from the callsite down; the allocator-internal frames above it summed up in one line."""
    start = callsite_index(stack)
    text = Text()
    if start:
        text.append(f"    ({start} allocator frames: {stack[0]} …)\n", style=None if ui.plain else "dim")
    shown = stack[start : start + limit]
    for i, frame in enumerate(shown):
        text.append(f"    {frame}\n", style=None if ui.plain or i else "cyan")
    if len(stack) - start > limit:
        text.append(f"    … {len(stack) - start - limit} more\n", style=None if ui.plain else "dim")
    return text


def render_report(
    ui: UI,
    snap: Snapshot,
    *,
    top: int = 10,
    views: Sequence[str] = (),
    notes: Mapping[tuple[str, ...], Sequence[str]] | None = None,
) -> None:
    """Totals, top stacks with callsite/module/class and their frames, group-by views, fragmentation.

    ``notes``: lines printed under a stack (its source line and MAINTAINERS section, pagelab/source/lens.py).
    """
    dim = "" if ui.plain else "dim"
    head = Text()
    head.append(f"{snap.source}", style=None if ui.plain else "bold")
    head.append(f"  ({'page_owner dump' if snap.kind == 'dump' else 'show_stacks'})\n")
    if snap.kind == "dump":
        head.append(f"{snap.records:,} records, ")
    head.append(f"{snap.total_pages:,} pages, {mib(snap.total_pages)} MiB, {len(snap.stacks):,} stacks")
    if snap.filters:
        head.append(f"\nfilters: {' and '.join(snap.filters)}", style=dim)
    ui.print(head)
    if not snap.stacks:
        ui.print(Text("nothing matches the filters" if snap.filters else "no pages", style=dim))
        return

    ranked = snap.ranked()
    total = snap.total_pages or 1
    ui.print(top_stacks_table(ui, snap, top=top))
    for i, st in enumerate(ranked[:top], 1):
        _print_stack(ui, i, st, (notes or {}).get(st.stack, ()))

    for key in views or DEFAULT_VIEWS:
        if not snap.has_view(key):
            continue
        groups = snap.group(key)
        g = table(ui, f"By {key} ({len(groups)} values)")
        g.add_column(key)
        g.add_column("pages", justify="right")
        g.add_column("MiB", justify="right")
        g.add_column("%", justify="right")
        if snap.kind == "dump":
            g.add_column("records", justify="right")
        for grp in groups[:top]:
            row = [grp.key, f"{grp.pages:,}", mib(grp.pages), f"{100 * grp.pages / total:.1f}"]
            if snap.kind == "dump":
                row.append(f"{grp.records:,}")
            g.add_row(*row)
        if len(groups) > top:
            g.caption = f"{len(groups) - top} more not shown (--top)"
        ui.print(g)
        if key == "gfp":
            ui.print(Text("(a record counts once for each GFP flag it carries)", style=dim))

    frag = snap.fragmentation()
    if frag is not None:
        line = (
            f"fragmentation: {frag.pages:,} pages ({100 * frag.pages / total:.1f}%) in {frag.records:,} records "
            "sit in a pageblock of another migratetype"
        )
        if frag.pairs:
            line += ": " + ", ".join(f"{a} in {b} {p:,}" for a, b, p in frag.pairs[:4])
        ui.print(Text(line))
    elif snap.kind == "dump":
        ui.print(Text("fragmentation: unavailable (no PFN lines in this input)", style=dim))
    if snap.kind != "dump":
        ui.print(
            Text(
                "show_stacks input has no per-record fields: views by "
                + ", ".join(RECORD_KEYS)
                + ", record counts and fragmentation are unavailable; early-boot pages are not counted",
                style=dim,
            )
        )


def top_stacks_table(ui: UI, snap: Snapshot, *, top: int = 10, title: str | None = None) -> Table:
    """The top ``top`` stacks of ``snap`` by pages: pages, MiB, %, records (dumps), callsite, module, class."""
    ranked = snap.ranked()
    t = table(ui, title or f"Top {min(top, len(ranked))} stacks by pages")
    t.add_column("#", justify="right")
    t.add_column("pages", justify="right")
    t.add_column("MiB", justify="right")
    t.add_column("%", justify="right")
    if snap.kind == "dump":
        t.add_column("records", justify="right")
    t.add_column("callsite", overflow="fold")
    t.add_column("module")
    t.add_column("class")
    total = snap.total_pages or 1
    for i, st in enumerate(ranked[:top], 1):
        row = [str(i), f"{st.pages:,}", mib(st.pages), f"{100 * st.pages / total:.1f}"]
        if snap.kind == "dump":
            row.append(f"{st.records:,}")
        row += [st.callsite, st.module or BUILTIN_MODULE, st.cls]
        t.add_row(*row)
    return t


def _print_stack(ui: UI, rank: int, st: StackStats, notes: Sequence[str] = ()) -> None:
    title = Text(f"#{rank} ", style="" if ui.plain else "bold")
    title.append(f"{st.callsite}  {st.pages:,} pages")
    if st.module:
        title.append(f"  [{st.module}]")
    title.append("\n")
    for note in notes:
        title.append(f"    {note}\n", style="" if ui.plain else "green")
    title.append_text(_stack_text(ui, st.stack))
    ui.print(title, end="")


def render_diff(
    ui: UI, d: Diff, *, top: int = 20, notes: Mapping[tuple[str, ...], Sequence[str]] | None = None
) -> None:
    """Totals before/after, the top growers (new marked) and the top shrinkers (vanished marked)."""
    dim = "" if ui.plain else "dim"
    growth = d.total_after - d.total_before
    head = Text()
    head.append(f"{d.before.label} → {d.after.label}: ", style=None if ui.plain else "bold")
    head.append(f"{d.total_before:,} → {d.total_after:,} pages ({growth:+,} pages, {_signed_mib(growth)} MiB)")
    n_new = sum(1 for c in d.changes if c.status == "new")
    n_gone = sum(1 for c in d.changes if c.status == "vanished")
    head.append(f"\n{len(d.grown)} stacks grew ({n_new} new), {len(d.shrunk)} shrank ({n_gone} vanished)")
    if d.excluded_early:
        head.append(
            f"\nmixed dump/show_stacks: {d.excluded_early:,} early-boot pages left out"
            " (show_stacks does not count them)",
            style=dim,
        )
    tracked = d.tracked is not None and d.tracked.available
    if tracked:
        kept = sum(c.survivors or 0 for c in d.changes)
        head.append(
            f"\nallocations followed: {kept:,} pages of before survive, "
            f"{sum(c.freed or 0 for c in d.changes):,} freed, {sum(c.born or 0 for c in d.changes):,} born",
            style=dim,
        )
    elif d.tracked is not None and d.tracked.unavailable:
        head.append(f"\nallocations not followed: {d.tracked.unavailable}", style=dim)
    ui.print(head)
    for caption, rows in (("Grown", d.grown[:top]), ("Shrunk", d.shrunk[:top])):
        if not rows:
            continue
        t = table(ui, f"{caption} ({len(rows)} shown)")
        t.add_column("#", justify="right")
        t.add_column("change", justify="right")
        t.add_column("before", justify="right")
        t.add_column("after", justify="right")
        if tracked:
            # kept: pages of before still alive in after; freed: the share of before that was freed (turnover).
            t.add_column("kept", justify="right", no_wrap=True)
            t.add_column("freed", justify="right", no_wrap=True)
        t.add_column("", justify="left")
        t.add_column("callsite", overflow="fold")
        t.add_column("module")
        t.add_column("class")
        for i, c in enumerate(rows, 1):
            mark = {"new": "NEW", "vanished": "GONE"}.get(c.status, "")
            style = "" if ui.plain else ("green" if c.delta < 0 else "red")
            extra = []
            if tracked:
                extra = [f"{c.survivors or 0:,}", f"{(c.freed or 0) / c.before:.0%}" if c.before else "-"]
            t.add_row(
                str(i),
                Text(f"{c.delta:+,}", style=style),
                f"{c.before:,}",
                f"{c.after:,}",
                *extra,
                mark,
                c.callsite,
                c.module or BUILTIN_MODULE,
                c.cls,
            )
        ui.print(t)
    for i, c in enumerate(d.grown[: min(top, 5)], 1):
        title = Text(f"grown #{i} ", style="" if ui.plain else "bold")
        title.append(f"{c.callsite}  {c.delta:+,} pages\n")
        for note in (notes or {}).get(c.frames, ()):
            title.append(f"    {note}\n", style="" if ui.plain else "green")
        title.append_text(_stack_text(ui, c.frames))
        ui.print(title, end="")


def _signed_mib(pages: int) -> str:
    return f"{pages * PAGE_SIZE / (1 << 20):+.1f}"


def render_suspects(
    ui: UI,
    snapshots: Sequence[Snapshot],
    found: Sequence[Suspect],
    *,
    top: int = 10,
    notes: Mapping[tuple[str, ...], Sequence[str]] | None = None,
) -> None:
    """Suspects ranked by growth with their per-snapshot pages and a sparkline, then their stacks.

    ``notes``: lines printed under a suspect, keyed by its frames (source line, section, allocinfo row).
    """
    labels = " → ".join(s.label for s in snapshots)
    t = table(ui, f"Leak suspects ({len(found)} stacks grew over {len(snapshots)} snapshots: {labels})")
    t.add_column("#", justify="right")
    t.add_column("growth", justify="right")
    t.add_column("trend")
    t.add_column("pages per snapshot")
    t.add_column("mono")
    t.add_column("verdict")
    t.add_column("callsite", overflow="fold")
    t.add_column("module")
    for s in found[:top]:
        t.add_row(
            str(s.rank),
            f"{s.growth_pages:+,}",
            sparkline(s.per_snapshot, ui.plain),
            " ".join(f"{p:,}" for p in s.per_snapshot),
            "yes" if s.monotonic else "no",
            Text(s.verdict, style="" if ui.plain else _VERDICT_STYLE.get(s.verdict, "")),
            s.callsite,
            s.module or BUILTIN_MODULE,
        )
    ui.print(t)
    for s in found[: min(top, 5)]:
        title = Text(f"suspect #{s.rank} ", style="" if ui.plain else "bold")
        title.append(f"{s.callsite}  {s.growth_pages:+,} pages  {s.verdict}\n")
        for note in (notes or {}).get(s.frames, ()):
            title.append(f"    {note}\n", style="" if ui.plain else "green")
        title.append_text(_cohort_text(ui, s))
        title.append_text(_stack_text(ui, s.frames))
        ui.print(title, end="")


_VERDICT_STYLE = {"leak": "bold red", "growth": "red", "cache": "yellow", "transient": "dim"}
_COHORTS_SHOWN = 6


def _cohort_text(ui: UI, s: Suspect) -> Text:
    """'born in iter1: 512 → 512 → 512 alive' per cohort, then the oldest page's age at the last snapshot."""
    text = Text()
    cohorts = s.cohorts()
    dim = "" if ui.plain else "dim"
    for c in cohorts[-_COHORTS_SHOWN:]:
        where = "at baseline" if c["born"] == s.labels[0] else f"born in {c['born']}"
        text.append(f"    {where}: {' → '.join(f'{p:,}' for p in c['alive'])} alive\n", style=dim)
    if len(cohorts) > _COHORTS_SHOWN:
        text.append(f"    ({len(cohorts) - _COHORTS_SHOWN} earlier cohorts not shown)\n", style=dim)
    h = s.history
    if h is not None and h.oldest_age_s[-1] is not None:
        text.append(
            f"    age at {s.labels[-1]}: median {h.median_age_s[-1]:,.1f} s, oldest {h.oldest_age_s[-1]:,.1f} s"
            + (f", turnover {h.turnover:.0%}" if h.turnover is not None else "")
            + "\n",
            style=dim,
        )
    return text


def as_text(render: Callable[[UI], None], width: int = 120) -> str:
    """What ``render(ui)`` prints in plain mode, as a string (report.txt)."""
    ui = UI(plain=True, quiet=True)
    buf = io.StringIO()
    # markup=False as in ui.UI: dump text in the cells is never rich markup.
    ui.out = Console(
        file=buf, width=width, no_color=True, color_system=None, highlight=False, markup=False, force_terminal=False
    )
    render(ui)
    return buf.getvalue()
