"""Open a dump for reading: a path, ``-`` (stdin) or a compressed file, detected by content.

Every failure becomes an InputError naming the file, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import sys
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import zstandard

from pagelab.errors import InputError

_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
}


def display_name(path: str | os.PathLike[str]) -> str:
    """How a source is named in messages: ``<stdin>`` for ``-``."""
    return "<stdin>" if str(path) == "-" else str(path)


def sniff_compression(head: bytes) -> str | None:
    """The compression format whose magic ``head`` starts with, or None for plain data."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


class _DecompressErrors(io.RawIOBase):
    """Wrap a decompressing stream so corrupt data raises InputError instead of library errors."""

    def __init__(self, inner: BinaryIO, name: str, fmt: str) -> None:
        self._inner = inner
        self._name = name
        self._fmt = fmt

    def readable(self) -> bool:
        return True

    # override: RawIOBase.readinto takes any writable buffer; io's BufferedReader only ever passes a memoryview.
    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError) as err:
            raise InputError(self._name, f"corrupt {self._fmt} data ({err})") from None
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """zstd frames, one after another, as one stream; a stream that ends mid-frame is an InputError.

    (zstandard's stream_reader just stops early on truncated input, which would lose records silently.)
    """

    def __init__(self, raw: BinaryIO, name: str, chunk: int = 1 << 20) -> None:
        self._raw = raw
        self._name = name
        self._chunk = chunk
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = self._dctx.decompressobj()
        self._fed = False  # has the current frame's decompressor seen input?
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            if self._dobj.eof:
                self._dobj = self._dctx.decompressobj()
                self._fed = False
            self._fed = True
            parts.append(self._dobj.decompress(data))
            data = self._dobj.unused_data if self._dobj.eof else b""
        return b"".join(parts)

    # override: as above, io only passes a memoryview.
    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._out and not self._done:
            data = self._raw.read(self._chunk)
            if not data:
                self._done = True
                if self._fed and not self._dobj.eof:
                    raise InputError(self._name, "truncated zstd data (the stream ends inside a frame)")
                break
            try:
                self._out = memoryview(self._decompress(data))
            except zstandard.ZstdError as err:
                raise InputError(self._name, f"corrupt zstd data ({err})") from None
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


@contextlib.contextmanager
def open_input(
    path: str | os.PathLike[str], buffer_size: int = 1 << 20, *, stacks: Mapping[int, bytes] | None = None
) -> Iterator[BinaryIO]:
    """Open ``path`` (or stdin for ``-``) as a buffered binary stream, decompressing by magic bytes.

    With ``stacks`` (a handle → frames table, ``handles.load_stacks``) a handle-mode dump or a
    show_handles file reads as the stack-mode text (``handles.Resolver``); the stream's ``resolver``
    attribute then tells what could not be resolved.
    Raises InputError for a missing file, a directory, an unreadable file or corrupt compression.
    """
    if stacks is None:
        with _open_plain(path, buffer_size) as stream:
            yield stream
        return
    from pagelab.pageowner.handles import Resolver, ResolvingReader  # handles imports this module

    with _open_plain(path, buffer_size) as stream:
        raw = ResolvingReader(stream, Resolver(stacks, name=display_name(path)))
        resolved = io.BufferedReader(raw, buffer_size)
        resolved.resolver = raw.resolver  # type: ignore[attr-defined]  # for callers that report resolution
        yield resolved


@contextlib.contextmanager
def _open_plain(path: str | os.PathLike[str], buffer_size: int) -> Iterator[BinaryIO]:
    name = display_name(path)
    if str(path) == "-":
        raw: BinaryIO = sys.stdin.buffer
        owned = False
    else:
        if os.path.isdir(path):
            raise InputError(name, "is a directory, expected a page_owner dump or show_stacks file")
        try:
            raw = open(path, "rb", buffering=0)  # closed in the finally below
        except FileNotFoundError:
            raise InputError(name, "no such file") from None
        except OSError as err:
            raise InputError(name, f"cannot open: {err.strerror}") from None
        owned = True
    try:
        # type-var: when owned, raw is the unbuffered FileIO opened above; it is declared BinaryIO for stdin's sake.
        buffered = io.BufferedReader(raw, buffer_size) if owned else raw  # type: ignore[type-var]
        try:
            head = buffered.peek(8)[:8] if hasattr(buffered, "peek") else b""
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror}") from None
        fmt = sniff_compression(head)
        if fmt is None:
            yield buffered
            return
        inner: BinaryIO | None  # None: zstd, read by _ZstdReader
        # assignment (three times): the decompressors are binary readers, but typeshed does not declare them BinaryIO.
        if fmt == "gzip":
            inner = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        elif fmt == "xz":
            inner = lzma.LZMAFile(buffered, "rb")  # type: ignore[assignment]  # as gzip above
        elif fmt == "bzip2":
            inner = bz2.BZ2File(buffered, "rb")  # type: ignore[assignment]  # as gzip above
        else:
            inner = None
        raw_stream = _ZstdReader(buffered, name) if inner is None else _DecompressErrors(inner, name, fmt)
        stream = io.BufferedReader(raw_stream, buffer_size)
        try:
            yield stream
        finally:
            stream.close()
    finally:
        if owned:
            raw.close()
