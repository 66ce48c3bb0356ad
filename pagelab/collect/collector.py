"""Snapshots from a live guest: ``/sys/kernel/debug/page_owner`` streamed to a file and a parser at once.

Reading is the slow part under TCG (the guest formats every record, symbol lookups included), so a
snapshot is read as disjoint PFN ranges by several ``po-read`` processes at once on an SMP guest,
one SSH channel each. The page_owner file offset is a PFN, so every range starts with an ``lseek``;
``po-read`` stops at the first record past its range. The ranges are merged back in PFN order while
they are being read: the snapshot file is what one ``cat`` would have produced, the parser sees the
bytes as they arrive, and nothing is ever held whole in memory (ranges not yet due are spooled to
disk).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from pagelab.cache import cache_dir, content_key, file_lock, file_sha256, mark_in_use, mark_used
from pagelab.errors import BuildError, GuestCrash, InfraError, InputError
from pagelab.pageowner.analyse import Snapshot, SnapshotBuilder
from pagelab.pageowner.handles import Resolver, parse_stacks
from pagelab.procs import step_failed, tool_version
from pagelab.resources import guest_dir
from pagelab.ui import UI

PAGE_OWNER = "/sys/kernel/debug/page_owner"
SHOW_STACKS = "/sys/kernel/debug/page_owner_stacks/show_stacks"
SHOW_STACKS_HANDLES = "/sys/kernel/debug/page_owner_stacks/show_stacks_handles"
GUEST_STACKS = "/tmp/.pagelab-stacks-handles"  # the snapshot's copy of it in the guest, for po-read -s
READER_SOURCE = guest_dir() / "tools" / "po-read.c"
READER_GUEST_PATH = "/usr/bin/po-read"
# Several ranges per reader: they are handed out as readers free up, so an uneven spread of allocated
# pages over the PFN space does not leave one vCPU reading alone at the end.
RANGES_PER_READER = 4
# Two readers per vCPU: a reader alternates between the kernel formatting records (po-read) and
# dropbear encrypting them; with one reader per vCPU each vCPU idles while its reader waits on the
# other half (2 vCPUs, TCG, 129 MB dump on a loaded host: 2 readers 32.4 s, 4 readers 27.9 s; on a
# quieter host no difference: BENCHMARKS.md).
READERS_PER_CPU = 2
ZSTD_LEVEL = 3
CHANNEL_ATTEMPTS = 3

# What a sink returns is ignored (a compressor's write returns a count).
Sink = Callable[[bytes], object]


# -- the static reader ------------------------------------------------------------------------------
def build_reader(source: Path = READER_SOURCE, ui: UI | None = None) -> Path:
    """``po-read`` compiled statically for the guest (cached by source and compiler). Raises BuildError."""
    cc = tool_version(["gcc", "--version"])
    if cc is None:
        raise BuildError("gcc not found: install build-essential (scripts/setup-host.sh)")
    directory = cache_dir("tools", content_key([file_sha256(source), cc, "-static -O2"]))
    binary = directory / "po-read"
    with file_lock(directory / ".lock"):
        if binary.exists():
            mark_used(directory)
            mark_in_use(directory)
            return binary
        if ui is not None:
            ui.step("compiling po-read (static)")
        tmp = directory / f".po-read.{os.getpid()}"
        proc = subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(source)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise step_failed(
                f"{source}: gcc -static", proc.returncode, output=proc.stderr, hint="is libc6-dev installed?"
            )
        os.replace(tmp, binary)
        mark_in_use(directory)
    return binary


# -- PFN ranges -------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Span:
    """One populated zone's PFNs: [start, end)."""

    start: int
    end: int

    @property
    def pages(self) -> int:
        return self.end - self.start


_ZONE = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)")
_FIELD = re.compile(r"^\s+(spanned|present|start_pfn:)\s+(\d+)")


def parse_zoneinfo(text: str) -> list[Span]:
    """The populated zones of ``/proc/zoneinfo`` as merged, sorted PFN spans. Raises ValueError if none."""
    zones: list[dict[str, int]] = []
    for line in text.splitlines():
        if _ZONE.match(line):
            zones.append({})
            continue
        m = _FIELD.match(line)
        if m and zones:
            zones[-1][m.group(1).rstrip(":")] = int(m.group(2))
    spans = sorted(
        Span(z["start_pfn"], z["start_pfn"] + z["spanned"])
        for z in zones
        if z.get("present", 0) > 0 and z.get("spanned", 0) > 0 and "start_pfn" in z
    )
    if not spans:
        raise ValueError("/proc/zoneinfo: no populated zone (expected 'spanned', 'present' and 'start_pfn:' lines)")
    merged = [spans[0]]
    for s in spans[1:]:
        last = merged[-1]
        if s.start <= last.end:
            merged[-1] = Span(last.start, max(last.end, s.end))
        else:
            merged.append(s)
    return merged


def split_ranges(spans: Sequence[Span], parts: int) -> list[tuple[int, int | None]]:
    """Cut the spans into ``parts`` ranges of about equal PFN count, in order.

    The first range starts at 0 (the kernel reads from ``min_low_pfn`` there, exactly like ``cat``) and
    the last has no end, so the ranges together cover every record whatever the memory map says.
    """
    total = sum(s.pages for s in spans)
    parts = max(1, min(parts, total))
    bounds: list[int] = []
    for k in range(1, parts):
        target = total * k // parts
        for s in spans:
            if target < s.pages:
                bounds.append(s.start + target)
                break
            target -= s.pages
    bounds = sorted(set(bounds))
    starts = [0, *bounds]
    ends: list[int | None] = [*bounds, None]
    return list(zip(starts, ends, strict=True))


def reader_command(
    start: int, end: int | None, reader: str = READER_GUEST_PATH, mode: str | None = None, stacks: str | None = None
) -> str:
    """The guest command that prints the records of PFNs [start, end) (``mode``, ``stacks``: po-read -m, -s)."""
    opts = (["-m", mode] if mode else []) + (["-s", stacks] if stacks else [])
    return shlex.join([reader, *opts, str(start)] + ([] if end is None else [str(end)]))


# -- ordered merge of concurrently read ranges -------------------------------------------------------
class SpoolAbandoned(Exception):
    """Raised into a reader's sink once the merge has failed: stop reading, nobody wants the bytes."""


class Spool:
    """One range's bytes: written by a reader thread, read back in order by the merger while still growing.

    Backed by an unlinked temporary file, so a range waiting for its turn costs disk, not memory.
    """

    def __init__(self, directory: str | None = None) -> None:
        try:
            fd, path = tempfile.mkstemp(prefix=".pagelab-spool-", dir=directory)
        except OSError as err:
            raise InfraError(f"cannot create a spool file in {directory}: {err.strerror or err}") from None
        os.unlink(path)
        self._dir = directory
        self._fd = fd
        self._size = 0
        self._done = False
        self._abandoned = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        """Append (reader side). Raises SpoolAbandoned once the merger has given up."""
        if self._abandoned:
            raise SpoolAbandoned()
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self._fd, view, self._size)
            except OSError as err:  # a full --out (snapshots are spooled beside their files)
                raise InfraError(f"cannot spool page_owner in {self._dir}: {err.strerror or err}") from None
            view = view[n:]
            with self._cond:
                self._size += n
                self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The reader is done (``error`` if it failed)."""
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Everything written, as it is written, until ``finish``; re-raises the reader's error."""
        pos = 0
        while True:
            with self._cond:
                while pos >= self._size and not self._done:
                    self._cond.wait()
                available, done, error = self._size, self._done, self._error
            if error is not None:
                raise error
            while pos < available:
                data = os.pread(self._fd, min(size, available - pos), pos)
                pos += len(data)
                yield data
            if done and pos >= available:
                return

    def abandon(self) -> None:
        """Nobody will read this spool: its reader gets SpoolAbandoned on its next write."""
        self._abandoned = True

    def close(self) -> None:
        """Release the file; a reader still writing gets SpoolAbandoned on its next write."""
        with self._cond:
            if self._fd >= 0:
                self._abandoned = True
                os.close(self._fd)
                self._fd = -1


def read_in_order(
    jobs: Sequence[Callable[[Sink], None]],
    workers: int,
    consume: Sink,
    *,
    spool_dir: str | None = None,
    on_job_done: Callable[[int], None] | None = None,
) -> None:
    """Run ``jobs`` (each writes its bytes to the sink it is given) on ``workers`` threads, jobs taken in
    order as workers free up, and pass every byte to ``consume`` in job order while they run.

    Re-raises the first error, of a job or of ``consume``, once every worker has stopped.
    """
    spools = [Spool(spool_dir) for _ in jobs]
    lock = threading.Lock()
    state = {"next": 0, "failed": False}

    def worker() -> None:
        while True:
            with lock:
                if state["failed"] or state["next"] >= len(jobs):
                    return
                i = state["next"]
                state["next"] += 1
            try:
                jobs[i](spools[i].write)
            except BaseException as err:
                with lock:
                    state["failed"] = True
                spools[i].finish(err)
                return
            spools[i].finish()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(workers, len(jobs))))]
    for t in threads:
        t.start()
    try:
        for i, spool in enumerate(spools):
            for data in spool.chunks():
                consume(data)
            spool.close()
            if on_job_done is not None:
                on_job_done(i)
    except BaseException:
        with lock:
            state["failed"] = True
        for spool in spools:
            spool.abandon()
        raise
    finally:
        for t in threads:
            t.join()
        for spool in spools:
            spool.close()


# -- compression and parsing in a child process -------------------------------------------------------
# Messages on the child's stdin: one type byte and an 8-byte length, then the payload:
# B (begin: "path\0label"), D (dump bytes), E (end of this snapshot). After E the child answers on its
# stdout with an 8-byte length and a pickled ("ok", Snapshot, bytes) or ("error", details, bytes).
_HEAD = struct.Struct("<cQ")
_LEN = struct.Struct("<Q")


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def _serve() -> None:
    """Child process entry point (``python -c 'import pagelab.collect.collector as c; c._serve()'``)."""
    # Ctrl-C is the parent's to handle; the child ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    with contextlib.suppress(EOFError, BrokenPipeError):
        while True:
            kind, n = _HEAD.unpack(_read_exact(inp, _HEAD.size))
            payload = _read_exact(inp, n)
            if kind != b"B":
                continue
            path, label, name, handles = payload.decode().split("\0", 3)
            result = _one_snapshot(inp, path, label, name, handles == "1")
            reply = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            out.write(_LEN.pack(len(reply)) + reply)
            out.flush()


def _one_snapshot(inp: BinaryIO, path: str, label: str, name: str, handles: bool = False) -> tuple[str, Any, int]:
    """Compress the dump to ``path`` and parse it (named ``name``, the file it will be renamed to).

    ``handles``: a resolved handle-mode read, where a record whose handle could not be resolved is
    counted (and warned about) rather than refused. Reads to the end message whatever fails, so the
    next snapshot starts in step.
    """
    builder = SnapshotBuilder(label=label, source=name, name=name, handles=handles)
    total = 0
    error: tuple[str, ...] | None = None
    write_error: OSError | None = None
    raw: BinaryIO | None = None
    zst: Any = None
    try:
        raw = open(path, "wb")
        zst = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw)
    except OSError as err:
        write_error = err
    try:
        while True:
            kind, n = _HEAD.unpack(_read_exact(inp, _HEAD.size))
            if kind == b"E":
                break
            data = _read_exact(inp, n)
            total += n
            if write_error is None:
                try:
                    zst.write(data)
                except OSError as err:  # a full --out: keep reading, report it at the end
                    write_error = err
            if error is None:
                try:
                    builder.feed(data)
                except InputError as err:  # keep writing the raw file: it is the evidence
                    error = ("input", err.source, err.detail, str(err.line or ""))
        if write_error is None:
            try:
                zst.close()  # the frame's end, then the file
            except OSError as err:
                write_error = err
    finally:
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.close()
    if write_error is not None:
        return ("error", ("write", f"cannot write {name}: {write_error.strerror or write_error}"), total)
    if error is None:
        try:
            return ("ok", builder.finish(), total)
        except InputError as err:
            error = ("input", err.source, err.detail, str(err.line or ""))
        except Exception as err:  # a parser bug, reported by the parent
            error = ("bug", repr(err))
    return ("error", error, total)


class AnalysisWorker:
    """A child process that compresses and parses snapshots while the parent only moves bytes.

    The reading threads (paramiko, one per range) need the parent's GIL; parsing in the same process
    starved them. A plain subprocess (not multiprocessing) so that no caller's ``__main__`` is re-run.
    Raises InfraError if the child dies.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import pagelab.collect.collector as c; c._serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def _send(self, kind: bytes, data: bytes = b"") -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(_HEAD.pack(kind, len(data)))
            self._proc.stdin.write(data)
            if kind != b"D":
                self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise InfraError("the snapshot analysis process died") from None

    def begin(self, path: Path, label: str, name: Path | None = None, *, handles: bool = False) -> None:
        """Start a snapshot written to ``path``, parsed as ``name`` (default ``path``); ``handles`` as
        ``_one_snapshot``'s."""
        self._send(b"B", f"{path}\0{label}\0{name or path}\0{int(handles)}".encode())

    def feed(self, data: bytes) -> None:
        self._send(b"D", data)

    def finish(self) -> tuple[Snapshot, int]:
        """End of this snapshot: its analysis and byte count. Raises InputError, InfraError."""
        self._send(b"E")
        assert self._proc.stdout is not None
        try:
            (n,) = _LEN.unpack(_read_exact(self._proc.stdout, _LEN.size))
            status, result, total = pickle.loads(_read_exact(self._proc.stdout, n))
        except (EOFError, OSError, pickle.UnpicklingError):
            raise InfraError(f"the snapshot analysis process died (status {self._proc.poll()})") from None
        if status == "ok":
            return result, total
        if result[0] == "input":
            raise InputError(result[1], result[2], int(result[3]) if result[3] else None)
        if result[0] == "write":
            raise InfraError(result[1])
        raise InfraError(f"snapshot analysis failed: {result[1]}")

    def close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# -- snapshots ---------------------------------------------------------------------------------------
@dataclass
class SnapshotFile:
    """One snapshot taken: its files, its analysis and what it cost."""

    index: int
    label: str
    path: Path
    snapshot: Snapshot
    seconds: float
    bytes: int
    readers: int
    ranges: int
    stacks_path: Path | None = None
    stacks_seconds: float = 0.0
    # "handle": read with mode=handle and resolved through show_stacks_handles (the .zst holds the
    # resolved, stack-mode text); "stack": read as the kernel formats it by default.
    read_mode: str = "stack"
    learned_handles: int = 0  # handles show_stacks_handles lacked, their stacks printed once by po-read -s
    fetched_handles: int = 0  # of those, read again from the host (their first page changed hands)
    unresolved_records: int = 0  # handle mode: records whose stack neither the table nor a re-read knew

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "read_mode": self.read_mode,
            "records": self.snapshot.records,
            "total_pages": self.snapshot.total_pages,
            "path": str(self.path),
            "show_stacks": str(self.stacks_path) if self.stacks_path else None,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "readers": self.readers,
        }


@dataclass
class GuestMemory:
    """What a snapshot needs to know about the guest, asked once."""

    spans: list[Span]
    has_show_stacks: bool
    has_reader: bool
    cpus: int = 1
    has_allocinfo: bool = False  # /proc/allocinfo: a kernel with CONFIG_MEM_ALLOC_PROFILING (>= 6.10)
    # page_owner takes mode=handle (7.x, mm/page_owner.c page_owner_write) and show_stacks_handles exists.
    has_handle_mode: bool = False
    notes: list[str] = field(default_factory=list)


def _check_status(guest: Any, cmd: str, status: int, stderr: bytes = b"") -> None:
    if status != 0:
        # A dead guest explains a failed read better than the status does.
        check = getattr(guest, "check_crash", None)
        if check is not None:
            check()
        why = stderr.decode(errors="replace").strip().splitlines()
        detail = f": {why[-1]}" if why else ""
        raise InfraError(f"guest: `{cmd}` exited with status {status} while reading page_owner{detail}")


def _run_stream(guest: Any, cmd: str, sink: Sink, timeout: float) -> None:
    err = bytearray()
    sent = 0

    def keep(data: bytes) -> None:
        if len(err) < 4096:
            err.extend(data)

    def counted(data: bytes) -> None:
        nonlocal sent
        sent += len(data)
        sink(data)

    for attempt in range(CHANNEL_ATTEMPTS):
        try:
            status = guest.run_stream(cmd, counted, timeout=timeout, stderr_sink=keep)
            break
        except InfraError as e:
            # Under heavy host load dropbear sometimes refuses one of several concurrent channel
            # opens; nothing ran yet, so try again. Anything else, or a stream that started, fails.
            if sent or "channel" not in str(e).lower() or attempt + 1 == CHANNEL_ATTEMPTS:
                raise
            time.sleep(0.5 * (attempt + 1))
    _check_status(guest, cmd, status, bytes(err))


def probe(guest: Any, timeout: float = 60.0) -> GuestMemory:
    """Ask the guest for its memory map, CPU count and page_owner files.

    Raises InfraError when page_owner is not readable (kernel without CONFIG_PAGE_OWNER or not booted
    with ``page_owner=on``) or /proc/zoneinfo makes no sense.
    """
    script = (
        f"test -r {PAGE_OWNER} && echo has-page-owner; test -r {SHOW_STACKS} && echo has-show-stacks; "
        # Ranged reads need page_owner's lseek (a PFN offset); a kernel without it falls back to one cat.
        f"{READER_GUEST_PATH} 1 2 >/dev/null 2>&1 && echo has-reader; test -r /proc/allocinfo && echo has-allocinfo; "
        # The feature, not a version number: the kernel accepts mode=handle on an open page_owner file.
        f"{READER_GUEST_PATH} -m handle 1 2 >/dev/null 2>&1 && test -r {SHOW_STACKS_HANDLES} && echo has-handle-mode; "
        "echo cpus=$(nproc); echo ---; "
        "cat /proc/zoneinfo"
    )
    res = guest.run(script, timeout=timeout)
    head, _, zoneinfo = str(res.stdout).partition("---\n")
    flags = set(head.split())
    if "has-page-owner" not in flags:
        raise InfraError(
            f"guest: {PAGE_OWNER} is missing: the kernel needs CONFIG_PAGE_OWNER and the command line page_owner=on"
        )
    try:
        spans = parse_zoneinfo(zoneinfo)
    except ValueError as err:
        raise InfraError(f"guest: {err}") from None
    cpus = next((int(w[5:]) for w in flags if w.startswith("cpus=") and w[5:].isdigit()), 1)
    return GuestMemory(
        spans,
        "has-show-stacks" in flags,
        "has-reader" in flags,
        cpus,
        has_allocinfo="has-allocinfo" in flags,
        has_handle_mode="has-handle-mode" in flags,
    )


class Collector:
    """Takes numbered snapshots of one guest into ``out_dir`` (``NN-LABEL.page_owner.zst``)."""

    def __init__(
        self,
        guest: Any,
        out_dir: Path,
        ui: UI,
        *,
        readers: int | None = None,
        timeout: float = 1800.0,
        read_mode: str = "auto",
    ) -> None:
        """``read_mode``: "auto" reads handles where the kernel can (7.x), "stack" never does, "handle"
        insists (InfraError on a kernel without it)."""
        if read_mode not in ("auto", "stack", "handle"):
            raise ValueError(f"read_mode must be auto, stack or handle, not {read_mode!r}")
        self.guest = guest
        self.out_dir = Path(out_dir)
        self.ui = ui
        self.timeout = timeout
        self._read_mode = read_mode
        self._readers = readers
        self._memory: GuestMemory | None = None
        self._analysis: AnalysisWorker | None = None
        self.taken: list[SnapshotFile] = []

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the analysis process (started on the first snapshot)."""
        if self._analysis is not None:
            self._analysis.close()
            self._analysis = None

    def _worker(self) -> AnalysisWorker:
        if self._analysis is None:
            self._analysis = AnalysisWorker()
        return self._analysis

    @property
    def memory(self) -> GuestMemory:
        if self._memory is None:
            self._memory = probe(self.guest)
        return self._memory

    def plan(self) -> tuple[int, list[tuple[int, int | None]]]:
        """How many readers, and which PFN ranges (one range and ``cat`` without po-read)."""
        mem = self.memory
        readers = self._readers or mem.cpus * READERS_PER_CPU
        if mem.cpus <= 1 and not self._readers:
            readers = 1  # one vCPU: parallel reads only add SSH channels
        if readers <= 1 or not mem.has_reader:
            return 1, [(0, None)]
        return readers, split_ranges(mem.spans, readers * RANGES_PER_READER)

    def read_mode(self) -> str:
        """ "handle" or "stack": what the next snapshot reads. Raises InfraError if "handle" cannot be had."""
        if self._read_mode == "stack":
            return "stack"
        if self.memory.has_handle_mode and self.memory.has_reader:
            return "handle"
        if self._read_mode == "handle":
            raise InfraError(
                f"guest: {PAGE_OWNER} takes no mode=handle or {SHOW_STACKS_HANDLES} is missing (a 7.x kernel has both)"
            )
        return "stack"

    def _stack_table(self) -> dict[int, bytes]:
        """show_stacks_handles, read once per snapshot (before the dump: a stack is never removed), and
        left in the guest at GUEST_STACKS for ``po-read -s`` (which handles the list lacks)."""
        chunks: list[bytes] = []
        cmd = f"cat {SHOW_STACKS_HANDLES} > {GUEST_STACKS} && cat {GUEST_STACKS}"
        _run_stream(self.guest, cmd, chunks.append, self.timeout)
        try:
            return parse_stacks(b"".join(chunks), SHOW_STACKS_HANDLES)
        except InputError as err:
            raise InfraError(f"guest: {err}") from None

    def _fetch_stack(self, handle: int, pfn: int | None) -> bytes | None:
        """The frames of ``handle`` from the record at ``pfn``, read in stack_handle mode; None when that
        page changed hands meanwhile. po-read -s prints the first record of a handle show_stacks_handles
        lacks with its frames; this is for the rare page that changed hands between its two reads."""
        if pfn is None:
            return None
        out: list[bytes] = []
        _run_stream(self.guest, reader_command(pfn, pfn + 1, mode="stack_handle"), out.append, self.timeout)
        frames = [line for line in b"".join(out).split(b"\n") if line.startswith(b" ")]
        if f"\nhandle: {handle}\n".encode() not in b"".join(out) or not frames:
            return None
        return b"\n".join(frames) + b"\n"

    def take(self, label: str) -> SnapshotFile:
        """Take the next snapshot: raw file first, analysis alongside. Raises InfraError, GuestCrash."""
        index = len(self.taken)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{index:02d}-{label}"
        path = self.out_dir / f"{stem}.page_owner.zst"
        # Written under a temporary name and renamed when complete: a snapshot file that exists is
        # whole (a killed QEMU, a signal or a full disk leaves no half file named like a snapshot).
        partial = self.out_dir / f".{stem}.page_owner.zst.partial"
        readers, ranges = self.plan()
        mode = self.read_mode()
        self.ui.step(f"snapshot {stem}: reading page_owner ({readers} reader{'s' if readers > 1 else ''}, {mode} mode)")
        # The guest's clock as the read starts, on page_owner's ts clock: the 'now' of page ages.
        clock_ns = guest_clock_ns(self.guest)
        t0 = time.perf_counter()
        worker = self._worker()
        resolver = Resolver(self._stack_table(), self._fetch_stack) if mode == "handle" else None
        worker.begin(partial, label, path, handles=resolver is not None)
        consume: Sink = worker.feed
        if resolver is not None:
            # Stacks go back in on the host, before the bytes reach the .zst and the parser: both see
            # exactly what a stack-mode read gives (pagelab/pageowner/handles.py).
            def consume(data: bytes) -> None:
                out = resolver.feed(data)
                if out:
                    worker.feed(out)

        def job(start: int, end: int | None) -> Callable[[Sink], None]:
            cmd = f"cat {PAGE_OWNER}" if len(ranges) == 1 and not self.memory.has_reader else None
            if resolver is not None:
                cmd = cmd or reader_command(start, end, mode="handle", stacks=GUEST_STACKS)
            cmd = cmd or reader_command(start, end)

            def run(sink: Sink) -> None:
                _run_stream(self.guest, cmd, sink, self.timeout)

            return run

        try:
            with self.ui.progress(f"snapshot {stem}", total=len(ranges)) as bar:
                read_in_order(
                    [job(s, e) for s, e in ranges],
                    readers,
                    consume,
                    spool_dir=str(self.out_dir),
                    on_job_done=lambda i: bar.update(completed=i + 1),
                )
                if resolver is not None:
                    tail = resolver.close()
                    if tail:
                        worker.feed(tail)
        except BaseException:
            # The child is mid-snapshot; a fresh one serves the next call. close() waits for it to exit,
            # so the partial file is finished with when it is removed.
            self.close()
            partial.unlink(missing_ok=True)
            raise
        try:
            snapshot, total = worker.finish()
        except InputError as err:
            # The guest wrote this dump, not the user: a dump that does not parse is an infrastructure
            # failure (exit 4). The raw file stays as the evidence, under a name no snapshot has.
            evidence = path.with_name(f"{stem}.page_owner.unparsed.zst")
            os.replace(partial, evidence)
            raise InfraError(
                f"snapshot {stem}: the guest's page_owner dump did not parse ({err}); raw: {evidence}"
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        seconds = time.perf_counter() - t0
        snapshot.clock_ns = clock_ns
        taken = SnapshotFile(index, label, path, snapshot, seconds, total, readers, len(ranges), read_mode=mode)
        # Listed as taken as soon as the dump has its name: reading show_stacks or allocinfo below may
        # fail (SSH lost, a crash), and a complete dump on disk must still be in report.json.
        self.taken.append(taken)
        if resolver is not None:
            taken.learned_handles = resolver.learned
            taken.fetched_handles = resolver.fetched
            taken.unresolved_records = sum(resolver.unresolved.values())
            warning = resolver.warning(stem)
            if warning:
                self.ui.warn(warning)
                # The parser saw the same records without a stack (pageowner/parse.py): one warning, the
                # resolver's, which names the handles; the run prints the snapshot's other warnings.
                snapshot.warnings[:] = [w for w in snapshot.warnings if "have no stack" not in w]
        if self.memory.has_show_stacks:
            taken.stacks_path = self.out_dir / f"{stem}.show_stacks.zst"
            t1 = time.perf_counter()
            try:
                self._save_stream(f"cat {SHOW_STACKS}", taken.stacks_path)
            except BaseException:
                taken.stacks_path = None  # _save_stream left no file
                raise
            taken.stacks_seconds = time.perf_counter() - t1
        if self.memory.has_allocinfo:
            # Allocation profiling's per-callsite bytes, beside the dump (pagelab/source/allocinfo.py
            # finds it by name: NN-LABEL.allocinfo.zst).
            self._save_stream("cat /proc/allocinfo", self.out_dir / f"{stem}.allocinfo.zst")
        mib = total / (1 << 20)
        self.ui.info(
            f"  {stem}: {snapshot.records or 0:,} records, {snapshot.total_pages:,} pages, "
            f"{mib:.1f} MiB in {seconds:.1f} s"
        )
        return taken

    def _save_stream(self, cmd: str, path: Path) -> None:
        partial = path.with_name(f".{path.name}.partial")  # renamed when complete, as in take()
        try:
            with open(partial, "wb") as raw, zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw) as zst:
                _run_stream(self.guest, cmd, zst.write, self.timeout)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)


# page_owner stamps an allocation with local_clock() (mm/page_owner.c: __update_page_owner_handle), and
# printk stamps every log record with the same local_clock() (kernel/printk/printk.c), so a marker
# written to /dev/kmsg and read back with dmesg is "now" on the ts clock, to the microsecond
# (CONFIG_PRINTK_TIME, kconfigs/qemu-x86_64.config). /proc/uptime (CLOCK_BOOTTIME, 10 ms ticks) starts a
# little later than local_clock; it is the fallback when the marker cannot be read back. Level 7 keeps
# the marker off the console.
CLOCK_MARK = "pagelab-clock"
_CLOCK_LINE = re.compile(r"\[\s*(\d+)\.(\d{6})\]\s*" + CLOCK_MARK)
_UPTIME = re.compile(r"^(\d+)\.(\d{2}) ", re.M)


def guest_clock_ns(guest: Any, timeout: float = 60.0) -> int | None:
    """The guest's local_clock() in ns (µs precision), or its uptime; None if neither can be read."""
    script = (
        f"echo '<7>{CLOCK_MARK}' >/dev/kmsg 2>/dev/null; dmesg 2>/dev/null | grep '{CLOCK_MARK}' | tail -n 1; "
        "cat /proc/uptime"
    )
    # Neither file readable (an unusual guest): None, and ages fall back to the dump's newest ts.
    return parse_clock(str(guest.run(script, timeout=timeout).stdout))


def parse_clock(text: str) -> int | None:
    """``[   12.345678] pagelab-clock`` → ns; else ``/proc/uptime``'s ``12.34 …`` → ns; else None."""
    m = _CLOCK_LINE.search(text)
    if m is not None:
        return int(m.group(1)) * 1_000_000_000 + int(m.group(2)) * 1000
    m = _UPTIME.search(text)
    if m is not None:
        return int(m.group(1)) * 1_000_000_000 + int(m.group(2)) * 10_000_000
    return None


def crash_of(err: GuestCrash) -> dict[str, str]:
    """A crash as report.json lists it."""
    return {"kind": err.kind, "title": err.title, "excerpt": err.excerpt}
