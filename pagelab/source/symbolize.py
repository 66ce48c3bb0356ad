"""Page owner frames to source lines: ``shmem_get_folio_gfp+0x164/0x3ec`` → ``mm/shmem.c:2012``.

A frame names a function, an offset into it and the function's size (and ``[module]`` for module
code). The function's address comes from the binary's symbol table (elf.py): the size picks the right
definition when a static name occurs twice, and a size that matches no definition means the dump was
not taken on this build (the frame stays unresolved rather than resolving to a wrong line). Every
distinct frame of a binary goes to ONE ``addr2line -f -i -a`` process (binutils; chosen by measurement
against llvm-symbolizer and pyelftools, BENCHMARKS.md "Source lines"), with the inline chain.

Stack frames are return addresses: the call that allocated is the instruction before, so the address
looked up is ``address - 1`` (as the kernel's own ``scripts/decode_stacktrace.sh`` does).

Results are cached per binary under ``cache_dir("symbols")``, keyed by the GNU build id (a hash of
the linked content), so a rebuilt vmlinux never reuses another build's lines and a second report of
the same build runs no addr2line at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagelab.cache import atomic_write, cache_dir, file_lock
from pagelab.errors import InfraError, InputError
from pagelab.source.elf import ET_REL, Elf, ElfError, Symbol

#: ``func+0xOFF/0xSIZE`` with an optional `` [module]`` or `` [module buildid]``.
_FRAME = re.compile(
    r"^(?P<sym>[^\s+]+)\+0x(?P<off>[0-9a-fA-F]+)/0x(?P<size>[0-9a-fA-F]+)(?: \[(?P<mod>[^\] ]+)[^\]]*\])?$"
)
_LOCATION = re.compile(r"^(?P<file>.*):(?P<line>\d+|\?)(?: \(discriminator \d+\))?$")
#: Bump when what a cache entry holds, or how a frame is matched to a symbol, changes.
_CACHE_LAYOUT = "3"
VMLINUX = "vmlinux"
#: Below this share of frames whose printed size equals the ELF size, a dump is another build's (a dump of the
#: build itself: 98.7 % for a debuginfo run's dump; tests/fixtures/report_po612.txt.xz, another 6.12 config: 44 %).
MIN_AGREEMENT = 0.8


@dataclass(frozen=True, slots=True)
class Line:
    """One source location: the function whose code it is, the file and the line."""

    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A frame's location. ``chain`` runs from the innermost inlined code out to the frame's own function.

    ``line`` is the last element: the line in the function the frame names (for a callsite frame, the
    line of the allocation call as written in that function, even when the allocator helper it calls
    was inlined). ``chain`` has more than one element when code was inlined at that address.
    """

    chain: tuple[Line, ...]

    @property
    def line(self) -> Line:
        return self.chain[-1]

    @property
    def source(self) -> str:
        return str(self.line)

    def to_json(self) -> list[list[str | int]]:
        return [[ln.function, ln.file, ln.line] for ln in self.chain]

    @classmethod
    def from_json(cls, data: Sequence[Sequence[str | int]]) -> Resolved:
        return cls(tuple([Line(f, p, n) for f, p, n in data]))  # type: ignore[arg-type]  # our own JSON rows


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed printed frame."""

    symbol: str
    offset: int
    size: int
    module: str | None

    @property
    def key(self) -> str:
        return f"{self.symbol}+{self.offset:#x}/{self.size:#x}"


def parse(frame: str) -> Frame | None:
    """A printed frame, or None when it has no ``+0xOFF/0xSIZE`` (a raw address: nothing to resolve)."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return None
    return Frame(m["sym"], int(m["off"], 16), int(m["size"], 16), m["mod"])


@dataclass
class Binary:
    """One ELF file frames resolve against: vmlinux, or a module's unstripped ``.ko``."""

    name: str  # "vmlinux" or the module name
    path: Path
    elf: Elf
    build_id: str | None
    _functions: dict[str, list[Symbol]] | None = None

    @classmethod
    def open(cls, name: str, path: Path) -> Binary:
        try:
            elf = Elf(path)
            return cls(name, path, elf, elf.build_id())
        except ElfError as err:
            raise InputError(str(path), f"cannot read symbols ({err})") from None

    @property
    def functions(self) -> dict[str, list[Symbol]]:
        if self._functions is None:
            self._functions = self.elf.functions()
        return self._functions

    def symbol_for(self, frame: Frame) -> Symbol | None:
        """The frame's function here, or None.

        The definition whose ELF size is the printed size; else the only definition, when the printed
        size is not smaller and the offset falls inside it. The kernel prints kallsyms' size, the distance
        to the next symbol, which is larger than the ELF size when padding or a symbol kallsyms leaves
        out follows (do_one_initcall: 0x15b printed, 0x138 in the ELF).
        """
        defs = self.functions.get(frame.symbol, ())
        exact = next((s for s in defs if s.size == frame.size), None)
        if exact is not None or len(defs) != 1:
            return exact
        only = defs[0]
        # An assembly label may have no ELF size at all (entry_SYSCALL_64_after_hwframe): the printed one holds.
        inside = max(frame.offset - 1, 0) < (only.size or frame.size)
        return only if frame.size >= only.size and inside else None

    def agreement(self, frames: Sequence[Frame]) -> float:
        """The share of ``frames`` whose printed size is exactly the ELF size of a definition here: near 1
        for a dump taken on this build, low for another build's (its sizes differ)."""
        if not frames:
            return 1.0
        hits = sum(1 for f in frames if any(s.size == f.size for s in self.functions.get(f.symbol, ())))
        return hits / len(frames)


@dataclass
class Stats:
    """What one ``resolve`` did: frames asked, answered from the cache, looked up, unresolved."""

    frames: int = 0
    cached: int = 0
    looked_up: int = 0
    unresolved: int = 0
    processes: int = 0
    missing_modules: set[str] = field(default_factory=set)
    mismatched: bool = False  # the dump's vmlinux frames do not fit this build's symbol sizes


class Symbolizer:
    """Resolves frames against one kernel build: its vmlinux, its modules and extra ``.ko`` files.

    ``modules`` are ``.ko`` files known to belong to the run (test modules, ``--upload``ed ones); the
    build's own modules (``modules.order``) and the test modules built against it are found on their
    own. Raises InputError when ``build_dir`` has no readable vmlinux.
    """

    def __init__(self, build_dir: str | os.PathLike[str], modules: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.build_dir = Path(build_dir)
        vmlinux = self.build_dir / "vmlinux"
        if not vmlinux.is_file():
            raise InputError(str(build_dir), "--build: no vmlinux here (expected a kernel build directory, O=)")
        self.vmlinux = Binary.open(VMLINUX, vmlinux)
        self.line_info = self.vmlinux.elf.has_line_info()
        self.tree = _source_tree(self.build_dir)
        self._extra = [Path(m) for m in modules]
        self._paths: dict[str, str] = {}
        self.stats = Stats()

    # -- module files ------------------------------------------------------------------------------
    def _module_candidates(self, name: str) -> list[Path]:
        """``.ko`` files that may hold module ``name``: given ones first, then the build's, then test modules."""
        stem = name.replace("-", "_")
        out = [p for p in self._extra if p.name.removesuffix(".ko").replace("-", "_") == stem]
        order = self.build_dir / "modules.order"
        if order.is_file():
            for rel in order.read_text(encoding="utf-8", errors="replace").split():
                p = self.build_dir / rel.replace(".o", ".ko")
                if p.stem.replace("-", "_") == stem:
                    out.append(p)
        # Test modules (pagelab/kernel/modules.py) are built out of tree under the cache, one dir per
        # (sources, kernel): the symbol sizes below tell which one the dump ran.
        built = cache_dir("modules") / name
        if built.is_dir():
            out += sorted(built.glob(f"*/src/{name}.ko"), key=lambda p: -p.stat().st_mtime)
        return [p for p in out if p.is_file()]

    def _module(self, name: str, frames: Sequence[Frame]) -> Binary | None:
        """The candidate ``.ko`` whose symbol sizes agree best with the dump (at least MIN_AGREEMENT)."""
        best, score = None, MIN_AGREEMENT
        for path in self._module_candidates(name):
            try:
                b = Binary.open(name, path)
            except InputError:
                continue
            if b.elf.type == ET_REL and (a := b.agreement(frames)) >= score:
                if a == 1.0:
                    return b
                best, score = b, a
        return best

    # -- resolving ---------------------------------------------------------------------------------
    def resolve(self, frames: Iterable[str]) -> dict[str, Resolved | None]:
        """Every distinct printed frame → its location (None: no line info, unknown symbol or module).

        Raises InfraError when addr2line cannot run.
        """
        by_binary: dict[str | None, dict[str, Frame]] = {}
        out: dict[str, Resolved | None] = {}
        for text in set(frames):
            f = parse(text)
            out[text] = None
            if f is not None:
                by_binary.setdefault(f.module, {})[text] = f
        self.stats.frames += len(out)
        if not self.line_info:
            return out
        for module, group in by_binary.items():
            binary = self.vmlinux if module is None else self._module(module, list(group.values()))
            if binary is None:
                self.stats.missing_modules.add(str(module))
                continue
            found = self._resolve_binary(binary, {f.key: f for f in group.values()})
            for text, f in group.items():
                out[text] = found.get(f.key)
        self.stats.unresolved += sum(1 for v in out.values() if v is None)
        return out

    def _resolve_binary(self, binary: Binary, frames: Mapping[str, Frame]) -> dict[str, Resolved | None]:
        cache = self._cache_path(binary)
        # The cache file holds raw JSON rows; only the frames asked for become Resolved objects (a
        # build's cache can hold every function of vmlinux: decoding all of it would cost more than the
        # lookup saves).
        known = _load(cache) if cache else {}
        if cache and known:
            with contextlib.suppress(OSError):
                os.utime(cache)  # a hit: the file's mtime is its "last used" (pagelab cache)
        todo = {k: f for k, f in frames.items() if k not in known}
        # Only when something must be looked up: reading vmlinux's symbol table costs more than a cached answer.
        if todo and binary is self.vmlinux and binary.agreement(list(frames.values())) < MIN_AGREEMENT:
            self.stats.mismatched = True  # another build's dump: its lines would be wrong ones
            return {}
        self.stats.cached += len(frames) - len(todo)
        fresh = self._addr2line(binary, todo) if todo else {}
        if fresh:
            self.stats.looked_up += len(todo)
            if cache:
                with file_lock(cache.with_suffix(".lock")):
                    merged = _load(cache)
                    merged.update({k: None if v is None else v.to_json() for k, v in fresh.items()})
                    atomic_write(cache, json.dumps(merged, separators=(",", ":")))
        out: dict[str, Resolved | None] = {}
        for k in frames:
            if k in fresh:
                out[k] = fresh[k]
            else:
                v = known.get(k)
                out[k] = None if v is None else Resolved.from_json(v)
        return out

    def _cache_path(self, binary: Binary) -> Path | None:
        if binary.build_id is None:
            return None  # no content key: never cache (a rebuilt file could reuse the name)
        return cache_dir("symbols") / f"{binary.name}-{binary.build_id}.v{_CACHE_LAYOUT}.json"

    def _addr2line(self, binary: Binary, frames: Mapping[str, Frame]) -> dict[str, Resolved | None]:
        """One addr2line process per section of ``binary`` (vmlinux: one) for all of ``frames``."""
        out: dict[str, Resolved | None] = {k: None for k in frames}
        by_section: dict[str | None, list[tuple[str, int]]] = {}
        for key, f in frames.items():
            sym = binary.symbol_for(f)
            if sym is None:
                continue
            # A relocatable .ko numbers each section from 0: addr2line -j SECTION looks up offsets in it.
            section = sym.section if binary.elf.type == ET_REL else None
            by_section.setdefault(section, []).append((key, sym.value + max(f.offset - 1, 0)))
        for section, items in by_section.items():
            # In address order: addr2line keeps the last compilation unit's line table at hand, so sorted
            # lookups cost a third of random ones (scripts/bench/symbolize.py, BENCHMARKS.md).
            items.sort(key=lambda item: item[1])
            cmd = ["addr2line", "-e", str(binary.path), "-a", "-f", "-i"]
            if section is not None:
                cmd += ["-j", section]
            stdin = "".join(f"{addr:#x}\n" for _, addr in items)
            try:
                proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
            except OSError as err:
                raise InfraError(f"addr2line: cannot run ({err}); install binutils (scripts/setup-host.sh)") from None
            self.stats.processes += 1
            if proc.returncode != 0:
                raise InfraError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}")
            records = _parse_addr2line(proc.stdout)
            for (key, _), chain in zip(items, records.get_all([a for _, a in items]), strict=True):
                out[key] = self._relative(chain)
        return out

    def _relative(self, chain: list[Line] | None) -> Resolved | None:
        if not chain:
            return None
        return Resolved(tuple(Line(ln.function, self._path(ln.file), ln.line) for ln in chain))

    def _path(self, path: str) -> str:
        """vmlinux (and in-tree module) paths relative to the kernel tree; others as built."""
        got = self._paths.get(path)
        if got is None:
            got = path
            for root in (self.tree, self.build_dir):
                if root is not None and path.startswith(f"{root}/"):
                    got = path[len(str(root)) + 1 :]
                    break
            got = self._paths[path] = os.path.normpath(got)
        return got


class _Records:
    def __init__(self) -> None:
        self.by_addr: dict[int, list[Line] | None] = {}

    def get_all(self, addrs: Sequence[int]) -> list[list[Line] | None]:
        return [self.by_addr.get(a) for a in addrs]


def _parse_addr2line(text: str) -> _Records:
    """``addr2line -a -f -i`` output: an ``0x…`` line, then (function, file:line) pairs, innermost first."""
    recs = _Records()
    current: list[Line] | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        row = lines[i]
        if row.startswith("0x"):
            current = []
            recs.by_addr[int(row, 16)] = current
            i += 1
            continue
        if current is None or i + 1 >= len(lines):
            break
        func, loc = row.strip(), lines[i + 1].strip()
        i += 2
        m = _LOCATION.match(loc)
        if m and m["line"] not in ("?", "0") and m["file"] != "??":
            current.append(Line("?" if func == "??" else func, m["file"], int(m["line"])))
    for addr, chain in recs.by_addr.items():
        if not chain:
            recs.by_addr[addr] = None
    return recs


def _source_tree(build_dir: Path) -> Path | None:
    """The kernel tree of an O= build: Kbuild leaves a ``source`` link to it in the output directory."""
    link = build_dir / "source"
    try:
        return link.resolve(strict=True) if link.exists() else None
    except OSError:
        return None


def _load(path: Path) -> dict[str, Any]:
    """A symbol cache file as raw JSON rows (``Resolved.to_json`` or null), empty when missing or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


HOW_TO_GET_LINES = "rebuild with `--fragment debuginfo` for file:line and MAINTAINERS sections"


def no_line_info_hint(build_dir: str | os.PathLike[str]) -> str:
    """The one-time note when the build has no line tables."""
    return f"{build_dir}/vmlinux has no DWARF line tables: source and subsystem are null; {HOW_TO_GET_LINES}"
