"""report.html: one self-contained page (inline CSS, SVG and a little script; no network, no fonts).

Three pages share the sections: a run (``run_page``, from report.json's dict), a single dump
(``report_page``) and a diff (``diff_page``). Everything reads without JavaScript; the script only adds
zoom to the icicle. Fields other stages may add to report.json (``suspects[].verdict``, ``cohorts``,
``source``, ``subsystem``; ``pollution``) are shown when present and skipped when absent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pagelab import __version__
from pagelab.html.charts import blockmap_svg, folded_frame, growth_chart, icicle_svg, legend
from pagelab.html.markup import Html, fmt, join
from pagelab.pageowner.analyse import BUILTIN_MODULE, PAGE_SIZE, Snapshot, callsite_index
from pagelab.pageowner.pollution import BlockMap

__all__ = ["diff_page", "error_page", "report_page", "run_page"]

_FRAMES_SHOWN = 24

CSS = """
:root{color-scheme:light;--fg:#1d1d1f;--dim:#6b6b70;--line:#d8d8dc;--bg:#fff;--panel:#f6f6f8}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1280px;padding:16px 24px;font:14px/1.45 system-ui,sans-serif;color:var(--fg);
  background:var(--bg)}
h1{font-size:22px;margin:4px 0 2px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
.sub{color:var(--dim);margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{color:var(--dim);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{color:var(--dim);padding-right:18px}
code,pre,.mono{font:12px/1.4 ui-monospace,monospace}
pre{background:var(--panel);padding:8px;overflow:auto;max-height:360px;margin:4px 0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff;background:#607d8b}
.status.ok{background:#2e7d32}
.status.leak,.status.growth{background:#c62828}
.status.crash{background:#6a1b9a}
.status.error{background:#ef6c00}
.status.cache,.status.transient{background:#1565c0}
.suspect{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:10px 0}
.suspect h3{margin:0 0 4px;font-size:15px}
.suspect .row{display:flex;gap:24px;flex-wrap:wrap;align-items:center}
details>summary{cursor:pointer;color:var(--dim)}
svg.growth polyline{fill:none;stroke:#c62828;stroke-width:2}
svg.growth circle{fill:#c62828}
svg.growth .axis{stroke:var(--line)}
svg .tick{font:10px system-ui,sans-serif;fill:var(--dim)}
svg.icicle{display:block;border:1px solid var(--line);max-width:100%;height:auto}
svg.icicle text{font:11px ui-monospace,monospace;fill:#111;pointer-events:none}
svg.icicle g.n{cursor:pointer}
svg.icicle rect{stroke:#fff;stroke-width:.5}
svg.blockmap{display:block;max-width:100%;height:auto}
svg.blockmap .x{stroke:#111;stroke-width:1.6}
svg.blockmap g.mixed rect{stroke:#111;stroke-width:1}
.legend .sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-2px;border:1px solid #999}
.legend .mixed-sw{border:1px solid #111;font-size:11px;line-height:10px;text-align:center}
.bar{display:inline-block;height:10px;background:#c62828;vertical-align:middle}
a{color:#0b57d0}
.dim{color:var(--dim)}
footer{margin:32px 0 8px;color:var(--dim);font-size:12px}
"""

# Zoom for the icicle: a click rescales every node against the clicked one (data-x/data-w are fractions of
# the whole); the static SVG is complete without it. No network, no eval, no third-party code.
JS = """
(function(){
var svg=document.getElementById('icicle');if(!svg)return;
var W=+svg.getAttribute('data-width'),nodes=svg.querySelectorAll('g.n');
function label(g,nw){var r=g.firstChild,t=g.lastChild,name=r.firstChild.textContent.split('\\n')[0];
  var c=Math.floor(nw/7)-1;
  t.textContent=nw>40?(name.length>c?name.slice(0,Math.max(c-1,0))+'\\u2026':name):'';}
function zoom(x0,w0,d0){
  for(var i=0;i<nodes.length;i++){
    var g=nodes[i],x=+g.dataset.x,w=+g.dataset.w,d=+g.dataset.d;
    var show=d<d0||(x>=x0-1e-9&&x+w<=x0+w0+1e-9);
    g.style.display=show?'':'none';if(!show)continue;
    var nx=d<d0?0:(x-x0)/w0*W,nw=d<d0?W:w/w0*W,r=g.firstChild,t=g.lastChild;
    r.setAttribute('x',nx.toFixed(1));r.setAttribute('width',Math.max(nw-0.5,0.5).toFixed(1));
    t.setAttribute('x',(nx+3).toFixed(1));label(g,nw);}}
for(var i=0;i<nodes.length;i++){
  nodes[i].addEventListener('click',function(){zoom(+this.dataset.x,+this.dataset.w,+this.dataset.d);});}
var reset=document.getElementById('icicle-reset');
if(reset)reset.addEventListener('click',function(){zoom(0,1,0);});
})();
"""


def _mib(pages: int) -> str:
    return f"{pages * PAGE_SIZE / (1 << 20):,.1f}"


def _num(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else ("–" if n is None else str(n))


def _kv(rows: Sequence[tuple[str, object]]) -> Html:
    return fmt(
        '<table class="kv">{}</table>',
        join(fmt("<tr><td>{}</td><td>{}</td></tr>", k, v) for k, v in rows if v not in (None, "")),
    )


def _status(status: str | None) -> Html:
    s = status or "unknown"
    return fmt('<span class="status {}">{}</span>', s, s)


_H2 = re.compile(r"<h2>([^<(]+)")


def _anchored(body: str) -> tuple[Html, Html]:
    """Give every section heading an anchor, and a navigation line linking them (fragment links only)."""
    links: list[Html] = []

    def anchor(m: re.Match[str]) -> str:
        title = m.group(1).strip()
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        links.append(fmt('<a href="#{}">{}</a>', slug, Html(title)))  # already escaped text of our markup
        return f'<a id="{slug}"></a>{m.group(0)}'

    out = _H2.sub(anchor, body)
    return Html(out), fmt('<nav class="sub">{}</nav>', join(links, " · "))


def _page(title: str, subtitle: str, sections: Sequence[Html]) -> Html:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    body, nav = _anchored(join(sections))
    return fmt(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty data: icon: browsers would otherwise ask for /favicon.ico beside the file.
        '<link rel="icon" href="data:,">'
        "<title>{title}</title><style>{css}</style></head><body>"
        "<h1>{title}</h1><p class=sub>{subtitle}</p>{nav}{body}"
        "<footer>pagelab {version} · generated {stamp} · self-contained: no network, no external files</footer>"
        "<script>{js}</script></body></html>\n",
        title=title,
        subtitle=subtitle,
        css=Html(CSS),
        nav=nav,
        body=body,
        version=__version__,
        stamp=stamp,
        js=Html(JS),
    )


# -- sections ------------------------------------------------------------------------------------------
def _frames(frames: Sequence[str], source: str | None = None, frame_sources: Sequence[Any] | None = None) -> Html:
    """Folded (root→leaf, one line) and as printed from the callsite down, with the source lines if known
    (``source`` for the callsite, ``frame_sources`` one per frame, as pagelab/source/lens.py gives them)."""
    start = callsite_index(frames)
    folded = ";".join(folded_frame(f) for f in reversed(frames)) or "(no stack)"
    shown = list(frames[start : start + _FRAMES_SHOWN])
    if frame_sources is not None and len(frame_sources) == len(frames):
        where = frame_sources[start : start + _FRAMES_SHOWN]
        shown = [f"{f}  ({w})" if w else f for f, w in zip(shown, where, strict=True)]
    more = len(frames) - start - len(shown)
    lines = ([f"({start} allocator frames: {frames[0]} …)"] if start else []) + shown
    if more > 0:
        lines.append(f"… {more} more")
    return fmt(
        "<details><summary>stack ({n} frames){src}</summary><pre>{lines}</pre>"
        '<p class="dim">folded</p><pre>{folded}</pre></details>',
        n=len(frames),
        src=fmt(" · {}", source) if source else "",
        lines="\n".join(lines),
        folded=folded,
    )


def _generic(value: Any) -> Html:
    """A value whose shape another stage owns (e.g. ``cohorts``): tables for lists of dicts, else JSON."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys: list[str] = []
        for v in value:
            keys.extend(k for k in v if k not in keys)
        head = join(fmt("<th>{}</th>", k) for k in keys)
        body = join(fmt("<tr>{}</tr>", join(fmt("<td>{}</td>", _short(v.get(k))) for k in keys)) for v in value[:20])
        return fmt("<table><tr>{}</tr>{}</table>", head, body)
    if isinstance(value, dict):
        return _kv([(str(k), _short(v)) for k, v in value.items()])
    return fmt("<code>{}</code>", _short(value))


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= 200 else text[:199] + "…"


def _suspects(report: Mapping[str, Any]) -> Html:
    suspects = report.get("suspects") or []
    labels = [s.get("label", str(i)) for i, s in enumerate(report.get("snapshots") or [])]
    if len(labels) < 2:
        return fmt("<h2>Suspects</h2><p>Fewer than two snapshots: nothing to compare.</p>")
    if not suspects:
        return fmt("<h2>Suspects</h2><p>No stack grew from the baseline to the last snapshot.</p>")
    cards = []
    for s in suspects[:25]:
        series = [int(v) for v in s.get("per_snapshot") or []]
        facts: list[tuple[str, object]] = [
            ("growth", f"{s.get('growth_pages', 0):+,} pages ({_mib(int(s.get('growth_pages', 0)))} MiB)"),
            ("module", s.get("module") or BUILTIN_MODULE),
            ("class", s.get("class")),
            ("monotonic", "yes" if s.get("monotonic") else "no"),
            ("source", s.get("source")),
            ("subsystem", s.get("subsystem")),
        ]
        extras = [k for k in s if k not in _SUSPECT_KEYS]
        cards.append(
            fmt(
                '<div class="suspect"><h3>#{rank} {verdict} <code>{callsite}</code></h3>'
                '<div class="row">{chart}{facts}</div>{cohorts}{extras}{frames}</div>',
                rank=s.get("rank", "?"),
                verdict=_status(s["verdict"]) if s.get("verdict") else "",
                callsite=s.get("callsite", "?"),
                chart=growth_chart(series, labels[: len(series)]),
                facts=_kv(facts),
                cohorts=fmt("<details><summary>cohorts</summary>{}</details>", _generic(s["cohorts"]))
                if s.get("cohorts") is not None
                else "",
                extras=fmt(
                    "<details><summary>more fields</summary>{}</details>", _kv([(k, _short(s[k])) for k in extras])
                )
                if extras
                else "",
                frames=_frames(s.get("frames") or [], s.get("source"), s.get("frame_sources")),
            )
        )
    more = len(suspects) - 25
    return fmt(
        "<h2>Suspects</h2><p class=sub>stacks whose pages grew from the baseline to the last snapshot, "
        "largest growth first{}</p>{}",
        f" (25 of {len(suspects)} shown)" if more > 0 else "",
        join(cards),
    )


_SUSPECT_KEYS = {
    "rank",
    "growth_pages",
    "per_snapshot",
    "monotonic",
    "callsite",
    "module",
    "frames",
    "class",
    "new",
    "verdict",
    "cohorts",
    "source",
    "subsystem",
    "frame_sources",
}


def _top_stacks(snap: Snapshot, top: int, sources: Mapping[tuple[str, ...], Mapping[str, Any]] | None = None) -> Html:
    ranked = snap.ranked()[:top]
    where = sources or {}
    total = snap.total_pages or 1
    rows = join(
        fmt(
            '<tr><td class="n">{i}</td><td class="n">{p}</td><td class="n">{m}</td>'
            '<td><span class="bar" style="width:{w}px"></span></td><td><code>{cs}</code> '
            '<span class="dim">{mod} · {cls}{sub}</span>{frames}</td></tr>',
            i=i,
            p=_num(st.pages),
            m=_mib(st.pages),
            w=max(1, round(120 * st.pages / total)),
            cs=st.callsite,
            mod=st.module or BUILTIN_MODULE,
            cls=st.cls,
            sub=fmt(" · {}", where[st.stack]["subsystem"]) if where.get(st.stack, {}).get("subsystem") else "",
            frames=_frames(
                st.stack, where.get(st.stack, {}).get("source"), where.get(st.stack, {}).get("frame_sources")
            ),
        )
        for i, st in enumerate(ranked, 1)
    )
    return fmt(
        '<h2>Top owners ({label})</h2><table><tr><th class="n">#</th><th class="n">pages</th>'
        '<th class="n">MiB</th><th></th><th>callsite</th></tr>{rows}</table>',
        label=snap.label,
        rows=rows,
    )


def _top_comms(snap: Snapshot, top: int) -> Html:
    """Pages by the allocating task's name (dumps only; show_stacks has no per-record fields)."""
    if snap.kind != "dump":
        return Html("")
    rows = join(
        fmt(
            '<tr><td><code>{}</code></td><td class="n">{}</td><td class="n">{}</td></tr>',
            g.key,
            _num(g.pages),
            _num(g.records),
        )
        for g in snap.group("comm")[:top]
    )
    return fmt(
        '<h2>Top tasks ({})</h2><table><tr><th>comm</th><th class="n">pages</th><th class="n">records</th></tr>'
        "{}</table>",
        snap.label,
        rows,
    )


def _icicle(snap: Snapshot) -> Html:
    if not snap.stacks:
        return Html("")
    return fmt(
        "<h2>Ownership icicle ({label})</h2><p class=sub>pages by stack, root on top, width ∝ pages; hover for "
        "names and pages; click a frame to zoom (needs JavaScript), "
        '<button id="icicle-reset" type="button">reset zoom</button></p>{svg}',
        label=snap.label,
        svg=icicle_svg(snap),
    )


def _blockmap(bm: BlockMap | None, label: str, why_missing: str | None = None) -> Html:
    if bm is None or not bm.has_pfn:
        reason = why_missing or "the input has no PFN lines (show_stacks, or a pre-stripped dump)"
        return fmt("<h2>Pageblock map</h2><p>Not available: {}.</p>", reason)
    counts: dict[str, int] = {}
    for b in bm.blocks.values():
        t = b.migratetype or "?"
        counts[t] = counts.get(t, 0) + 1
    first, last = bm.span()
    return fmt(
        "<h2>Pageblock map ({label})</h2><p class=sub>physical memory by PFN, one cell per pageblock of "
        "{pages} pages (order {order}), 64 blocks a row from block {first} to {last}; colour: the block's "
        "migratetype as page_owner prints it (<code>Block N type X</code>), fainter when fewer of its pages are "
        "allocated; hover a cell for its owners. {mixed} of {blocks} blocks with an allocated page hold pages "
        "across the movable line.</p>{legend}{svg}",
        label=label,
        pages=1 << bm.order,
        order=bm.order,
        first=first,
        last=last,
        mixed=_num(bm.mixed_blocks),
        blocks=_num(len(bm.blocks)),
        legend=legend(counts),
        svg=blockmap_svg(bm),
    )


def _pollution(pol: Mapping[str, Any] | None) -> Html:
    if not pol:
        return Html("")
    if not pol.get("culprits"):
        return fmt(
            "<h2>Fragmentation culprits</h2><p>None: no allocated page sits in a pageblock across the movable "
            "line ({} pageblocks with an allocated page).</p>",
            _num(pol.get("blocks")),
        )
    rows = join(
        fmt(
            '<tr><td class="n">{rank}</td><td class="n">{pages}</td><td class="n">{blocks}</td><td>{dirs}</td>'
            "<td><code>{cs}</code> <span class=dim>{mod}</span>{frames}</td></tr>",
            rank=c.get("rank"),
            pages=_num(c.get("pages")),
            blocks=_num(c.get("blocks")),
            dirs=", ".join(f"{k} {v:,}" for k, v in (c.get("directions") or {}).items()),
            cs=c.get("callsite"),
            mod=c.get("module") or BUILTIN_MODULE,
            frames=_frames(c.get("frames") or []),
        )
        for c in (pol.get("culprits") or [])[:20]
    )
    return fmt(
        "<h2>Fragmentation culprits</h2><p class=sub>stacks ranked by pages they placed in pageblocks of another "
        "migratetype (Unmovable or Reclaimable in Movable, and Movable in Unmovable or Reclaimable), with the "
        "blocks each taints: {pages} pages in {mixed} of {blocks} pageblocks.</p>"
        '<table><tr><th class="n">#</th><th class="n">pages</th><th class="n">blocks</th><th>direction</th>'
        "<th>callsite</th></tr>{rows}</table>",
        pages=_num(pol.get("pages")),
        mixed=_num(pol.get("mixed_blocks")),
        blocks=_num(pol.get("blocks")),
        rows=rows,
    )


def _snapshots(entries: Sequence[Mapping[str, Any]], links: Mapping[str, str]) -> Html:
    rows = join(
        fmt(
            '<tr><td>{label}</td><td class="n">{rec}</td><td class="n">{pages}</td><td class="n">{mib}</td>'
            "<td>{file}</td></tr>",
            label=e.get("label"),
            rec=_num(e.get("records")),
            pages=_num(e.get("total_pages")),
            mib=_mib(int(e.get("total_pages") or 0)),
            file=fmt('<a href="{}">{}</a>', links[e["label"]], links[e["label"]])
            if e.get("label") in links
            else (e.get("path") or ""),
        )
        for e in entries
    )
    return fmt(
        '<h2>Snapshots</h2><table><tr><th>label</th><th class="n">records</th><th class="n">pages</th>'
        '<th class="n">MiB</th><th>file</th></tr>{}</table>',
        rows,
    )


def _crashes(crashes: Sequence[Mapping[str, Any]]) -> Html:
    if not crashes:
        return Html("")
    return fmt(
        "<h2>Guest kernel crash</h2>{}",
        join(
            fmt("<p><b>{}</b>: {}</p><pre>{}</pre>", c.get("kind"), c.get("title"), c.get("excerpt") or "")
            for c in crashes
        ),
    )


def _artifacts(links: Sequence[tuple[str, str]]) -> Html:
    if not links:
        return Html("")
    return fmt(
        "<h2>Raw artifacts</h2><p class=sub>beside this file</p><ul>{}</ul>",
        join(fmt('<li><a href="{}">{}</a> <span class=dim>{}</span></li>', href, href, what) for href, what in links),
    )


# -- pages ---------------------------------------------------------------------------------------------
def run_page(
    report: Mapping[str, Any],
    *,
    snapshot: Snapshot | None,
    blocks: BlockMap | None,
    artifacts: Sequence[tuple[str, str]] = (),
    snapshot_links: Mapping[str, str] | None = None,
    summary: Sequence[tuple[str, object]] = (),
    top: int = 15,
) -> Html:
    """The page of a ``pagelab run``: summary, suspects, last snapshot's owners, icicle, map, culprits."""
    status = report.get("status")
    timings = report.get("timings") or {}
    order = ("build", "modules", "image", "boot", "snapshots", "workloads", "settle", "shutdown", "analysis", "total")
    timing_text = "  ".join(f"{k} {timings[k]:.1f}s" for k in order if isinstance(timings.get(k), int | float))
    rows: list[tuple[str, object]] = [
        ("status", _status(status)),
        ("why", report.get("error")),
        ("kernel", report.get("kernel") or "?"),
        ("accel", report.get("accel")),
        *summary,
        ("workloads", ", ".join(dict.fromkeys(str(w.get("spec")) for w in report.get("workloads") or []))),
        ("timings", timing_text),
        ("fail on growth", report.get("fail_on_growth")),
    ]
    workloads = report.get("workloads") or []
    wl_table = (
        fmt(
            '<h2>Workloads</h2><table><tr><th>workload</th><th class="n">iteration</th><th class="n">status</th>'
            '<th class="n">seconds</th></tr>{}</table>',
            join(
                fmt(
                    '<tr><td><code>{}</code></td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>',
                    w.get("spec"),
                    w.get("iteration"),
                    "did not finish" if w.get("status") is None else w.get("status"),
                    w.get("seconds"),
                )
                for w in workloads
            ),
        )
        if workloads
        else Html("")
    )
    label = snapshot.label if snapshot is not None else "no snapshot"
    sections = [
        fmt("<h2>Run</h2>{}", _kv(rows)),
        _crashes(report.get("crashes") or []),
        _suspects(report),
        _snapshots(report.get("snapshots") or [], snapshot_links or {}),
        wl_table,
    ]
    if snapshot is not None:
        sections += [_top_stacks(snapshot, top), _top_comms(snapshot, 10), _icicle(snapshot)]
    sections += [
        _blockmap(blocks, label, None if snapshot is not None else "no snapshot was taken"),
        _pollution(report.get("pollution")),
        _artifacts(artifacts),
    ]
    sub = f"{len(report.get('snapshots') or [])} snapshots · {report.get('out') or ''}"
    return _page(f"pagelab run: {status or 'unknown'}", sub, sections)


def report_page(
    snap: Snapshot,
    blocks: BlockMap | None,
    *,
    top: int = 15,
    why_no_map: str | None = None,
    sources: Mapping[tuple[str, ...], Mapping[str, Any]] | None = None,
) -> Html:
    """The page of ``pagelab report --html``: totals, top owners, icicle, pageblock map, culprits.

    ``sources``: per stack, ``source``/``subsystem``/``frame_sources`` (``report --build``, pagelab/source/).
    """
    frag = snap.fragmentation()
    rows: list[tuple[str, object]] = [
        ("input", snap.source),
        ("kind", "page_owner dump" if snap.kind == "dump" else "show_stacks"),
        ("filters", " ".join(snap.filters)),
        ("records", _num(snap.records)),
        ("pages", f"{snap.total_pages:,} ({_mib(snap.total_pages)} MiB)"),
        ("stacks", _num(len(snap.stacks))),
        ("mixed pages", f"{frag.pages:,} pages in blocks of another migratetype" if frag else None),
    ]
    sections = [
        fmt("<h2>Summary</h2>{}", _kv(rows)),
        _top_stacks(snap, top, sources),
        _top_comms(snap, 10),
        _icicle(snap),
        _blockmap(blocks, snap.label, why_no_map),
        _pollution(blocks.to_json(top=20) if blocks is not None else None),
    ]
    return _page(f"pagelab report: {snap.label}", snap.source, sections)


def diff_page(
    result: Mapping[str, Any], after: Snapshot, blocks: BlockMap | None, *, top: int = 20, why_no_map: str | None = None
) -> Html:
    """The page of ``pagelab diff --html``: totals, grown stacks with their two points, the AFTER side's pictures."""
    totals = result.get("totals") or {}
    snaps = result.get("snapshots") or []
    rows: list[tuple[str, object]] = [
        ("before", f"{snaps[0].get('label')} · {snaps[0].get('path')}" if snaps else None),
        ("after", f"{snaps[-1].get('label')} · {snaps[-1].get('path')}" if snaps else None),
        ("growth", f"{totals.get('growth_pages', 0):+,} pages" if totals else None),
        (
            "stacks",
            ", ".join(f"{k.removeprefix('stacks_')} {v:,}" for k, v in totals.items() if k.startswith("stacks_")),
        ),
    ]
    limited = dict(result)
    limited["suspects"] = list(result.get("suspects") or [])[:top]
    shrunk = result.get("shrunk") or []
    shrunk_html = (
        fmt(
            '<h2>Shrunk</h2><table><tr><th class="n">pages</th><th>callsite</th></tr>{}</table>',
            join(
                fmt(
                    '<tr><td class="n">{}</td><td><code>{}</code>{}</td></tr>',
                    f"{c.get('growth_pages', 0):+,}",
                    c.get("callsite"),
                    _frames(c.get("frames") or []),
                )
                for c in shrunk[:top]
            ),
        )
        if shrunk
        else Html("")
    )
    sections = [
        fmt("<h2>Summary</h2>{}", _kv(rows)),
        _suspects(limited),
        shrunk_html,
        _icicle(after),
        _blockmap(blocks, after.label, why_no_map),
        _pollution(blocks.to_json(top=20) if blocks is not None else None),
    ]
    return _page("pagelab diff", " → ".join(str(s.get("label")) for s in snaps), sections)


def error_page(title: str, message: str, report: Mapping[str, Any] | None = None) -> Html:
    """A page that still says what happened when building the full report failed."""
    body = [fmt("<h2>Report unavailable</h2><p>{}</p>", message)]
    if report is not None:
        body.append(fmt("<h2>report.json</h2><pre>{}</pre>", json.dumps(report, indent=2)[:200_000]))
    return _page(title, "", body)
