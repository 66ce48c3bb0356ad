"""``pagelab sort``: the kernel's tools/mm/page_owner_sort (6.12 and 7.3, ``--compat``), byte for byte, faster.

How the C tool works (and so what must be reproduced exactly): it reads blocks of lines ending at a
blank line, keeps a ``PFN`` line aside (only for the allocator class: CMA, SLAB), removes the ``ts``
digits from the text unless it sorts by allocation time first, stores one entry per record, sorts them
by the cull comparator (glibc's qsort is a stable merge sort here), merges runs of equal entries into
the first one (count, pages), sorts again by the sort comparator and prints.

How this module does it fast: it never builds per-record objects beyond the key. The input is read in
multi-megabyte chunks cut at record boundaries and split on ``"\\n\\nPage allocated via order "``; each
record becomes one key (header with the ts digits removed, stack text, PFN class) counted in a
``Counter``, so memory is bounded by the distinct texts. Stable sorting makes the C result a function
of the *distinct* records in first-occurrence order, which is exactly what the insertion-ordered
counter holds. Records that do not have the usual shape (or chunks that contain anything unusual)
go through an exact, line-by-line emulation of the C reader instead; the fast path checks every new
distinct key so that it only ever takes records for which both paths agree.

A large plain file is read as two halves by two processes (``_Worker``), merged in file order.

Public API: ``run(options, ui)``, ``sort_file(path, options, ui)``, ``sort_dump(stream, name, options, ui)``,
``format_entries``/``write_entries``.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import pickle
import re
import resource
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pagelab.errors import InputError
from pagelab.pageowner import handles
from pagelab.pageowner.inputs import display_name, open_input
from pagelab.pageowner.sortopts import SortOptions, wrap_int32
from pagelab.ui import UI

PREFIX = b"Page allocated via order "
_REC = b"\n\n" + PREFIX  # a blank line then the next record: where records are cut
_CHUNK = 4 << 20
_BUF_SIZE = 128 * 1024  # page_owner_sort's block buffer; longer blocks end its reading silently
_DIGITS = b"0123456789"
_NOT_LOW = bytes(range(10, 256))  # translate(None, _NOT_LOW) keeps only the bytes below '\n'

# page_owner_sort's regexes (POSIX ERE, REG_NEWLINE). For these patterns Python's leftmost-first
# matching yields the same groups as glibc's leftmost-longest: every group is a run of one character
# class bounded by characters outside it, and the greedy (.*) picks the rightmost "),\s*ts" on the
# line as the longest match does.
_TS = re.compile(rb"ts\s*([0-9]*)\s*ns")
_ORDER = re.compile(rb"order\s*([0-9]*),")
_PID = re.compile(rb"pid\s*([0-9]*),")
_TGID = re.compile(rb"tgid\s*([0-9]*) ")
_COMM = re.compile(rb"tgid\s*[0-9]*\s*\((.*)\),\s*ts")
# What every record's header must start with after PREFIX. page_owner_sort reads a record like
# "order x, mask zz" as 0 pages and prints it; pagelab sort rejects it (exit 2, docs/sort.md).
_ORDER_MASK = re.compile(rb"[0-9]+, mask 0x[0-9a-fA-F]+")
# A header tail after the ts digits that no field regex can see into (6.12: " ns"; 6.1: " ns, free_ts N ns").
_INERT_TAIL = re.compile(rb" ns(?:, free_ts [0-9]+ ns)?")

# Allocator bits (enum ALLOCATOR_BIT); compare_allocator compares these integers.
CMA, SLAB, VMALLOC, OTHERS = 1 << 1, 1 << 2, 1 << 3, 1 << 4
_NO_PFN = 1 << 8  # fast-path marker: the second line of a record is not a PFN line
_ALLOCATOR_NAMES = ((CMA, b"CMA "), (SLAB, b"SLAB "), (VMALLOC, b"VMALLOC "), (OTHERS, b"OTHERS "))

_LONG_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1


# -- the C tool's field conversions -----------------------------------------------------------------
# 7.3's search_pattern() refuses a field of FIELD_BUFF (25) characters or more (the field then reads as
# missing); 6.12 copied any length into its 25-byte buffer. TASK_COMM_LEN (16) bounds the name the same way.
_FIELD_BUFF = 25
_TASK_COMM_LEN = 16


def _limit(compat: str) -> int:
    """The field length at which the C tool of ``compat`` treats a field as missing (0: none)."""
    return _FIELD_BUFF if compat != "6.12" else 0


def _c_pid(digits: bytes | None, limit: int = 0) -> int:
    """get_pid()/get_tgid(): strtol into a pid_t; -1 when empty, too long (``limit``) or out of range."""
    if not digits or 0 < limit <= len(digits):
        return -1
    value = int(digits)
    return -1 if value > _LONG_MAX else wrap_int32(value)


def _c_pages(digits: bytes | None, limit: int = 0) -> int:
    """get_page_num(): ``1 << order`` as a C int; 0 for a missing or out-of-range order."""
    if not digits or 0 < limit <= len(digits):
        return 0
    value = int(digits)
    if value > _LONG_MAX:
        return 0
    order = wrap_int32(value)
    if order > 64:
        return 0
    return wrap_int32(1 << (order & 31))  # x86's shl takes the count modulo 32


def _c_ts(digits: bytes | None, limit: int = 0) -> int:
    """get_ts_nsec(): strtoull; (u64)-1 when empty or out of range."""
    if not digits or 0 < limit <= len(digits):
        return _U64_MAX
    value = int(digits)
    return _U64_MAX if value > _U64_MAX else value


def _group(pattern: re.Pattern[bytes], buf: bytes) -> bytes | None:
    m = pattern.search(buf)
    return m[1] if m else None


def _fields(buf: bytes, limit: int = 0) -> tuple[int, int, bytes | None, int]:
    """(pid, tgid, comm, pages) of a record as page_owner_sort reads them from its block buffer.

    ``comm`` is None without a ``tgid N (COMM), ts`` match (``_resolve`` decides what that means).
    """
    return (
        _c_pid(_group(_PID, buf), limit),
        _c_pid(_group(_TGID, buf), limit),
        _group(_COMM, buf),
        _c_pages(_group(_ORDER, buf), limit),
    )


def _is_vmalloc(buf: bytes) -> bool:
    """get_allocator()'s VMALLOC test: ``alloc_pages`` between the start of the line before the first
    ``__vmalloc_node_range`` and that match."""
    second = buf.find(b"__vmalloc_node_range")
    if second < 0:
        return False
    # The C walks back over two newlines; where it would run off the buffer (undefined) we stop at 0.
    end_of_previous = buf.rfind(b"\n", 0, second)
    first = buf.rfind(b"\n", 0, end_of_previous) + 1 if end_of_previous > 0 else 0
    hit = buf.find(b"alloc_pages", first)
    return 0 <= hit < second


def _pfn_class(line: bytes) -> int:
    return (CMA if b"CMA" in line else 0) | (SLAB if b"slab" in line else 0)


# -- reading ----------------------------------------------------------------------------------------
Key = tuple[bytes, "bytes | None", int, "tuple[int, int, bytes | None, int] | None"]
"""A distinct record: (header after PREFIX with the ts digits removed unless kept, the lines after the
header joined by newlines or None, PFN-line class bits, field override or None)."""


@dataclass
class ReadStats:
    """What reading found; for messages."""

    records: int = 0
    slow_segments: int = 0
    unterminated: bool = False


class _Reader:
    """Counts distinct records of one dump in first-occurrence order.

    Raises InputError for anything that is not a page_owner dump.
    """

    def __init__(self, name: str, strip_ts: bool, keep_first_ts: bool, limit: int = 0) -> None:
        self.name = name
        self.strip = strip_ts
        self.limit = limit  # _limit(compat): field lengths the C tool treats as missing
        self.records: dict[Key, int] = {}
        self.first_ts: dict[Key, bytes] | None = {} if keep_first_ts else None
        self.stats = ReadStats()
        self.lineno = 0  # complete lines consumed so far
        # Exact (slow) reader state, which persists across records as in the C tool.
        self._ext_class = 0  # page_owner_sort keeps the last PFN line for records that have none
        self._block: list[bytes] | None = None
        self._block_line = 0
        self._block_size = 0
        # Fast-path caches, per distinct part.
        self._head_ok: dict[bytes, bool] = {}
        self._stack_lines: dict[bytes, int] = {}  # stack text -> its number of lines, or 0 if unusable
        self._stacks: dict[bytes, bytes] = {}  # interned stack texts: high-cardinality dumps share them
        self._binary = False  # a NUL byte was read: only the exact reader (which reports it) from then on
        self.max_distinct: int | None = None  # a worker gives up beyond this (see _Worker)

    # ---- the stream ---------------------------------------------------------------------------
    def feed_stream(self, stream: BinaryIO | _Head, progress: Iterator[None] | None = None) -> None:
        """Read ``stream`` to its end. Raises InputError."""
        carry = b""  # the incomplete last record of what was read so far
        consumed_prefix = False  # carry's record has lost its PREFIX to a split on _REC
        first = True
        pending_cr = b""
        overlap = len(_REC) - 1
        while True:
            new = stream.read(_CHUNK)
            if progress is not None:
                next(progress, None)
            if not new:
                break
            if pending_cr:
                new = pending_cr + new
                pending_cr = b""
            if b"\r" in new:
                # CRLF dumps (copied through Windows tools) parse like LF ones.
                if new.endswith(b"\r"):
                    new, pending_cr = new[:-1], b"\r"
                new = new.replace(b"\r\n", b"\n")
            if b"\x00" in new:
                self._binary = True  # the exact reader will say where
            if first:
                first = False
                if new.startswith(PREFIX):
                    new = new[len(PREFIX) :]
                    consumed_prefix = True
            # Split the new data alone (no copy of it with the carry) unless a boundary straddles the two.
            if carry and _REC in carry[-overlap:] + new[:overlap]:
                new, carry = carry + new, b""
            pieces = new.split(_REC)
            if carry:
                pieces[0] = carry + pieces[0]
            carry = pieces.pop()
            if pieces:
                self._segment(pieces, consumed_prefix)
                consumed_prefix = True
            elif len(carry) > 4 * _CHUNK:
                # No record boundary in 16 MB: not a dump, or one giant block. Let the exact
                # reader judge the complete lines (it raises on a block over 128 KiB).
                end = carry.rfind(b"\n") + 1
                self._slow((PREFIX if consumed_prefix else b"") + carry[:end], eof=False)
                carry, consumed_prefix = carry[end:], False
        self._final(carry + pending_cr, consumed_prefix)

    def _segment(self, pieces: list[bytes], consumed_prefix: bool) -> None:
        """Count whole records (split on _REC; the first lacks PREFIX when ``consumed_prefix``)."""
        if self._block is None and consumed_prefix and not self._binary and self._fast(pieces):
            return
        self._slow((PREFIX if consumed_prefix else b"") + _REC.join(pieces) + b"\n\n", eof=False)

    def _final(self, rest: bytes, consumed_prefix: bool) -> None:
        """Count what follows the last record boundary: normally one record and its blank line."""
        clean = self._block is None and consumed_prefix and not self._binary
        if clean and rest.endswith(b"\n\n") and self._fast([rest[:-2]]):
            return
        self._slow((PREFIX if consumed_prefix else b"") + rest, eof=True)

    def merge(self, records: dict[Key, int], first_ts: dict[Key, bytes] | None, stats: ReadStats) -> None:
        """Append another reader's counts (of the records that follow this reader's)."""
        mine = self.records
        for key, count in records.items():
            header, stack, pclass, override = key
            if stack is not None:
                stack = self._stacks.setdefault(stack, stack)
            canon: Key = (header, stack, pclass, override)
            previous = mine.get(canon)
            mine[canon] = count if previous is None else previous + count
            if previous is None and first_ts is not None and self.first_ts is not None:
                self.first_ts[canon] = first_ts[key]
        self.stats.records += stats.records
        self.stats.slow_segments += stats.slow_segments
        self.stats.unterminated = stats.unterminated

    # ---- fast path ----------------------------------------------------------------------------
    def _fast(self, pieces: list[bytes]) -> bool:
        """Count records given as their text after PREFIX up to (not including) the blank line.

        Returns False, having counted nothing, when any record needs the exact reader.
        """
        local_ts: dict[tuple, bytes] | None = None
        try:
            if self.first_ts is not None:
                local, local_ts = self._count_keeping_ts(pieces)
            elif self.strip:
                local = Counter(_stripped_keys(pieces))
            else:
                local = Counter(_raw_keys(pieces))
        except ValueError:  # a record with fewer than three lines
            return False
        records = self.records
        merged: list[tuple[Key, int, tuple]] = []
        lines = 0
        for key, count in local.items():
            head, tail, stack, pclass = key
            header = head + b", ts " + tail if tail is not None else head
            n = self._stack_lines.get(stack)
            if n is None:
                n = self._stack_lines[stack] = _stack_line_count(stack)
            canon: Key = (header, stack, pclass, None)
            if canon not in records:
                if not n or pclass & _NO_PFN or len(header) + len(stack) > _BUF_SIZE - 1024:
                    return False
                if not _ORDER_MASK.match(header):
                    return False  # the exact reader names the line
                if tail is not None and not self._stripped_header_ok(head, tail):
                    return False
                canon = (header, self._stacks.setdefault(stack, stack), pclass, None)
            merged.append((canon, count, key))
            lines += count * (n + 3)  # header, PFN line, stack lines, blank line
        for canon, count, key in merged:
            previous = records.get(canon)
            records[canon] = count if previous is None else previous + count
            if local_ts is not None and previous is None:
                self.first_ts[canon] = local_ts[key]  # type: ignore[index]  # local_ts is keyed like merged
        self.lineno += lines
        self.stats.records += len(pieces)
        if self.max_distinct is not None and len(records) > self.max_distinct:
            raise _GiveUp
        return True

    def _stripped_header_ok(self, head: bytes, tail: bytes) -> bool:
        """Whether page_owner_sort would remove exactly the digits we removed, and read the same fields.

        Its ts regex must first match at our ", ts " (nothing in ``head`` matches it, and ``tail`` starts
        with " ns"); the comm regex must not reach past the digits (no ")" after them).
        """
        if not tail.startswith(b" ns") or b")" in tail:
            return False
        ok = self._head_ok.get(head)
        if ok is None:
            ok = self._head_ok[head] = _TS.search(head) is None
        return ok

    def _count_keeping_ts(self, pieces: list[bytes]) -> tuple[Counter, dict[tuple, bytes]]:
        """Like _stripped_keys, but remembering each key's first ts digits (a later sort key needs them)."""
        local: Counter = Counter()
        first: dict[tuple, bytes] = {}
        for piece in pieces:
            header, pfn, stack = piece.split(b"\n", 2)
            head, _, rest = header.partition(b", ts ")
            tail = rest.lstrip(_DIGITS)
            key = (head, tail, stack, _pfn_key_class(pfn))
            if key not in first:
                first[key] = rest[: len(rest) - len(tail)]
            local[key] += 1
        return local, first

    # ---- exact path ---------------------------------------------------------------------------
    def _slow(self, text: bytes, eof: bool) -> None:
        """Read complete lines exactly as page_owner_sort's read_block() does. Raises InputError."""
        self.stats.slow_segments += 1
        nul = text.find(b"\x00")
        if nul >= 0:
            at = self.lineno + text.count(b"\n", 0, nul) + 1
            raise InputError(self.name, "NUL byte: binary data, expected a page_owner dump (text)", at)
        lines = text.split(b"\n")
        last = lines.pop()
        if last:
            lines.append(last)  # only at EOF: a last line without its newline
        for line in lines:
            self.lineno += 1
            if not line:
                self._end_block()
            elif line.startswith(b"PFN"):
                self._ext_class = _pfn_class(line)
                if self._block is None:
                    self._block, self._block_line, self._block_size = [], self.lineno, 0
            else:
                if self._block is None:
                    self._block, self._block_line, self._block_size = [], self.lineno, 0
                self._block.append(line)
                self._block_size += len(line) + 1
                if self._block_size >= _BUF_SIZE - 1:
                    raise InputError(
                        self.name,
                        "record longer than 128 KiB (page_owner_sort's limit): not a page_owner dump",
                        self._block_line,
                    )
        if eof and self._block is not None:
            self.stats.unterminated = bool(self._block)
            self._end_block()

    def _end_block(self) -> None:
        block, self._block = self._block, None
        if not block:
            return  # an empty block (a doubled blank line): page_owner_sort counts it, we skip it
        if not block[0].startswith(PREFIX):
            shown = block[0][:60].decode("ascii", "backslashreplace")
            raise InputError(
                self.name,
                f"expected a page_owner record ('Page allocated via order …'), got '{shown}'",
                self._block_line,
            )
        if not _ORDER_MASK.match(block[0], len(PREFIX)):
            shown = block[0][:80].decode("ascii", "backslashreplace")
            raise InputError(
                self.name, f"expected 'Page allocated via order N, mask 0xM…', got '{shown}'", self._block_line
            )
        raw = b"\n".join(block) + b"\n"
        txt = raw
        if self.strip:
            m = _TS.search(raw)
            if m and m.end(1) > m.start(1):
                txt = raw[: m.start(1)] + raw[m.end(1) :]
        header, _, rest = txt.partition(b"\n")
        override = None
        if txt is not raw:
            # The C reads the fields from the unstripped buffer; they differ only in odd headers.
            raw_fields = _fields(raw + b"\n", self.limit)
            if raw_fields != _fields(txt + b"\n", self.limit):
                override = raw_fields
        stack = rest[:-1] if rest else None
        if stack is not None:
            stack = self._stacks.setdefault(stack, stack)
        key: Key = (header[len(PREFIX) :], stack, self._ext_class, override)
        self.records[key] = self.records.get(key, 0) + 1
        if self.first_ts is not None and key not in self.first_ts:
            self.first_ts[key] = _group(_TS, raw + b"\n") or b""
        self.stats.records += 1


def _pfn_key_class(pfn: bytes) -> int:
    return (CMA if b"CMA" in pfn else 0) | (SLAB if b"slab" in pfn else 0) | (0 if pfn[:3] == b"PFN" else _NO_PFN)


def _stripped_keys(pieces: list[bytes]) -> Iterator[tuple]:
    """Per record: (header up to ", ts ", header after the ts digits, stack, PFN class)."""
    digits = _DIGITS
    for piece in pieces:
        header, pfn, stack = piece.split(b"\n", 2)
        head, _, rest = header.partition(b", ts ")
        yield (
            head,
            rest.lstrip(digits),
            stack,
            (CMA if b"CMA" in pfn else 0) | (SLAB if b"slab" in pfn else 0) | (pfn[:3] != b"PFN") << 8,
        )


def _raw_keys(pieces: list[bytes]) -> Iterator[tuple]:
    """Per record: (header, None, stack, PFN class), for sorts that keep the ts digits."""
    for piece in pieces:
        header, pfn, stack = piece.split(b"\n", 2)
        yield (
            header,
            None,
            stack,
            (CMA if b"CMA" in pfn else 0) | (SLAB if b"slab" in pfn else 0) | (pfn[:3] != b"PFN") << 8,
        )


def _stack_line_count(stack: bytes) -> int:
    """Lines in a record's text after the header and PFN line, or 0 if the fast path must not take it
    (empty, blank lines, further PFN lines)."""
    if not stack or stack[0] == 10 or stack[-1] == 10 or b"\n\n" in stack:
        return 0
    if stack.startswith(b"PFN") or b"\nPFN" in stack:
        return 0
    return stack.count(b"\n") + 1


# -- culling and sorting ----------------------------------------------------------------------------
@dataclass(slots=True)
class Entry:
    """One output entry: a culled group and the record that represents it (the first one read)."""

    header: bytes
    stack: bytes | None
    allocator: int
    pid: int
    tgid: int
    comm: bytes
    ts: int
    num: int
    pages: int

    @property
    def txt(self) -> bytes:
        """The record text as page_owner_sort prints it."""
        return PREFIX + self.header + b"\n" + (self.stack + b"\n" if self.stack is not None else b"")

    @property
    def stacktrace(self) -> bytes:
        return self.stack + b"\n" if self.stack is not None else b""


def _resolve(reader: _Reader, opts: SortOptions) -> list[Entry]:
    """page_owner_sort's result from the distinct records: filter, sort by the cull key, merge, sort.

    Consumes reader.records (the keys are released once they are entries).
    """
    pids = frozenset(opts.pids) if opts.pids is not None else None
    tgids = frozenset(opts.tgids) if opts.tgids is not None else None
    comms = frozenset(opts.comms) if opts.comms is not None else None
    need_ts = any(k == "ts" for k, _ in opts.sort_keys)
    info_cache: dict[tuple, tuple[int, int, bytes | None, int, bool]] = {}
    limit = _limit(opts.compat)
    entries: list[Entry] = []
    head_has_ts: dict[bytes, bool] = {}
    for key, count in reader.records.items():
        header, stack, pclass, override = key
        head, sep, rest = header.partition(b", ts ")
        tail = rest.lstrip(_DIGITS)  # with -a the header keeps its ts digits
        # The fields depend on the header only through `head` when the tail is inert (the usual case):
        # the field regexes cannot reach the ts digits or what follows. High-cardinality dumps (6.1
        # free_ts, -a) so share the regex work.
        inert = bool(sep) and _INERT_TAIL.fullmatch(tail) is not None
        cache_key = (head, stack) if inert else (header, stack, 0)
        info = info_cache.get(cache_key)
        if info is None:
            buf = PREFIX + header + b"\n" + (stack + b"\n" if stack is not None else b"") + b"\n"
            info = info_cache[cache_key] = (*_fields(buf, limit), _is_vmalloc(buf))
        pid, tgid, maybe_comm, pages = override or info[:4]
        if pids is not None and pid not in pids:
            continue
        if tgids is not None and tgid not in tgids:
            continue
        if (maybe_comm is None or len(maybe_comm) >= _TASK_COMM_LEN) and limit:
            # 7.3's get_comm() fails here; add_list() prints "Out of memory" and the tool stops
            # without writing any output (tools/mm/page_owner_sort.c). 6.12 reads on.
            shown = PREFIX + header[:80]
            raise InputError(
                reader.name,
                f"record '{shown.decode('ascii', 'backslashreplace')}' has no 'tgid N (COMM), ts' with a name "
                "of at most 15 bytes: page_owner_sort 7.3 stops there without output; --compat 6.12 reads it",
            )
        comm = maybe_comm or b""
        if comms is not None and comm not in comms:
            continue
        ts = 0
        if need_ts:
            if reader.first_ts is not None:
                ts = _c_ts(reader.first_ts.get(key), limit)
            else:
                has_ts = head_has_ts.get(head)
                if has_ts is None:
                    has_ts = head_has_ts[head] = _TS.search(head) is not None
                if inert and not has_ts:  # the ts regex first matches at ", ts "
                    ts = _c_ts(rest[: len(rest) - len(tail)], limit)
                else:
                    ts = _c_ts(_group(_TS, PREFIX + header + b"\n" + (stack or b"") + b"\n"), limit)
        allocator = pclass | (VMALLOC if info[4] else 0) or OTHERS
        entries.append(Entry(header, stack, allocator, pid, tgid, comm, ts, count, pages * count))
    reader.records = {}
    reader.first_ts = None
    keys = _SortKeys(_text_order_exact(entries))
    # The first qsort (stable) by the cull comparator, then runs of equal entries merge into their first.
    cull = opts.cull
    if cull:
        fields = [keys.getter(f) for f in ("stacktrace", "pid", "tgid", "comm", "allocator") if f in cull]
    else:
        fields = keys.txt_parts()
    for getter in reversed(fields):  # one stable sort per field, least significant first
        entries.sort(key=getter)
    same = _same_group(cull)
    merged: list[Entry] = []
    last: Entry | None = None
    for e in entries:
        if last is not None and same(last, e):
            last.num += e.num
            last.pages += e.pages
        else:
            merged.append(e)
            last = e
    for e in merged:  # C ints
        e.num, e.pages = wrap_int32(e.num), wrap_int32(e.pages)
    # The second qsort (stable) by the sort keys.
    for name, sign in reversed(opts.sort_keys):
        merged.sort(key=keys.getter(name), reverse=sign < 0)
    return merged


def _same_group(cull: frozenset[str]) -> Callable[[Entry, Entry], bool]:
    """compare_cull_condition() == 0 for two entries."""
    if not cull:
        return lambda a, b: a.header == b.header and a.stack == b.stack
    names = [{"stacktrace": "stack"}.get(f, f) for f in ("stacktrace", "pid", "tgid", "comm", "allocator") if f in cull]
    return lambda a, b: all(getattr(a, n) == getattr(b, n) for n in names)


def _text_order_exact(entries: list[Entry]) -> bool:
    """Whether comparing (header, stack) pairs orders like strcmp on the joined texts.

    They differ only when a byte below '\\n' follows a common prefix; no real dump has one.
    """
    stacks = {id(e.stack): e.stack for e in entries if e.stack is not None}  # stacks are interned: check each once
    if any(s.translate(None, _NOT_LOW) for s in stacks.values()):
        return False
    return not any(e.header.translate(None, _NOT_LOW) for e in entries)


class _SortKeys:
    """Sort-key functions for entries: strcmp order of the texts and stack traces, C ints otherwise."""

    def __init__(self, exact: bool) -> None:
        self.exact = exact

    def txt_parts(self) -> list[Callable[[Entry], Any]]:
        """Key functions whose successive stable sorts order entries by text."""
        if self.exact:
            return [_attr("header"), _stack_or_empty]
        return [_attr("txt")]

    def getter(self, name: str) -> Callable[[Entry], Any]:
        if name == "txt":
            return (lambda e: (e.header, e.stack or b"")) if self.exact else _attr("txt")
        if name == "stacktrace":
            return _stack_or_empty if self.exact else _attr("stacktrace")
        return _attr(name)


def _stack_or_empty(e: Entry) -> bytes:
    return e.stack or b""


def _attr(name: str) -> Callable[[Entry], object]:
    return operator.attrgetter(name)


# -- output -----------------------------------------------------------------------------------------
@functools.cache
def _allocator_names(allocator: int) -> bytes:
    return b"allocated by " + b"".join(name for bit, name in _ALLOCATOR_NAMES if allocator & bit)


def format_entries(entries: Iterable[Entry], opts: SortOptions) -> Iterator[bytes]:
    """page_owner_sort's output, entry by entry."""
    cull = opts.cull
    if not cull:
        for e in entries:
            stack = e.stack + b"\n" if e.stack is not None else b""
            yield b"%d times, %d pages, %s:\n%s%s\n%s\n" % (
                e.num,
                e.pages,
                _allocator_names(e.allocator),
                PREFIX,
                e.header,
                stack,
            )
        return
    show_pid = "pid" in cull or opts.pids is not None
    show_tgid = "tgid" in cull or opts.tgids is not None
    show_comm = "comm" in cull or opts.comms is not None
    for e in entries:
        parts = [b"%d times, %d pages" % (e.num, e.pages)]
        if show_pid:
            parts.append(b", PID %d" % e.pid)
        if show_tgid:
            parts.append(b", TGID %d" % e.tgid)
        if show_comm:
            parts.append(b", task_comm_name: " + e.comm)
        if "allocator" in cull:
            parts.append(b", " + _allocator_names(e.allocator))
        if "stacktrace" in cull:
            parts.append(b":\n" + e.stacktrace)
        parts.append(b"\n")
        yield b"".join(parts)


def write_entries(out: BinaryIO, entries: list[Entry], opts: SortOptions) -> None:
    """Write the entries to ``out`` in batches."""
    batch: list[bytes] = []
    size = 0
    for text in format_entries(entries, opts):
        batch.append(text)
        size += len(text)
        if size > 1 << 20:
            out.write(b"".join(batch))
            batch.clear()
            size = 0
    out.write(b"".join(batch))


# -- entry points -----------------------------------------------------------------------------------
@dataclass
class SortResult:
    """What a sort did, for the caller's summary."""

    records: int
    distinct: int
    entries: list[Entry]
    stats: ReadStats
    worker_peak_rss_kib: int | None = None


def _new_reader(name: str, opts: SortOptions) -> _Reader:
    keep_first_ts = opts.strip_ts and any(k == "ts" for k, _ in opts.sort_keys)
    return _Reader(name, opts.strip_ts, keep_first_ts, _limit(opts.compat))


@contextlib.contextmanager
def _progress(ui: UI, name: str, total: int | None) -> Iterator[Iterator[None]]:
    """A generator to advance once per chunk read, driving a progress bar."""
    with ui.progress(f"reading {name}", total=total) as task:

        def tick() -> Iterator[None]:
            done = 0
            while True:
                yield None
                done += _CHUNK
                task.update(completed=min(done, total) if total else done)

        yield tick()


def sort_dump(stream: BinaryIO, name: str, opts: SortOptions, ui: UI, total: int | None = None) -> SortResult:
    """Read a dump from ``stream`` and compute page_owner_sort's entries. Raises InputError."""
    reader = _new_reader(name, opts)
    with _progress(ui, name, total) as tick:
        reader.feed_stream(stream, tick)
    return _finish(reader, name, opts, ui)


def sort_file(path: str, opts: SortOptions, ui: UI) -> SortResult:
    """Like sort_dump for a path ('-' is stdin). A large plain file is read as two halves by two processes.

    Raises InputError.
    """
    name = display_name(path)
    total = None
    with contextlib.suppress(OSError):
        if path != "-":
            total = os.stat(path).st_size or None
    # Without ts stripping every record is distinct: the worker would only give up. A handle-mode dump
    # (--stacks) is read through the resolver, in one piece.
    parallel = total and total >= _PARALLEL_MIN and opts.strip_ts and _jobs() > 1 and opts.stacks is None
    start = _split_point(path, total) if parallel and total else None
    reader = _new_reader(name, opts)
    worker = None
    if start is not None:
        with contextlib.suppress(OSError):  # no fork (process limit, memory): one process does it all
            worker = _Worker(path, start, reader)
    if worker is None or start is None:
        table = handles.load_stacks(opts.stacks) if opts.stacks is not None else None
        with open_input(path, stacks=table) as stream:
            result = sort_dump(stream, name, opts, ui, total)
            left = getattr(stream, "resolver", None)
            warning = left.warning(name) if left is not None else None
            if warning:
                ui.warn(warning)
            return result
    try:
        with _progress(ui, name, start) as tick, open(path, "rb") as f:
            reader.feed_stream(_Head(f, start), tick)
        payload = worker.result()
    finally:
        worker.close()
    if payload is None:
        # The second half holds something only the sequential exact reader gets right (or the
        # worker gave up): read it here, with the first half's state and line numbers.
        with open(path, "rb") as f:
            f.seek(start)
            reader.feed_stream(f)
    else:
        reader.merge(*payload[:3])
    result = _finish(reader, name, opts, ui)
    if payload is not None:
        result.worker_peak_rss_kib = payload[3]
        if opts.debug:
            here = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            ui.info(f"debug: two processes, peak RSS {here // 1024} MiB + worker {payload[3] // 1024} MiB")
    elif opts.debug:
        ui.info("debug: the second half was read here (the worker's reader could not take it alone)")
    return result


def _finish(reader: _Reader, name: str, opts: SortOptions, ui: UI) -> SortResult:
    if reader.stats.records == 0:
        raise InputError(name, "no page_owner records ('Page allocated via order …' blocks) found")
    if reader.stats.unterminated:
        ui.warn(f"{name}: the last record has no closing blank line; counted (page_owner_sort drops it)")
    distinct = len(reader.records)
    entries = _resolve(reader, opts)
    if opts.debug:
        ui.info(
            f"debug: {reader.stats.records} records, {distinct} distinct, "
            f"{reader.stats.slow_segments} segment(s) read by the exact line reader"
        )
    return SortResult(reader.stats.records, distinct, entries, reader.stats)


# -- two processes ----------------------------------------------------------------------------------
_PARALLEL_MIN = 32 << 20  # smaller files: a second process costs more than it saves
_WORKER_MAX_DISTINCT = 100_000  # beyond this a worker's result costs too much memory to hand over


class _GiveUp(Exception):
    """A worker stops: its half is better read by the parent."""


def _jobs() -> int:
    """Processes for one sort: 2 on a multi-core machine; PAGELAB_SORT_JOBS=1 forces one."""
    if os.environ.get("PAGELAB_SORT_JOBS") == "1":
        return 1
    return 2 if (os.cpu_count() or 1) > 1 else 1


def _split_point(path: str, size: int) -> int | None:
    """Offset of a record start near the middle of a plain (uncompressed, LF) dump, or None."""
    try:
        with open(path, "rb") as f:
            if f.read(len(PREFIX)) != PREFIX:
                return None  # compressed, CRLF-free check below, or not a dump: one process decides
            f.seek(size // 2)
            window = f.read(1 << 20)
    except OSError:
        return None
    i = window.find(_REC)
    return None if i < 0 else size // 2 + i + 2


class _Head:
    """The first ``limit`` bytes of a binary file."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self._f = f
        self._left = limit

    def read(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._f.read(min(n, self._left))
        self._left -= len(data)
        return data


class _Worker:
    """A forked process counting the distinct records of ``path`` from ``start`` to the end.

    Its result is None unless its half was read by the fast path alone (the exact reader needs the
    state and line numbers of the first half); the parent then reads that half itself.
    """

    def __init__(self, path: str, start: int, like: _Reader) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if self.pid == 0:  # the worker: never returns
            os.close(read_fd)
            self._run(path, start, like, write_fd)
        os.close(write_fd)
        self._pipe = os.fdopen(read_fd, "rb")

    @staticmethod
    def _run(path: str, start: int, like: _Reader, write_fd: int) -> None:
        code = 0
        try:
            payload = None
            reader = _Reader(like.name, like.strip, like.first_ts is not None, like.limit)
            reader.max_distinct = _WORKER_MAX_DISTINCT
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    reader.feed_stream(f)
                if not reader.stats.slow_segments:
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    payload = (reader.records, reader.first_ts, reader.stats, peak)
            except (_GiveUp, InputError):
                pass
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def result(self) -> tuple | None:
        """The worker's (records, first_ts, stats, peak RSS KiB), or None."""
        try:
            return pickle.load(self._pipe)
        except Exception:  # the worker died: its half is read again
            return None

    def close(self) -> None:
        self._pipe.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)  # only if the parent failed first; it has exited otherwise
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _check_output(path: str) -> None:
    """Fail early (before reading a big input) when OUTPUT cannot be written. Raises InputError."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise InputError(path, "is a directory, expected an output file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(path, f"cannot write: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) and not os.access(path, os.W_OK):
        raise InputError(path, "cannot write: permission denied")


def run(opts: SortOptions, ui: UI) -> SortResult:
    """``pagelab sort``: read opts.input, write page_owner_sort's output to opts.output ('-' = stdout).

    Raises InputError for an unreadable or malformed input and an unwritable output.
    """
    for note in opts.notes:
        ui.warn(note)
    _check_output(opts.output)
    result = sort_file(opts.input, opts, ui)
    if opts.output == "-":
        write_entries(sys.stdout.buffer, result.entries, opts)
        sys.stdout.buffer.flush()
    else:
        try:
            with open(opts.output, "wb") as out:
                write_entries(out, result.entries, opts)
        except OSError as err:
            raise InputError(opts.output, f"cannot write: {err.strerror}") from None
    where = "<stdout>" if opts.output == "-" else opts.output
    ui.info(f"loaded {result.records} records ({result.distinct} distinct), {len(result.entries)} entries to {where}")
    return result
