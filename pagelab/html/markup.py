"""Escaping by construction: text is escaped unless it is already ``Html``.

Everything the report shows from a dump (comm names, symbols, module names, workload commands, crash
excerpts) is attacker-influenced text: a process can name itself ``<script>``. Markup is only ever built
with ``fmt`` and ``join``, which escape every argument that is not ``Html``, so forgetting to escape is
not possible; ``Html(...)`` around a literal is the one way to say "this is markup".
"""

from __future__ import annotations

import html
from collections.abc import Iterable

__all__ = ["Html", "esc", "fmt", "join"]


class Html(str):
    """A string that is already markup (never escaped again)."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as markup: Html passes through, anything else is ``str()``-ed and escaped (quotes too)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def fmt(template: str, *args: object, **kwargs: object) -> Html:
    """``template.format`` with every argument escaped unless it is Html (the template is trusted)."""
    return Html(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    """Concatenate markup parts (non-Html parts are escaped)."""
    return Html(sep.join(esc(p) for p in parts))
