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
from collections.abc import Iterator
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


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str], buffer_size: int = 1 << 20) -> Iterator[BinaryIO]:
    """Open ``path`` (or stdin for ``-``) as a buffered binary stream, decompressing by magic bytes.

    Raises InputError for a missing file, a directory, an unreadable file or corrupt compression.
    """
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
        buffered = io.BufferedReader(raw, buffer_size) if owned else raw  # type: ignore[arg-type]
        try:
            head = buffered.peek(8)[:8] if hasattr(buffered, "peek") else b""
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror}") from None
        fmt = sniff_compression(head)
        if fmt is None:
            yield buffered
            return
        inner: BinaryIO
        if fmt == "gzip":
            inner = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
        elif fmt == "xz":
            inner = lzma.LZMAFile(buffered, "rb")  # type: ignore[assignment]
        elif fmt == "bzip2":
            inner = bz2.BZ2File(buffered, "rb")  # type: ignore[assignment]
        else:
            inner = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[assignment]
        stream = io.BufferedReader(_DecompressErrors(inner, name, fmt), buffer_size)
        try:
            yield stream  # type: ignore[misc]
        finally:
            stream.close()
    finally:
        if owned:
            raw.close()
