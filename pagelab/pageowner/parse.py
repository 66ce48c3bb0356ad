"""Streaming parser for ``/sys/kernel/debug/page_owner`` dumps and ``page_owner_stacks/show_stacks`` files.

Formats (docs/page_owner-format.md, mm/page_owner.c): a dump is a sequence of records separated by a blank
line; each record is a header (``Page allocated via order …``, fields added over time: ``pid`` 5.11,
``free_ts`` 5.12, ``tgid (comm)`` 5.18, ``free_ts`` gone in 6.7), an optional ``PFN`` line (decimal before
6.7, hex after, absent in pre-stripped input), the stack frames (one leading space each) and optional
extra lines (migrate reason, memcg: ``Slab cache page``, ``Charged [(via objcg) ]to [offline ]memcg X``).
7.x reads can print ``handle: N`` after the stack (``mode=stack_handle``) or instead of it (``mode=handle``):
``Record.handle``; resolving handles to stacks is ``handles.Resolver``'s job, on the bytes. A show_stacks file
is a sequence of frame blocks each ending in ``nr_base_pages: N`` (``stack_count: N`` in 6.9-rc1); 7.x's
show_handles has ``handle: N`` instead of the frames, and show_stacks_handles (the ``--stacks`` file, read by
``handles.load_stacks``) has frames and ``handle: N`` and no count.

The parser is push-based (``Parser.feed(bytes)``) so a collector can pour SSH output into it chunk by
chunk; ``iter_records``/``iter_show_stacks``/``iter_items`` wrap it for files and streams. Memory is
bounded by the distinct stacks seen: identical frame blocks map to one interned tuple of strings.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from pagelab.errors import InputError
from pagelab.pageowner.inputs import display_name, open_input

__all__ = [
    "Parser",
    "Record",
    "StackCount",
    "Summary",
    "iter_items",
    "iter_records",
    "iter_show_stacks",
    "parse_frame",
]

CHUNK_SIZE = 1 << 20
# The kernel caps a record at PAGE_SIZE (the C tool at 128 KiB): more without a blank line is not a dump.
MAX_ENTRY = 1 << 20
_CACHE_LIMIT = 1 << 17  # header/string caches are cleared past this many entries (memory stays bounded)

_HEADER = b"Page allocated via order "
_HEADER_STR = "Page allocated via order "
_NL_HEADER = b"\n" + _HEADER
_EXPECT_HEADER = "expected 'Page allocated via order N, mask 0xM(FLAGS)[, pid P[, tgid T (COMM)], ts N ns…]'"
_EXPECT_ANY = "expected page_owner records ('Page allocated via order …') or show_stacks entries (' frame' lines)"
# The first line of a frame block that is not a frame: ends the stack of a dump record.
_NOT_A_FRAME = re.compile(rb"\n(?! )")


@dataclass(slots=True)
class Record:
    """One page_owner record: a block of ``2**order`` pages with the stack that allocated it.

    Fields the input's kernel did not print are None (``pid``/``ts_ns`` before 5.11, ``tgid``/``comm``
    before 5.18, ``free_ts_ns`` outside 5.12–6.6, the PFN line's fields in pre-stripped input).
    ``stack`` holds the frames as printed without the leading space, interned: identical stacks are
    the same tuple object.
    """

    order: int
    gfp_mask: int
    gfp_flags: tuple[str, ...]
    pid: int | None
    tgid: int | None
    comm: str | None
    ts_ns: int | None
    free_ts_ns: int | None
    pfn: int | None
    migratetype: str | None
    block_migratetype: str | None
    page_flags: str | None
    stack: tuple[str, ...]
    extra: tuple[str, ...] = ()
    line: int = 0
    # The stack depot handle of a 7.x ``mode=handle``/``stack_handle`` read (``handle: N``), else None.
    # A handle-mode record whose handle was not resolved (no stacks file) has ``stack == ()``.
    handle: int | None = None

    @property
    def pages(self) -> int:
        """Base pages in this allocation (``1 << order``)."""
        return 1 << self.order


@dataclass(slots=True)
class StackCount:
    """One show_stacks entry: a stack and its outstanding base pages.

    ``count`` is the raw number printed; ``pages`` equals it for ``nr_base_pages:`` and, for the
    6.9-rc1 ``stack_count:`` (allocations, not pages), assumes order-0 allocations.
    """

    stack: tuple[str, ...]
    pages: int
    count: int
    key: str = "nr_base_pages"
    line: int = 0
    handle: int | None = None  # show_handles / show_stacks_handles with nr_base_pages (7.x)


@dataclass(slots=True)
class Summary:
    """What a finished parse saw: the input kind, item and line counts, and non-fatal warnings."""

    name: str
    kind: str | None  # "dump" | "show_stacks" | None when empty
    items: int = 0
    lines: int = 0
    distinct_stacks: int = 0
    warnings: list[str] = field(default_factory=list)


Item = Record | StackCount
Sink = Callable[[Item], None]


class _BadInput(Exception):
    """Raised inside the record parsers; ``feed`` turns it into an InputError with the line number."""

    def __init__(self, message: str, line_in_record: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line_in_record = line_in_record


def parse_frame(frame: str) -> tuple[str, str | None]:
    """Split a printed frame into (symbol, module): ``'foo+0x1c/0x54 [hoard]'`` → ``('foo', 'hoard')``.

    Raw addresses (no KALLSYMS) come back whole as the symbol; a build id after the module name
    (CONFIG_STACKTRACE_BUILD_ID: ``[hoard 5a3c…]``) is dropped.
    """
    module = None
    if frame.endswith("]"):
        i = frame.rfind(" [")
        if i > 0:
            module = frame[i + 2 : -1].split(" ", 1)[0] or None
            frame = frame[:i]
    return frame.partition("+")[0], module


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _BadInput(f"{what} is {text!r}, not a number; {_EXPECT_HEADER}") from None


class Parser:
    """Push parser: ``feed(bytes)`` as data arrives, ``close()`` at the end; items go to ``sink``.

    ``kind`` forces "dump" or "show_stacks"; by default the first entry decides. Raises InputError
    (from ``feed`` or ``close``) naming ``name``, the line and what was expected.
    """

    def __init__(self, sink: Sink, *, name: str = "<stream>", kind: str | None = None, handles: bool = False) -> None:
        """``handles``: accept entries that carry ``handle: N`` and no stack (a handle-mode dump or a
        show_handles file not resolved through a stacks file) instead of refusing them."""
        if kind not in (None, "dump", "show_stacks"):
            raise ValueError(f"kind must be 'dump' or 'show_stacks', not {kind!r}")
        self._sink = sink
        self.name = name
        self._want = kind
        self.kind: str | None = None
        self._buf = b""
        self._line = 1  # line number of the first byte of _buf
        self._carry_cr = False
        self._stacks: dict[bytes, tuple[str, ...]] = {}
        self._frames: dict[bytes, str] = {}
        self._gfp: dict[str, tuple[str, ...]] = {}
        self._headers: dict[tuple[bytes, bytes, bool], tuple] = {}
        self._items = 0
        self._closed = False
        self._handles_ok = handles
        self._unresolved: set[int] = set()
        self._unresolved_items = 0
        self.warnings: list[str] = []

    # -- public ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse as many complete entries as ``data`` completes. Raises InputError on bad input."""
        if self._closed:
            raise ValueError("Parser.feed() after close()")
        if not data:
            return
        if self._carry_cr:
            data = b"\r" + data
            self._carry_cr = False
        if b"\r" in data:
            # CRLF input parses like LF; a CR at the chunk's end may pair with the next chunk's LF.
            if data.endswith(b"\r"):
                data = data[:-1]
                self._carry_cr = True
            data = data.replace(b"\r\n", b"\n")
        buf = self._buf + data if self._buf else data
        if b"\0" in data:
            at = buf.find(b"\0")
            line = self._line_at(buf, at)
            raise InputError(self.name, "binary data (NUL byte); expected a text page_owner dump", line)
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        self._run(parts)
        consumed = len(buf) - len(self._buf)
        if consumed:
            self._line += buf.count(b"\n", 0, consumed)
        if self.kind is None and self._buf:
            self._detect_early()
        if len(self._buf) > MAX_ENTRY:
            raise InputError(
                self.name,
                f"no blank line for {len(self._buf) >> 10} KiB; expected entries of a few KiB separated by blank lines",
                self._line,
            )

    def close(self) -> Summary:
        """Parse the last entry (a missing closing blank line is a warning) and return the summary.

        Raises InputError for empty input or a bad last entry.
        """
        if not self._closed:
            self._closed = True
            if self._carry_cr:
                self._buf += b"\r"
            tail = self._buf.rstrip(b"\n")
            if tail.strip():
                self.warnings.append(
                    f"{self.name}: the last entry has no closing blank line (truncated input?); counted anyway"
                )
                self._run([tail])
            self._buf = b""
            if self._items == 0:
                raise InputError(self.name, f"no records or show_stacks entries (empty input); {_EXPECT_ANY}")
            self._line += tail.count(b"\n")
            if self._unresolved_items:
                self.warnings.append(
                    f"{self.name}: {self._unresolved_items:,} entr{'y' if self._unresolved_items == 1 else 'ies'} "
                    f"with {len(self._unresolved)} handle(s) have no stack (not in the stacks file; "
                    "show_stacks_handles never lists the stack of pages allocated before page_owner started)"
                )
        return Summary(self.name, self.kind, self._items, self._line, len(self._stacks), list(self.warnings))

    # -- internals ------------------------------------------------------------------------------
    def _detect_early(self) -> None:
        """Refuse a stream that is not a dump as soon as its first line is complete (live input)."""
        head = self._buf.lstrip(b"\n")
        if b"\n" in head[:4096] or len(head) >= 4096:
            try:
                self._detect(head)
            except _BadInput as bad:
                lead = len(self._buf) - len(head)
                raise InputError(self.name, bad.message, self._line + lead) from None

    def _line_at(self, buf: bytes, offset: int) -> int:
        return self._line + buf.count(b"\n", 0, offset)

    def _run(self, parts: list[bytes]) -> None:
        handler = self._entry
        line = self._line
        rec = b""
        try:
            for rec in parts:
                if rec:
                    handler(rec, line)
                    line += rec.count(b"\n") + 2
                else:
                    line += 2
        except _BadInput as bad:
            lead = len(rec) - len(rec.lstrip(b"\n"))
            raise InputError(self.name, bad.message, line + lead + bad.line_in_record) from None

    def _entry(self, rec: bytes, line: int) -> None:
        """Dispatch one blank-line-separated block; the first block fixes the input kind."""
        if rec[0] == 10:  # "\n": extra blank lines between entries
            stripped = rec.lstrip(b"\n")
            if not stripped:
                return
            line += len(rec) - len(stripped)
            rec = stripped
        kind = self.kind
        if kind is None:
            kind = self._detect(rec)
        if kind == "dump":
            self._dump_record(rec, line)
        else:
            self._show_stacks_entry(rec, line)

    def _detect(self, rec: bytes) -> str:
        if rec.startswith(_HEADER):
            kind = "dump"
        elif rec.startswith((b" ", b"handle: ")):
            kind = "show_stacks"  # show_handles has a handle where show_stacks has frames
        elif rec.startswith((b"N times", b"Node ")) or b" times, " in rec[:40]:
            what = {
                b"N": "page_owner_sort output",
                b"No": "pagetypeinfo-style output",
            }
            head = rec[:2] if rec.startswith(b"No") else rec[:1]
            raise _BadInput(f"this is {what.get(head, 'page_owner_sort output')}; {_EXPECT_ANY}")
        else:
            first = rec.split(b"\n", 1)[0][:60].decode("utf-8", "backslashreplace")
            raise _BadInput(f"not a page_owner dump: line is {first!r}; {_EXPECT_ANY}")
        if self._want is not None and kind != self._want:
            want = "a page_owner dump" if self._want == "dump" else "a show_stacks file"
            raise _BadInput(f"this is a {kind.replace('_', ' ')} file; expected {want}")
        self.kind = kind
        return kind

    def _stack(self, block: bytes) -> tuple[str, ...]:
        """The interned tuple for a block of ``' frame'`` lines (newline-joined, no trailing newline)."""
        stack = self._stacks.get(block)
        if stack is None:
            frames = self._frames
            out = []
            for raw in block.split(b"\n"):
                f = frames.get(raw)
                if f is None:
                    f = frames[raw] = sys.intern(raw[1:].decode("utf-8", "backslashreplace").rstrip())
                out.append(f)
            stack = self._stacks[block] = tuple(out)
        return stack

    def _dump_record(self, rec: bytes, line: int) -> None:
        if not rec.startswith(_HEADER):
            first = rec.split(b"\n", 1)[0][:60].decode("utf-8", "backslashreplace")
            raise _BadInput(f"record starts with {first!r}; {_EXPECT_HEADER}")
        # A record whose blank separator was lost still starts its own header: split it off.
        nxt = rec.find(_NL_HEADER)
        if nxt >= 0:
            self._dump_record(rec[:nxt], line)
            skipped = rec.count(b"\n", 0, nxt + 1)
            try:
                self._dump_record(rec[nxt + 1 :], line + skipped)
            except _BadInput as bad:
                bad.line_in_record += skipped
                raise
            return
        nl = rec.find(b"\n")
        if nl < 0:
            nl = len(rec)
        order, mask, flags, pid, tgid, comm, ts, free_ts = self._fields(rec[:nl])
        pos = nl + 1
        pfn = mt = block_mt = page_flags = None
        if rec.startswith(b"PFN ", pos):
            end = rec.find(b"\n", pos)
            if end < 0:
                end = len(rec)
            pfn, mt, block_mt, page_flags = _pfn_line(rec[pos:end].decode("utf-8", "backslashreplace"))
            pos = end + 1
        extra: tuple[str, ...] = ()
        if rec.startswith(b" ", pos):
            m = _NOT_A_FRAME.search(rec, pos)
            if m is None:
                stack = self._stack(rec[pos:])
            else:
                stack = self._stack(rec[pos : m.start()])
                extra = _extra_lines(rec[m.start() + 1 :])
        else:
            stack = ()
            if pos < len(rec):
                extra = _extra_lines(rec[pos:])
        handle = None
        if extra and extra[0].startswith("handle: "):
            handle = _handle(extra[0], rec.count(b"\n", 0, rec.find(b"\nhandle: ") + 1))
            extra = extra[1:]
            if not stack:
                self._no_stack(handle, rec.count(b"\n", 0, rec.find(b"\nhandle: ") + 1), "record")
        self._items += 1
        self._sink(
            Record(
                order,
                mask,
                flags,
                pid,
                tgid,
                comm,
                ts,
                free_ts,
                pfn,
                mt,
                block_mt,
                page_flags,
                stack,
                extra,
                line,
                handle,
            )
        )

    def _no_stack(self, handle: int, line_in_record: int, what: str) -> None:
        """A handle where the stack should be: counted when allowed, else refused with the way out."""
        if not self._handles_ok:
            raise _BadInput(
                f"'handle: {handle}' where the stack should be: a handle-mode {what} (7.x page_owner mode=handle); "
                "pass --stacks FILE (a copy of page_owner_stacks/show_stacks_handles read on the same boot)",
                line_in_record,
            )
        self._unresolved.add(handle)
        self._unresolved_items += 1

    def _fields(self, hb: bytes) -> tuple:
        """Header fields, cached by the header with its ts/free_ts digits cut out (they change per record)."""
        key = None
        i = hb.rfind(b", ts ")
        if i >= 0:
            j = hb.find(b" ns", i + 5)
            if j > 0:
                ts_b = hb[i + 5 : j]
                rest = hb[j + 3 :]
                fts_b = None
                if rest.startswith(b", free_ts "):
                    k = rest.find(b" ns", 10)
                    if k > 0:
                        fts_b = rest[10:k]
                        rest = rest[k + 3 :]
                if ts_b.isdigit() and (fts_b is None or fts_b.isdigit()):
                    key = (hb[:i], rest, fts_b is None)
                    cached = self._headers.get(key)
                    if cached is not None:
                        return (*cached, int(ts_b), None if fts_b is None else int(fts_b))
        fields = self._header(hb.decode("utf-8", "backslashreplace").rstrip())
        if key is not None and fields[6] == int(ts_b):
            if len(self._headers) > _CACHE_LIMIT:
                self._headers.clear()
            self._headers[key] = fields[:6]
        return fields

    def _header(
        self, h: str
    ) -> tuple[int, int, tuple[str, ...], int | None, int | None, str | None, int | None, int | None]:
        """Fields of a header line; every kernel from 4.x to 6.19 prints a prefix of the same layout."""
        rest = h[len(_HEADER_STR) :]
        order_s, sep, rest = rest.partition(", mask ")
        if not sep:
            raise _BadInput(f"header has no ', mask ': {h[:80]!r}; {_EXPECT_HEADER}")
        order = _int(order_s, "order")
        if not 0 <= order <= 20:
            raise _BadInput(f"order {order} is out of range (0..20); {_EXPECT_HEADER}")
        mask_s, sep, rest = rest.partition("(")
        close = rest.find(")")
        if not sep or close < 0:
            raise _BadInput(f"mask has no '(FLAGS)': {h[:80]!r}; {_EXPECT_HEADER}")
        try:
            mask = int(mask_s, 16)
        except ValueError:
            raise _BadInput(f"mask is {mask_s!r}, not hex; {_EXPECT_HEADER}") from None
        flags_s = rest[:close]
        flags = self._gfp.get(flags_s)
        if flags is None:
            flags = self._gfp[flags_s] = tuple(sys.intern(f) for f in flags_s.split("|") if f)
        rest = rest[close + 1 :]
        pid = tgid = ts = free_ts = None
        comm = None
        if rest:
            if rest.startswith(", pid "):
                pid_s, _, rest = rest[6:].partition(",")
                pid = _int(pid_s, "pid")
                rest = "," + rest if rest else ""
            if rest.startswith(", tgid "):
                tgid_s, sep, rest = rest[7:].partition(" (")
                if not sep:
                    raise _BadInput(f"tgid has no '(COMM)': {h[:100]!r}; {_EXPECT_HEADER}")
                tgid = _int(tgid_s, "tgid")
                # comm may hold spaces, commas and parentheses: it ends at the last "), ts ".
                end = rest.rfind("), ts ")
                if end < 0:
                    end = rest.rfind(")")
                    if end < 0:
                        raise _BadInput(f"comm has no closing ')': {h[:100]!r}; {_EXPECT_HEADER}")
                comm = rest[:end]
                rest = rest[end + 1 :]
            if rest.startswith(", ts "):
                ts_s, sep, rest = rest[5:].partition(" ns")
                if not sep:
                    raise _BadInput(f"ts has no ' ns': {h[:100]!r}; {_EXPECT_HEADER}")
                ts = _int(ts_s, "ts")
            if rest.startswith(", free_ts "):
                fts_s, sep, rest = rest[10:].partition(" ns")
                if not sep:
                    raise _BadInput(f"free_ts has no ' ns': {h[:100]!r}; {_EXPECT_HEADER}")
                free_ts = _int(fts_s, "free_ts")
            if rest and not rest.startswith(", "):
                raise _BadInput(f"unexpected text {rest[:40]!r} in header; {_EXPECT_HEADER}")
        return order, mask, flags, pid, tgid, comm, ts, free_ts

    def _show_stacks_entry(self, rec: bytes, line: int) -> None:
        if rec.endswith(b"\n"):
            rec = rec.rstrip(b"\n")
        nl = rec.rfind(b"\n")
        last = rec[nl + 1 :]
        key, sep, value = last.partition(b": ")
        if not sep or key not in (b"nr_base_pages", b"stack_count"):
            what = last[:60].decode("utf-8", "backslashreplace")
            n = rec.count(b"\n")
            if rec.startswith(_HEADER):
                raise _BadInput("a page_owner record in a show_stacks file; expected ' frame' lines", 0)
            if key == b"handle":
                raise _BadInput(
                    f"{what!r}: a show_stacks_handles file maps handles to stacks and counts no pages; give it "
                    "as --stacks FILE with a handle-mode dump; expected show_stacks ('nr_base_pages: N')",
                    n,
                )
            raise _BadInput(f"show_stacks entry ends with {what!r}; expected 'nr_base_pages: N'", n)
        try:
            count = int(value)
        except ValueError:
            shown = value[:30].decode(errors="replace")
            raise _BadInput(f"{key.decode()} is {shown!r}, not a number", rec.count(b"\n")) from None
        if count < 0:
            raise _BadInput(f"{key.decode()} is negative ({count})", rec.count(b"\n"))
        handle = None
        block = rec[:nl] if nl >= 0 else b""
        hl = block.rfind(b"\n") + 1
        if block.startswith(b"handle: ", hl):
            # show_handles (no frames) or show_stacks_handles with page counts (frames, then the handle).
            handle = _handle(block[hl:].decode("utf-8", "backslashreplace"), block.count(b"\n"))
            nl = hl - 1
        if nl < 0:
            stack: tuple[str, ...] = ()
            if handle is not None:
                self._no_stack(handle, 0, "show_handles entry")
        else:
            block = rec[:nl]
            if not block.startswith(b" "):
                first = block.split(b"\n", 1)[0][:60].decode("utf-8", "backslashreplace")
                raise _BadInput(f"show_stacks entry starts with {first!r}; expected ' frame' lines")
            bad = _NOT_A_FRAME.search(block)
            if bad is not None:
                what = block[bad.start() + 1 :].split(b"\n", 1)[0][:60].decode("utf-8", "backslashreplace")
                raise _BadInput(
                    f"{what!r} inside a show_stacks entry; expected ' frame' lines",
                    block.count(b"\n", 0, bad.start() + 1),
                )
            stack = self._stack(block)
        if key == b"stack_count" and "stack_count" not in "".join(self.warnings):
            self.warnings.append(
                f"{self.name}: 6.9-rc1 'stack_count:' counts allocations, not pages; treating each as one page"
            )
        self._items += 1
        self._sink(StackCount(stack, count, count, key.decode(), line, handle))


def _pfn_line(line: str) -> tuple[int, str | None, str | None, str | None]:
    """``PFN 0x100 type Unmovable Block 0 type Unmovable Flags 0x0(zone=0)`` (decimal PFN before 6.7)."""
    parts = line.split(" ", 8)
    p = parts[1] if len(parts) > 1 else ""
    try:
        pfn = int(p, 16) if p.startswith("0x") else int(p)
    except ValueError:
        raise _BadInput(f"PFN is {p[:30]!r}, not a number; expected 'PFN N type T Block B type T Flags F'", 1) from None
    mt = parts[3] if len(parts) > 3 and parts[2] == "type" else None
    block_mt = parts[7] if len(parts) > 7 and parts[6] == "type" else None
    page_flags = parts[8][6:] if len(parts) > 8 and parts[8].startswith("Flags ") else None
    return pfn, mt, block_mt, page_flags


def _handle(line: str, line_in_record: int) -> int:
    value = line[8:].strip()
    if not value.isdigit():
        raise _BadInput(f"handle is {value[:30]!r}, not a number; expected 'handle: N'", line_in_record)
    return int(value)


def _extra_lines(data: bytes) -> tuple[str, ...]:
    return tuple(x.decode("utf-8", "backslashreplace").rstrip() for x in data.split(b"\n") if x.strip())


# -- files and streams -----------------------------------------------------------------------------
def _source(path_or_stream: str | os.PathLike[str] | BinaryIO, name: str | None) -> tuple[str, bool]:
    if isinstance(path_or_stream, (str, os.PathLike)):
        return name or display_name(path_or_stream), True
    return name or getattr(path_or_stream, "name", None) or "<stream>", False


def _iterate(
    path_or_stream: str | os.PathLike[str] | BinaryIO,
    name: str | None,
    kind: str | None,
    stacks: Mapping[int, bytes] | None = None,
) -> Iterator[Item]:
    label, is_path = _source(path_or_stream, name)
    pending: list[Item] = []
    parser = Parser(pending.append, name=str(label), kind=kind, handles=stacks is not None)

    def pump(stream: BinaryIO) -> Iterator[Item]:
        read = stream.read
        while True:
            try:
                chunk = read(CHUNK_SIZE)
            except OSError as err:
                raise InputError(str(label), f"cannot read: {err.strerror or err}") from None
            if not chunk:
                break
            parser.feed(chunk)
            if pending:
                yield from pending
                pending.clear()
        parser.close()
        yield from pending
        pending.clear()

    # arg-type (three times): is_path (computed above) tells a path from a stream, which mypy cannot follow.
    if is_path:
        with open_input(path_or_stream, stacks=stacks) as stream:  # type: ignore[arg-type]
            yield from pump(stream)
    elif stacks is not None:
        from pagelab.pageowner.handles import Resolver, ResolvingReader

        # arg-type (here and below): a stream, not a path (is_path above).
        yield from pump(io.BufferedReader(ResolvingReader(path_or_stream, Resolver(stacks, name=str(label)))))  # type: ignore[arg-type]
    else:
        yield from pump(path_or_stream)  # type: ignore[arg-type]


def iter_items(
    path_or_stream: str | os.PathLike[str] | BinaryIO,
    name: str | None = None,
    *,
    stacks: Mapping[int, bytes] | None = None,
) -> Iterator[Item]:
    """Records or StackCounts, whichever the input holds (a path, ``-``, compressed, or a binary stream).

    ``stacks`` (``handles.load_stacks``) resolves a handle-mode dump or a show_handles file.
    Raises InputError (file, line, what was expected) on a missing/unreadable file or bad content.
    """
    return _iterate(path_or_stream, name, None, stacks)


def iter_records(
    path_or_stream: str | os.PathLike[str] | BinaryIO,
    name: str | None = None,
    *,
    stacks: Mapping[int, bytes] | None = None,
) -> Iterator[Record]:
    """The Records of a page_owner dump (``stacks`` as for iter_items). Raises InputError on bad input."""
    # return-value: _iterate yields Records or StackCounts by ``kind``; for "dump" only Records.
    return _iterate(path_or_stream, name, "dump", stacks)  # type: ignore[return-value]


def iter_show_stacks(
    path_or_stream: str | os.PathLike[str] | BinaryIO, name: str | None = None
) -> Iterator[StackCount]:
    """The StackCounts of a show_stacks file. Raises InputError on bad input or a dump."""
    # return-value: for "show_stacks" _iterate yields only StackCounts.
    return _iterate(path_or_stream, name, "show_stacks")  # type: ignore[return-value]
