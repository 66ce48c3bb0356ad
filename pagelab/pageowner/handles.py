"""Handle-mode page_owner dumps, resolved back into the stack-mode text through a stacks file.

Since 7.x ``/sys/kernel/debug/page_owner`` is writable per open file (mm/page_owner.c,
``page_owner_write``): after ``mode=handle`` each record prints ``handle: N`` (its stack depot handle)
where the stack would be, and ``mode=stack_handle`` prints the stack and then the handle line.
``page_owner_stacks/show_stacks_handles`` lists every stack once, its frames then ``handle: N``
(``show_handles`` prints ``handle: N`` and ``nr_base_pages: N`` without frames).

Formatting the stacks is what makes a read slow under TCG, so pagelab reads handles and puts the frames
back on the host. ``Resolver`` does that on the bytes, before any parsing: a resolved dump is the text a
stack-mode read would have given, so the parser, ``pagelab sort`` (byte-identical to the C tool), the
reports and the ``.zst`` artifact need no second code path. It also turns ``show_handles`` into
``show_stacks`` and drops the handle lines of ``stack_handle`` output.

Some stacks are never listed: the kernel adds a stack to its list only when it can allocate the list
entry (mm/page_owner.c, ``add_stack_record_to_list``), so the early-boot stack (``early_handle``, every
page allocated before page_owner started), stacks first used before the slab allocator was up and some
from non-spinning contexts are missing (~90 of them on a fresh 7.3 guest). Offline such records keep their
``handle: N`` line (the parser reports them). The collector's ``po-read -s`` prints the first record of
each unlisted handle in stack_handle form instead, which the resolver learns the stack from; ``fetch``
is the last resort for a page that changed hands in between.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import BinaryIO

from pagelab.errors import InputError
from pagelab.pageowner.inputs import display_name, open_input

__all__ = ["Resolver", "ResolvingReader", "StackTable", "load_stacks", "parse_stacks"]

#: handle → the frame lines of its stack, as printed (``" frame\n"`` each).
StackTable = dict[int, bytes]
#: Called for a handle the table does not have: (handle, the record's PFN or None) → frame lines or None.
Fetch = Callable[[int, int | None], bytes | None]

_HANDLE_LINE = re.compile(rb"^handle: (\d+)\r?\n", re.M)
_MAX_PENDING = 4 << 20  # bytes without a blank line after which lines are passed on one by one
_EXPECT = "expected a show_stacks_handles file (' frame' lines, then 'handle: N', then a blank line)"


def parse_stacks(data: bytes, name: str) -> StackTable:
    """The handle → frames table of a ``show_stacks_handles`` text (``nr_base_pages:`` lines allowed).

    Raises InputError naming ``name`` and the line for anything else (a dump, show_stacks, show_handles).
    """
    table: StackTable = {}
    line = 1
    for entry in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = entry.split(b"\n")
        lead = 0
        while lead < len(lines) and not lines[lead].strip():
            lead += 1
        body = [x for x in lines[lead:] if x]
        at = line + lead
        line += len(lines) + 1
        if not body:
            continue
        i = 0
        while i < len(body) and body[i].startswith(b" "):
            i += 1
        rest = body[i:]
        if not rest or not rest[0].startswith(b"handle: "):
            what = (rest[0] if rest else body[-1])[:60].decode("utf-8", "backslashreplace")
            hint = "this is a page_owner dump; " if body[0].startswith(b"Page allocated") else ""
            raise InputError(name, f"{hint}{what!r} where 'handle: N' was due; {_EXPECT}", at + min(i, len(body) - 1))
        if i == 0:
            raise InputError(name, f"a handle without frames (a show_handles file?); {_EXPECT}", at)
        value = rest[0][8:].strip()
        if not value.isdigit():
            shown = value[:30].decode("utf-8", "backslashreplace")
            raise InputError(name, f"handle is {shown!r}, not a number; {_EXPECT}", at + i)
        for extra in rest[1:]:
            if not extra.startswith(b"nr_base_pages: "):
                shown = extra[:60].decode("utf-8", "backslashreplace")
                raise InputError(name, f"{shown!r} after the handle; {_EXPECT}", at + i + 1)
        table[int(value)] = b"\n".join(body[:i]) + b"\n"
    if not table:
        raise InputError(name, f"no stacks (empty input); {_EXPECT}")
    return table


def load_stacks(path: str | os.PathLike[str]) -> StackTable:
    """``parse_stacks`` of a file (plain or compressed, ``-`` for stdin). Raises InputError."""
    name = display_name(path)
    with open_input(path) as stream:
        try:
            data = stream.read()
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror or err}") from None
    return parse_stacks(data, name)


def _pfn_of(line: bytes) -> int | None:
    """The PFN of a ``PFN 0x1f00 type …`` line (decimal before 6.7), None for any other line."""
    if not line.startswith(b"PFN "):
        return None
    word = line[4:].split(b" ", 1)[0]
    try:
        return int(word, 16) if word.startswith(b"0x") else int(word)
    except ValueError:
        return None


class Resolver:
    """Bytes of a handle-mode dump (or show_handles) in, the stack-mode text out; any chunk boundaries.

    ``unresolved`` counts the records per handle that neither the table nor ``fetch`` knew: those keep
    their ``handle: N`` line. ``fetched`` counts the handles ``fetch`` supplied.
    """

    def __init__(self, stacks: Mapping[int, bytes], fetch: Fetch | None = None, *, name: str = "input") -> None:
        self.stacks = dict(stacks)
        self.name = name  # the dump's name, for errors
        self.fetch = fetch
        self.unresolved: Counter[int] = Counter()
        self.fetched = 0
        self.learned = 0  # stacks taken from stack_handle records (po-read -s)
        self.resolved = 0
        self._tail = b""  # an incomplete last line
        self._prev = b""  # the last complete line already passed on

    def feed(self, data: bytes) -> bytes:
        """The resolved text for every complete entry so far (every complete line past 4 MiB without one)."""
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n\n") + 2
        if cut < 2:
            cut = buf.rfind(b"\n") + 1 if len(buf) > _MAX_PENDING else 0
        self._tail = buf[cut:]
        return self._resolve(buf[:cut]) if cut else b""

    def close(self) -> bytes:
        """The rest (a last line without a newline passes unchanged)."""
        tail, self._tail = self._tail, b""
        cut = tail.rfind(b"\n") + 1
        return self._resolve(tail[:cut]) + tail[cut:] if cut else tail

    @staticmethod
    def _frames_before(text: bytes, end: int) -> bytes:
        """The block of ``' frame'`` lines that ends at ``end`` (the start of a line)."""
        pos = end
        while pos > 0:
            begin = text.rfind(b"\n", 0, pos - 1) + 1
            if not text.startswith(b" ", begin):
                break
            pos = begin
        return text[pos:end]

    def _line_before(self, text: bytes, start: int) -> bytes:
        if start == 0:
            return self._prev
        begin = text.rfind(b"\n", 0, start - 1) + 1
        return text[begin : start - 1]

    def _resolve(self, text: bytes) -> bytes:
        def repl(m: re.Match[bytes]) -> bytes:
            before = self._line_before(text, m.start())
            if before.startswith(b" "):
                # stack_handle mode: the frames are printed already. po-read -s prints an unlisted
                # handle's first record so: remember its stack for the short records that follow.
                handle = int(m.group(1))
                printed = self._frames_before(text, m.start()).replace(b"\r\n", b"\n")
                known = self.stacks.get(handle)
                if known is None:
                    self.stacks[handle] = printed
                    self.learned += 1
                elif known != printed:
                    # Handles are stack depot offsets, reused from boot to boot for other stacks: the
                    # one cheap check that the stacks file and the dump are of the same boot.
                    first = printed.split(b"\n", 1)[0].strip()[:60].decode("utf-8", "backslashreplace")
                    raise InputError(
                        self.name,
                        f"handle {handle} is printed with the stack {first!r}…, not the one the stacks file "
                        "lists for it: the stacks file is from another boot (--stacks needs the "
                        "show_stacks_handles of the same boot as the dump)",
                    )
                return b""
            handle = int(m.group(1))
            frames = self.stacks.get(handle)
            if frames is None and self.fetch is not None and handle not in self.unresolved:
                frames = self.fetch(handle, _pfn_of(before))
                if frames is not None:
                    self.stacks[handle] = frames
                    self.fetched += 1
            if frames is None:
                self.unresolved[handle] += 1
                return m.group(0)
            self.resolved += 1
            return frames

        out = _HANDLE_LINE.sub(repl, text) if b"handle: " in text else text
        last = text.rfind(b"\n", 0, len(text) - 1) + 1
        self._prev = text[last:-1]
        return out

    def warning(self, name: str) -> str | None:
        """One line about records left unresolved, or None."""
        if not self.unresolved:
            return None
        handles = ", ".join(str(h) for h, _ in self.unresolved.most_common(3))
        more = "…" if len(self.unresolved) > 3 else ""
        return (
            f"{name}: {sum(self.unresolved.values()):,} record(s) with {len(self.unresolved)} handle(s) not in the "
            f"stacks file ({handles}{more}) keep their 'handle: N' line; show_stacks_handles never lists the "
            "stack of pages allocated before page_owner started"
        )


class ResolvingReader(io.RawIOBase):
    """A binary stream of the resolved text of another binary stream."""

    def __init__(self, inner: BinaryIO, resolver: Resolver, chunk: int = 1 << 20) -> None:
        self._inner = inner
        self.resolver = resolver
        self._chunk = chunk
        self._out = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    # override: RawIOBase.readinto takes any writable buffer; io's BufferedReader only ever passes a memoryview.
    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._out and not self._eof:
            data = self._inner.read(self._chunk)
            if not data:
                self._eof = True
                self._out = memoryview(self.resolver.close())
            else:
                self._out = memoryview(self.resolver.feed(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
