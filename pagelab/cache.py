"""The cache root, content keys and file locks shared by every cached stage."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Touched in a cache entry's directory each time a stage reuses the entry: ``pagelab cache`` shows its
#: time as "last used" and ``prune --older-than`` goes by it (pagelab/cachectl.py).
USED_STAMP = ".used"
#: The lock file beside an entry (``<entry>.inuse``) that every process using the entry holds shared
#: (mark_in_use); ``pagelab cache prune`` removes an entry only when it gets it exclusively.
IN_USE_SUFFIX = ".inuse"


def _root_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pagelab"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/pagelab`` (default ``~/.cache/pagelab``), created on first use."""
    root = _root_path()
    root.mkdir(parents=True, exist_ok=True)
    # Private: the cache holds SSH keys and guest images that embed the pinned host key.
    if root.stat().st_mode & 0o077:
        os.chmod(root, 0o700)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-directory of the cache root, created on first use."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def private_dir(*parts: str) -> Path:
    """Like cache_dir, for what holds keys or images embedding them: every level made 0700 if it is not."""
    path = cache_root()
    for part in parts:
        path = path / part
        path.mkdir(mode=0o700, exist_ok=True)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def content_key(items: Iterable[str | bytes], length: int = 16) -> str:
    """A short stable hex key over an ordered list of strings/bytes (length-prefixed, no ambiguity)."""
    h = hashlib.sha256()
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Concurrent pagelab processes that build the same cache entry serialise here; the lock dies
    with the process, so a crash never leaves it held.
    """
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_now(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without waiting: False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        return False
    return True


@contextlib.contextmanager
def try_file_lock(path: str | os.PathLike[str], *, create: bool = True) -> Iterator[bool]:
    """Like file_lock without waiting: yields False (nothing held) when someone else holds the lock.

    An existing lock file is opened read-only (flock needs no write access), so a lock file another user
    left (``sudo pagelab``) or a read-only cache still works when the file is readable. ``create=False``
    (a dry run) creates nothing: a missing lock file is one nobody holds, and yields True holding nothing.
    Raises OSError when the lock file cannot be opened (or, with ``create``, made).
    """
    lock_path = Path(path)
    if create:
        if not lock_path.parent.is_dir():
            lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    else:
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        if fd < 0:
            yield True
            return
    try:
        if not _lock_now(fd):
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def mark_used(entry: str | os.PathLike[str]) -> None:
    """Touch ``entry``'s USED_STAMP: the stage reused it. Best effort: a read-only cache still works."""
    with contextlib.suppress(OSError):
        Path(entry, USED_STAMP).touch()


def in_use_lock(entry: str | os.PathLike[str]) -> Path:
    """The in-use lock file of ``entry``: its sibling ``<entry>.inuse``.

    Beside the entry, never inside: prune renames an entry's directory before deleting it, and lock files are
    never removed (a process holding one that was unlinked would hold a lock nobody else can see).
    """
    path = Path(entry)
    return path.with_name(path.name + IN_USE_SUFFIX)


#: in_use_lock path → the open fd holding it shared, until the process exits (or release_in_use).
_in_use: dict[Path, int] = {}
_in_use_guard = threading.Lock()


def mark_in_use(entry: str | os.PathLike[str]) -> None:
    """Hold ``entry``'s in-use lock shared for the rest of this process: no prune removes the entry meanwhile.

    Idempotent per entry per process. The fd stays open in a module-level registry and the kernel drops the
    lock when the process exits, crash included. Waits while a prune holds the lock (it is removing the
    entry): the caller must check the entry still exists *after* this call, unless it holds the lock its
    stage makes the entry under (prune takes that one too). Best effort: a cache the process cannot write
    cannot be pruned by it either.
    """
    lock = Path(os.path.abspath(in_use_lock(entry)))
    with _in_use_guard:
        if lock in _in_use:
            return
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)  # flock needs no write access
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        _in_use[lock] = fd


def release_in_use(entry: str | os.PathLike[str] | None = None) -> None:
    """Drop this process's in-use mark on ``entry`` (None: on every entry). Process exit does the same."""
    with _in_use_guard:
        locks = list(_in_use) if entry is None else [Path(os.path.abspath(in_use_lock(entry)))]
        for lock in locks:
            fd = _in_use.pop(lock, None)
            if fd is not None:
                os.close(fd)


def mark_build_in_use(path: str | os.PathLike[str]) -> Path | None:
    """Mark in use the cached kernel build holding ``path`` (``--build DIR``, ``--kernel BZIMAGE``); returns it.

    A build entry is ``kernel/builds/<group>/<config sha256[:16]>/`` (pagelab/kernel/build.py): a path at or
    under one marks that entry. Any other path (outside the cache, a work tree, the kconfig scratch dir)
    marks nothing and returns None. Creates nothing when the path is outside the cache.
    """
    try:
        target = Path(path).resolve()
        builds = (_root_path() / "kernel" / "builds").resolve()
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(builds):
        return None
    parts = target.relative_to(builds).parts
    if len(parts) < 2 or not re.fullmatch(r"[0-9a-f]{16}", parts[1]):
        return None
    entry = builds / parts[0] / parts[1]
    mark_in_use(entry)
    return entry


def is_in_use(entry: str | os.PathLike[str]) -> bool:
    """Whether some process (this one included) holds ``entry`` in use. Creates no lock file."""
    try:
        fd = os.open(in_use_lock(entry), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file (never marked) or not readable
    try:
        return not _lock_now(fd)
    finally:
        os.close(fd)  # closing drops the probe's lock


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename, so readers never see half of it."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
