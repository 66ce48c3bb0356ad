"""SVG pictures generated in Python: a growth chart, an ownership icicle and the pageblock map.

Plain SVG inside the HTML: no script needed to see them, hover text through ``<title>``, and the sizes
bounded whatever the dump (the icicle drops nodes narrower than a pixel or two, the map draws only
pageblocks that hold an allocated page over one patterned background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pagelab.html.markup import Html, fmt, join
from pagelab.pageowner.analyse import Snapshot
from pagelab.pageowner.parse import parse_frame
from pagelab.pageowner.pollution import BlockMap

__all__ = ["MIGRATETYPE_COLOURS", "blockmap_svg", "growth_chart", "icicle_svg"]

# Migratetype names as mm/page_alloc.c's migratetype_names[] prints them (page_owner's "type" fields).
MIGRATETYPE_COLOURS = {
    "Unmovable": "#d9534f",
    "Movable": "#5cb85c",
    "Reclaimable": "#f0ad4e",
    "HighAtomic": "#9b59b6",
    "CMA": "#5bc0de",
    "Isolate": "#7f8c8d",
}
UNKNOWN_COLOUR = "#bdbdbd"
EMPTY_COLOUR = "#eeeeee"


def _num(n: int) -> str:
    return f"{n:,}"


# -- growth chart ----------------------------------------------------------------------------------
def growth_chart(values: Sequence[int], labels: Sequence[str], *, width: int = 260, height: int = 64) -> Html:
    """A line chart of pages per snapshot, with each point's label and value on hover."""
    if not values:
        return Html("")
    pad_l, pad_r, pad_t, pad_b = 4, 4, 6, 14
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    lo, hi = min(0, *values), max(values)
    span = (hi - lo) or 1
    step = w / max(1, len(values) - 1)
    pts = [
        (pad_l + i * step if len(values) > 1 else pad_l + w / 2, pad_t + h - (v - lo) * h / span)
        for i, v in enumerate(values)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = join(
        fmt(
            '<circle cx="{}" cy="{}" r="3"><title>{}: {} pages</title></circle>',
            f"{x:.1f}",
            f"{y:.1f}",
            label,
            _num(v),
        )
        for (x, y), v, label in zip(pts, values, labels, strict=False)
    )
    return fmt(
        '<svg class="growth" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{aria}">'
        '<line x1="{l}" y1="{base}" x2="{r}" y2="{base}" class="axis"/>'
        '<polyline points="{path}"/>{dots}'
        '<text x="{l}" y="{ty}" class="tick">{first}</text>'
        '<text x="{r}" y="{ty}" class="tick" text-anchor="end">{last} · max {top}</text></svg>',
        w=width,
        h=height,
        aria=f"pages per snapshot: {', '.join(_num(v) for v in values)}",
        l=pad_l,
        r=pad_l + w,
        base=f"{pad_t + h:.1f}",
        path=path,
        dots=dots,
        ty=height - 2,
        first=labels[0] if labels else "",
        last=labels[-1] if labels else "",
        top=_num(hi),
    )


# -- icicle ------------------------------------------------------------------------------------------
def folded_frame(frame: str) -> str:
    """A frame as flame graphs merge it: the function and its module, without the offset."""
    sym, module = parse_frame(frame)
    return f"{sym} [{module}]" if module else sym


@dataclass
class _Node:
    name: str
    pages: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(snap: Snapshot) -> _Node:
    root = _Node("all")
    for st in snap.stacks.values():
        if st.pages <= 0:
            continue
        root.pages += st.pages
        node = root
        # Root first, as flame graphs draw them (the printed stack is allocation end first).
        for frame in reversed(st.stack) if st.stack else ("(no stack)",):
            name = folded_frame(frame)
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(name)
            child.pages += st.pages
            node = child
    return root


def icicle_svg(snap: Snapshot, *, width: int = 1200, row: int = 17, min_px: float = 1.5) -> Html:
    """Pages by stack as an icicle (root on top); nodes under ``min_px`` wide are left out (their pages
    still count in their parent's width). Each rect carries data-x/data-w (fractions) for the zoom script.
    """
    root = _tree(snap)
    total = root.pages or 1
    rects: list[Html] = []
    depth_max = 0

    def walk(node: _Node, x: float, depth: int, path: str) -> None:
        nonlocal depth_max
        frac = node.pages / total
        depth_max = max(depth_max, depth)
        px_w = frac * width
        label = node.name if px_w > 40 else ""
        chars = int(px_w / 7) - 1
        if label and len(label) > chars:
            label = label[: max(chars - 1, 0)] + "…"
        colour = _frame_colour(node.name, depth)
        rects.append(
            fmt(
                '<g class="n" data-x="{fx}" data-w="{fw}" data-d="{d}"><rect x="{x}" y="{y}" width="{w}" height="{h}" '
                'fill="{c}"><title>{title}</title></rect><text x="{tx}" y="{ty}">{label}</text></g>',
                fx=f"{x:.6f}",
                fw=f"{frac:.6f}",
                d=depth,
                x=f"{x * width:.1f}",
                y=depth * row,
                w=f"{max(px_w - 0.5, 0.5):.1f}",
                h=row - 1,
                c=colour,
                title=f"{path}{node.name}\n{_num(node.pages)} pages ({100 * frac:.1f} %)",
                tx=f"{x * width + 3:.1f}",
                ty=depth * row + row - 5,
                label=label,
            )
        )
        cx = x
        for child in sorted(node.children.values(), key=lambda c: (-c.pages, c.name)):
            if child.pages / total * width >= min_px:
                walk(child, cx, depth + 1, "")
            cx += child.pages / total

    walk(root, 0.0, 0, "")
    height = (depth_max + 1) * row
    return fmt(
        '<svg id="icicle" class="icicle" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'data-width="{w}" role="img" aria-label="pages by stack, root on top">{body}</svg>',
        w=width,
        h=height,
        body=join(rects),
    )


def _frame_colour(name: str, depth: int) -> str:
    # Stable warm colours per function name (flame graph convention), module frames in blue.
    if depth == 0:
        return "#9e9e9e"
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFF
    if name.endswith("]"):
        return f"hsl({200 + h % 30},60%,{62 + h % 12}%)"
    return f"hsl({10 + h % 40},85%,{58 + h % 14}%)"


# -- pageblock map -----------------------------------------------------------------------------------
def blockmap_svg(bm: BlockMap, *, columns: int = 64, cell: int | None = None, owners: int = 3) -> Html:
    """Physical memory by PFN, one cell per pageblock from the first to the last block holding a page.

    Cells are coloured by the block's migratetype (from the records' ``Block N type X``); a block holding
    pages across the movable line gets a dark border and a cross. Blocks without an allocated page show the
    patterned background: the dump names no migratetype for them (free, or not RAM).
    """
    first, last = bm.span()
    first -= first % columns
    rows = (last - first) // columns + 1
    if cell is None:
        cell = 18 if rows <= 32 else 11  # big cells for a small guest (512 MiB is two rows of order-10 blocks)
    pages_per_block = 1 << bm.order
    width, height = columns * cell, rows * cell
    cells: list[Html] = []
    for idx in sorted(bm.blocks):
        b = bm.blocks[idx]
        i = idx - first
        x, y = (i % columns) * cell, (i // columns) * cell
        kinds = ", ".join(f"{t} {_num(n)}" for t, n in sorted(b.by_type.items(), key=lambda kv: (-kv[1], kv[0])))
        who = "; ".join(f"{name} {_num(n)}" for name, n in b.top_owners(owners))
        more = len(b.owners) - owners
        title = (
            f"block {idx} · PFN {idx * pages_per_block:#x}–{(idx + 1) * pages_per_block - 1:#x} · "
            f"{b.migratetype or 'type not printed'}\n"
            f"{_num(b.pages)} of {pages_per_block} pages allocated: {kinds}"
            + (f"\n{_num(b.foreign)} pages across the movable line" if b.mixed else "")
            + f"\nowners: {who}"
            + (f" (+{more} more)" if more > 0 else "")
        )
        colour = MIGRATETYPE_COLOURS.get(b.migratetype or "", UNKNOWN_COLOUR)
        # Fill opacity says how full the block is (a quarter at least, so the type stays readable).
        opacity = 0.25 + 0.75 * min(b.pages, pages_per_block) / pages_per_block
        mark = (
            fmt(
                '<path d="M{a} {b}L{c} {d}M{a} {d}L{c} {b}" class="x"/>',
                a=x + 2,
                b=y + 2,
                c=x + cell - 3,
                d=y + cell - 3,
            )
            if b.mixed
            else Html("")
        )
        cells.append(
            fmt(
                '<g class="{cls}"><rect x="{x}" y="{y}" width="{w}" height="{w}" fill="{c}" fill-opacity="{o}"/>'
                "{mark}<title>{title}</title></g>",
                cls="b mixed" if b.mixed else "b",
                x=x,
                y=y,
                w=cell - 1,
                c=colour,
                o=f"{opacity:.2f}",
                mark=mark,
                title=title,
            )
        )
    return fmt(
        '<svg class="blockmap" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="pageblock map">'
        '<defs><pattern id="empty" width="{c}" height="{c}" patternUnits="userSpaceOnUse">'
        '<rect width="{c1}" height="{c1}" fill="{e}"/></pattern></defs>'
        '<rect width="{w}" height="{h}" fill="url(#empty)"><title>no allocated page in this pageblock: '
        "free or not RAM; the dump names no migratetype for it</title></rect>{cells}</svg>",
        w=width,
        h=height,
        c=cell,
        c1=cell - 1,
        e=EMPTY_COLOUR,
        cells=join(cells),
    )


def legend(counts: Mapping[str, int]) -> Html:
    """Migratetype swatches with their block counts, then the mixed mark and the empty cell."""
    items = [
        fmt('<span class="sw" style="background:{}"></span>{} ({})', MIGRATETYPE_COLOURS.get(t, UNKNOWN_COLOUR), t, n)
        for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    items.append(Html('<span class="sw mixed-sw">×</span>holds pages across the movable line'))
    items.append(fmt('<span class="sw" style="background:{}"></span>no allocated page (free or not RAM)', EMPTY_COLOUR))
    return fmt('<p class="legend">{}</p>', join(items, " "))
