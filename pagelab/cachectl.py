"""``pagelab cache``: what the cache holds (one row per entry), and pruning it without breaking a running pagelab.

The layout is each stage's own (pagelab/kernel/build.py, source.py, modules.py, guest/image.py, keys.py,
qemu.py, collect/collector.py, source/symbolize.py, scripts/get-kernel-source.sh); this module only reads it.
An entry is removed under the lock its stage takes to create it and its in-use lock (``cache.mark_in_use``:
every pagelab using a build, source, image, module or tool holds it shared until it exits), both taken without
waiting: a held lock means a pagelab is building, unpacking or using it, and the entry is skipped. Lock files
are never removed: a process waiting on a removed lock file would hold a lock nobody else can see. A
directory is renamed to a unique ``.pagelab-prune.*`` name before it is deleted, so a stage never finds half an
entry; an interrupted prune leaves that name behind, listed as a ``leftover``.

"Last used" is the newest of the entry's USED_STAMP (touched by its stage on every reuse) and the entry's own
mtime (its creation or last change); docs/cache.md has the details per kind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagelab.cache import USED_STAMP, cache_root, in_use_lock, is_in_use, try_file_lock
from pagelab.errors import UsageError
from pagelab.ui import UI

#: Every kind, in listing order.
KINDS = ("build", "worktree", "source", "tarball", "image", "module", "tool", "symbols", "leftover", "host", "keys")
#: What ``prune`` covers unless ``--kind`` or ``--all`` says more: what pagelab recreates on its own when needed.
DEFAULT_PRUNE = ("build", "worktree", "source", "image", "module", "tool", "symbols", "leftover")
#: Not in DEFAULT_PRUNE, and why: the message of ``--kind`` asking for them.
_GUARDED = {
    "tarball": None,  # pagelab does not download it again (scripts/get-kernel-source.sh does): --kind tarball
    "host": "the KVM probe verdicts are removed only by --all (the next boot probes again, which takes seconds)",
    "keys": "the SSH keys are never pruned: a running guest needs them (remove keys/ by hand when none runs)",
}
TRASH = ".pagelab-prune."


@dataclass
class Entry:
    """One cache entry: what ``pagelab cache`` lists and ``prune`` removes as a whole."""

    kind: str
    name: str
    paths: list[Path]  # removed together; the first is the entry's own path
    locks: list[Path] = field(default_factory=list)  # taken (all, without waiting) before removing
    stamps: list[Path] = field(default_factory=list)  # besides ``paths``: "last used" is the newest mtime of all
    in_use_of: Path | None = None  # the path whose in-use lock (cache.in_use_lock) a user of the entry holds
    last_used: float = 0.0
    bytes: int = 0
    in_use: bool = False  # some process held it in use at the scan

    def prune_locks(self) -> list[Path]:
        """What prune takes, all without waiting: the creation locks and the in-use lock."""
        return [*self.locks, *([in_use_lock(self.in_use_of)] if self.in_use_of is not None else [])]

    def used(self) -> float:
        """The newest mtime of the entry's paths and stamps (0 when none exists)."""
        return _mtime(*self.paths, *self.stamps)

    def to_json(self, now: float) -> dict[str, Any]:
        """One element of ``pagelab cache --json`` ``entries`` (docs/cache.md)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.paths[0]),
            "bytes": self.bytes,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used)),
            "age_seconds": round(max(now - self.last_used, 0.0), 3),
            "prunable": self.kind != "keys",
            "in_use": self.in_use,
        }


# -- sizes and times -------------------------------------------------------------------------------
def disk_usage(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes on disk under ``path`` as ``du -s -B1`` counts them: allocated blocks, hard links once, no symlinks."""
    seen = set() if seen is None else seen
    total = 0
    stack = [path]
    while stack:
        p = stack.pop()
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                stack.extend(p.iterdir())
    return total


def _mtime(*paths: Path) -> float:
    """The newest mtime among ``paths`` that exist (0 when none does)."""
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times, default=0.0)


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


# -- what each stage leaves ------------------------------------------------------------------------
def _builds(root: Path) -> Iterator[Entry]:
    """kernel/builds/<group>/<config>/ (build.py): a result per final .config; work-N/ and kconfig/ build there."""
    for group in _subdirs(root / "kernel" / "builds"):
        for d in _subdirs(group):
            if d.name.startswith(TRASH):
                continue
            if re.fullmatch(r"work-\d+", d.name):
                release = _read(d / "include" / "config" / "kernel.release") or "never built"
                name = f"{release} build tree {d.name} (group {group.name[:8]})"
                yield Entry("worktree", name, [d], [d.with_name(f"{d.name}.lock")], [d / "pagelab-used"])
            elif d.name == "kconfig":
                name = f"kconfig scratch (group {group.name[:8]})"
                yield Entry("worktree", name, [d], [group / "kconfig.lock"], [group / "kconfig.log"])
            else:
                yield Entry("build", _build_name(d), [d], [d.with_name(f"{d.name}.lock")], [d / USED_STAMP], d)


def _build_name(entry: Path) -> str:
    """``6.12.117 tinyconfig +debuginfo`` from the entry's metadata.json; says so when the build is unfinished."""
    from pagelab.kernel.build import LAYOUT
    from pagelab.kernel.fragments import DEFAULT_FRAGMENTS

    try:
        meta = json.loads((entry / "metadata.json").read_text())
    except (OSError, ValueError):
        return f"config {entry.name} (no metadata.json: unfinished or interrupted build)"
    if not isinstance(meta, dict):
        return f"config {entry.name} (metadata.json is not an object)"
    base = Path(str(meta.get("base", "?"))).name
    fragments = meta.get("fragments")
    fragments = fragments if isinstance(fragments, list) else []
    extras = [Path(str(f.get("path", ""))) for f in fragments if isinstance(f, dict)]
    extras = [p for p in extras if p.name not in DEFAULT_FRAGMENTS]
    parts = [str(meta.get("kernel_version", "?")), base, *(f"+{p.name.removesuffix('.config')}" for p in extras)]
    make_vars = meta.get("make_vars")
    parts += [str(v) for v in make_vars] if isinstance(make_vars, list) else []
    if meta.get("layout") != LAYOUT:
        parts.append(f"(layout {meta.get('layout')}: unused by this pagelab)")
    return " ".join(parts)


def _sources(root: Path) -> Iterator[Entry]:
    """kernel/src/<tarball sha256[:16]>/ (source.py), with the ``.tmp.PID`` dirs of unpacks under the same lock."""
    from pagelab.kernel.source import kernel_version

    src = root / "kernel" / "src"
    # make reads the tree for every kernel and module build, under those builds' locks: a source is only
    # removed while no build at all runs (build.py does not record which group uses which tree until it ends).
    busy = sorted((root / "kernel" / "builds").glob("*/*.lock")) + sorted((root / "modules").glob("*/*/.lock"))
    names = {d.name.split(".tmp.")[0] for d in _subdirs(src) if d.name != "digests" and not d.name.startswith(TRASH)}
    for identity in sorted(names):
        final = src / identity
        partial = sorted(src.glob(f"{identity}.tmp.*"))
        trees = [t for t in _subdirs(final) if (t / "Makefile").is_file()] or [final]
        name = f"{kernel_version(trees[0])} {trees[0].name}" if final.is_dir() else "unpack in progress or interrupted"
        paths = [final, *partial] if final.is_dir() else partial
        yield Entry("source", name, paths, [src / f"{identity}.lock", *busy], [final / USED_STAMP], final)


def _tarballs(root: Path) -> Iterator[Entry]:
    """sources/linux-source-X.Y.tar.* (scripts/get-kernel-source.sh); last used: source.py's digest memo."""
    from pagelab.cache import content_key

    for tarball in sorted((root / "sources").glob("linux-source-*.tar.*")):
        if ".tmp." in tarball.name:
            continue
        try:
            st = tarball.stat()
        except OSError:
            continue
        # The tarball's own mtime is part of this memo's key: the memo is what a use touches (kernel/source.py).
        memo = root / "kernel" / "src" / "digests" / content_key([str(tarball), str(st.st_size), str(st.st_mtime_ns)])
        locks = []
        digest = _read(memo)
        if re.fullmatch(r"[0-9a-f]{64}", digest):  # the unpack reads the tarball under the source's lock
            locks.append(root / "kernel" / "src" / f"{digest[:16]}.lock")
        yield Entry("tarball", tarball.name, [tarball], locks, [memo])


def _keyed_dirs(root: Path, kind: str, where: Path) -> Iterator[Entry]:
    """images/<key>/, tools/<key>/, modules/<name>/<key>/: one dir per content key, locked by its ``.lock``.

    The lock lives inside the directory, so pruning empties the directory but keeps it and the lock: a
    directory holding nothing else is no entry.
    """
    for d in _subdirs(where):
        if d.name.startswith(TRASH) or not _contents(d):
            continue
        if kind == "image":
            name = f"guest initramfs {d.name}"
        elif kind == "tool":
            name = " ".join(sorted(p.name for p in d.iterdir() if not p.name.startswith("."))) or d.name
        else:
            release = _vermagic(d / "src" / f"{d.parent.name}.ko")
            name = f"{d.parent.name} for {release}" if release else f"{d.parent.name} (not built)"
        yield Entry(kind, name, [d], [d / ".lock"], [d / USED_STAMP], d)


def _vermagic(ko: Path) -> str | None:
    """The kernel release a module was built for (the first word of its ``vermagic=``)."""
    try:
        m = re.search(rb"vermagic=(\S+)", ko.read_bytes())
    except OSError:
        return None
    return m.group(1).decode(errors="replace") if m else None


def _symbols(root: Path) -> Iterator[Entry]:
    """symbols/<binary>-<build id>.v<layout>.json (symbolize.py): touched on every hit."""
    from pagelab.source.symbolize import _CACHE_LAYOUT

    for f in sorted((root / "symbols").glob("*.json")):
        m = re.fullmatch(r"(.+)-([0-9a-f]+)\.v(\w+)\.json", f.name)
        if m is None:
            continue
        name = f"{m.group(1)} build id {m.group(2)[:12]}"
        if m.group(3) != _CACHE_LAYOUT:
            name += f" (layout v{m.group(3)}: unused by this pagelab)"
        yield Entry("symbols", name, [f], [f.with_suffix(".lock")])


def _leftovers(root: Path) -> Iterator[Entry]:
    """Directories an interrupted prune renamed but did not finish deleting."""
    parents = [root / "kernel" / "src", root / "images", root / "tools", *_subdirs(root / "kernel" / "builds")]
    parents += _subdirs(root / "modules")
    for parent in parents:
        for d in sorted(parent.glob(f"{TRASH}*")):
            yield Entry("leftover", f"interrupted prune of {d.name.removeprefix(TRASH)}", [d])


def _hosts(root: Path) -> Iterator[Entry]:
    """hosts/accel-<key>.json (qemu.py): the KVM probe's verdict for this host kernel and QEMU."""
    for f in sorted((root / "hosts").glob("accel-*.json")):
        try:
            data = json.loads(f.read_text())
            name = f"accel {data['accel']}: {data['reason']}"
        except (OSError, ValueError, KeyError, TypeError):
            name = f"{f.name} (unreadable)"
        yield Entry("host", name, [f])


def _keys(root: Path) -> Iterator[Entry]:
    keys = root / "keys"
    if keys.is_dir():
        yield Entry("keys", "SSH client key and the guest's pinned host key", [keys], [keys / ".lock"])


def _contents(d: Path) -> list[Path]:
    """What a keyed directory holds besides its lock file."""
    try:
        return sorted(p for p in d.iterdir() if p.name != ".lock")
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):  # ValueError: not UTF-8
        return ""


def scan(root: Path | None = None) -> list[Entry]:
    """Every entry in the cache, sizes measured, in KINDS order then most recently used first."""
    root = root or cache_root()
    found = [
        *_builds(root),
        *_sources(root),
        *_tarballs(root),
        *_keyed_dirs(root, "image", root / "images"),
        *(e for d in _subdirs(root / "modules") for e in _keyed_dirs(root, "module", d)),
        *_keyed_dirs(root, "tool", root / "tools"),
        *_symbols(root),
        *_leftovers(root),
        *_hosts(root),
        *_keys(root),
    ]
    for e in found:
        e.last_used = e.used()
        e.in_use = e.in_use_of is not None and is_in_use(e.in_use_of)
        seen: set[tuple[int, int]] = set()
        e.bytes = sum(disk_usage(p, seen) for p in e.paths)
    found.sort(key=lambda e: (KINDS.index(e.kind), -e.last_used, e.name))
    return found


# -- the command -----------------------------------------------------------------------------------
def check_kinds(kinds: Sequence[str], *, pruning: bool) -> list[str]:
    """``--kind`` values checked (a comma list counts as several). Raises UsageError for an unknown or guarded one."""
    out = []
    for value in kinds:
        for kind in filter(None, (k.strip() for k in value.split(","))):
            if kind not in KINDS:
                raise UsageError(f"--kind {kind!r}: unknown kind; expected one of {', '.join(KINDS)}")
            if pruning and _GUARDED.get(kind):
                raise UsageError(f"--kind {kind}: {_GUARDED[kind]}")
            out.append(kind)
    return out


def human_bytes(n: float) -> str:
    """``243.1 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def list_cache(ui: UI, *, kinds: Sequence[str] = (), as_json: bool = False) -> int:
    """``pagelab cache [list]``: a table (or ``--json`` on stdout) of the entries, then the total."""
    wanted = check_kinds(kinds, pruning=False)
    root = cache_root()
    entries = [e for e in scan(root) if not wanted or e.kind in wanted]
    now = time.time()
    total = sum(e.bytes for e in entries)
    if as_json:
        doc = {"root": str(root), "entries": [e.to_json(now) for e in entries], "total_bytes": total}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    ui.listing(
        "pagelab cache",
        ("kind", "name", "size", "last used", "in use"),
        ((e.kind, e.name, human_bytes(e.bytes), _ago(now - e.last_used), "yes" if e.in_use else "") for e in entries),
        f"total {human_bytes(total)} in {len(entries)} entries under {root} (`pagelab cache prune` frees space)",
    )
    return 0


@dataclass(frozen=True)
class PruneOptions:
    """``pagelab cache prune``: which entries (``--kind``, ``--older-than``, ``--all``) and whether to act."""

    kinds: Sequence[str] = ()
    older_than: str | None = None
    all: bool = False
    dry_run: bool = False


def prune(opts: PruneOptions, ui: UI) -> int:
    """Remove the selected entries, each under its stage's and its in-use lock taken without waiting; skip the busy.

    Raises UsageError (exit 2) for an unknown or guarded kind, a bad duration or nothing selected.
    """
    from pagelab.pageowner.analyse import parse_duration

    kinds = check_kinds(opts.kinds, pruning=True)
    if opts.all and kinds:
        raise UsageError("--all and --kind exclude each other (--all is every kind but keys)")
    min_age = parse_duration(opts.older_than) if opts.older_than is not None else None
    if not (opts.all or kinds or min_age is not None):
        raise UsageError("cache prune: say what to remove: --older-than DURATION, --kind KIND or --all")
    allowed = set(KINDS) - {"keys"} if opts.all else set(kinds or DEFAULT_PRUNE)
    now = time.time()
    freed = removed = skipped = failed = 0
    verb = "would remove" if opts.dry_run else "removed"
    for e in scan():
        if e.kind not in allowed or (min_age is not None and now - e.last_used < min_age):
            continue
        # A dry run creates no lock file: a missing one is one nobody holds.
        with _locked(e.prune_locks(), create=not opts.dry_run) as busy:
            if busy is not None:
                ui.warn(f"skipped {e.kind} {e.name}: {busy}")
                skipped += busy == IN_USE
                failed += busy != IN_USE
                continue
            if min_age is not None and time.time() - e.used() < min_age:
                continue  # reused since the scan (a build cache hit takes no lock)
            problem = None if opts.dry_run else _remove(e)
        if problem is not None:
            ui.warn(f"not removed {e.kind} {e.name}: {problem}")
            failed += 1
            continue
        ui.print(f"{verb} {e.kind} {e.name} ({human_bytes(e.bytes)})", markup=False, soft_wrap=True)
        freed += e.bytes
        removed += 1
    summary = f"{'would free' if opts.dry_run else 'freed'} {human_bytes(freed)} ({removed} entries)"
    summary += f"; {skipped} skipped (in use)" if skipped else ""
    ui.print(summary + (f"; {failed} not removed (see the warnings)" if failed else ""), markup=False)
    return 0


#: Why ``_locked`` could not take an entry's locks when another process holds one.
IN_USE = "in use (another pagelab holds its lock)"


@contextlib.contextmanager
def _locked(locks: Sequence[Path], *, create: bool = True) -> Iterator[str | None]:
    """All of ``locks`` held for the block (yields None), or none held and why (yields the reason).

    Why: IN_USE when another process holds one; a one-line error when a lock file cannot be opened or made
    (one another user owns, a read-only cache). ``create=False`` makes no lock file (try_file_lock).
    """
    with contextlib.ExitStack() as stack:
        for lock in locks:
            try:
                free = stack.enter_context(try_file_lock(lock, create=create))
            except OSError as err:
                reason = f"cannot {'open or create' if create else 'open'} its lock {lock}: {err.strerror or err}"
            else:
                if free:
                    continue
                reason = IN_USE
            stack.close()  # the locks taken before this one go too: nothing held while the caller goes on
            yield reason
            return
        yield None


def _remove(e: Entry) -> str | None:
    """Move each directory out of the stages' sight, then delete it; unlink files. Lock files stay.

    Returns None when all of the entry is gone, else what remains and why (one line): a file or directory
    this user may not delete (say, left by ``sudo pagelab``).
    """
    problems = []
    for p in e.paths:
        try:
            if not p.is_dir() or p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                continue
            trash = p if p.name.startswith(TRASH) else _trash_for(p)
            try:
                if (p / ".lock") in e.locks:
                    # The stage's lock is inside: keep the directory and the lock, move the rest.
                    for child in _contents(p):
                        os.rename(child, trash / child.name)
                elif p != trash:
                    os.rename(p, trash)  # replaces the empty directory _trash_for made: same parent
            except FileNotFoundError:
                pass
            except OSError as err:  # what was moved (if anything) goes, the rest stays where it was
                problems.append(f"cannot move {p} aside: {err.strerror or err}")
            shutil.rmtree(trash, ignore_errors=True)
            if os.path.lexists(trash):
                problems.append(f"could not delete all of {trash} (remove it by hand; a later prune retries)")
        except OSError as err:
            problems.append(f"{p}: {err.strerror or err}")
    return "; ".join(problems) or None


def _trash_for(p: Path) -> Path:
    """A new empty directory ``.pagelab-prune.<name>.<random>`` beside ``p``, unique even when PIDs repeat.

    ``p`` is renamed over it (same parent: no write access to ``p`` itself needed), or its contents moved in.
    """
    return Path(tempfile.mkdtemp(prefix=f"{TRASH}{p.name}.", dir=p.parent))
