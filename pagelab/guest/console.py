"""The guest's serial console: logged to a file and watched with pexpect for readiness and crashes.

Crashes are recognised by the kernel's own report headers, listed as data in ``CRASH_PATTERNS``
(first match wins, so specific headers come before generic ones). ``classify_line`` is pure and
tested on its own; ``ConsoleWatcher`` is the thread that feeds it from QEMU's serial output.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pexpect
import pexpect.fdpexpect


@dataclass(frozen=True)
class CrashPattern:
    """One kernel crash header: a kind for reports and a regex whose ``title`` group names it."""

    kind: str
    regex: re.Pattern[str]


def _p(kind: str, regex: str) -> CrashPattern:
    return CrashPattern(kind, re.compile(regex))


# The kernel's own headers (lib/bug.c, kernel/panic.c, arch/x86/mm/fault.c, kernel/hung_task.c,
# kernel/watchdog.c, mm/kasan/report.c, lib/ubsan.c, kernel/rcu/tree_stall.h). Order matters.
CRASH_PATTERNS: tuple[CrashPattern, ...] = (
    _p("soft_lockup", r"watchdog: (?P<title>BUG: soft lockup.*)"),
    _p("hard_lockup", r"(?P<title>Watchdog detected hard LOCKUP.*)"),
    _p("kasan", r"(?:BUG: )?(?P<title>KASAN: .*)"),
    _p("kfence", r"BUG: (?P<title>KFENCE: .*)"),
    _p("ubsan", r"(?P<title>UBSAN: .*)"),
    _p("kernel_bug", r"(?P<title>kernel BUG at .*)"),
    _p("bug", r"(?P<title>BUG: .*)"),
    _p("gpf", r"(?:Oops: )?(?P<title>general protection fault.*)"),
    _p("oops", r"(?P<title>Oops: .*)"),
    _p("panic", r"Kernel panic - not syncing: (?P<title>.*)"),
    _p("warning", r"(?P<title>WARNING: .*)"),
    _p("hung_task", r"INFO: (?P<title>task .* blocked for more than .*)"),
    _p("rcu_stall", r"(?P<title>rcu: INFO: rcu_\w+ detected stalls.*)"),
)
# Where a kernel report ends: stop collecting its excerpt here.
_END_OF_REPORT = re.compile(r"---\[ end |^\s*$|Rebooting in|end Kernel panic")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# Firmware chatter is not proof that the guest kernel runs (KVM can hang right after it).
_FIRMWARE = re.compile(r"SeaBIOS|iPXE|Booting from|^\s*$|Press .* for boot menu|^\x1b")

INIT_LINE = re.compile(r"^pagelab: init started uptime=(?P<uptime>[\d.]+)")
READY_LINE = re.compile(r"^pagelab: ready uptime=(?P<uptime>[\d.]+) kernel=(?P<kernel>\S+)")
# guest/init's own failure reports: the boot cannot end in a usable guest.
SETUP_FAILED_LINE = re.compile(r"^pagelab: (?P<what>dropbear did not start|network setup failed.*)")
EXCERPT_LINES = 40


@dataclass
class Crash:
    """A crash seen on the console: its kind, title line and the console lines of its report."""

    kind: str
    title: str
    lines: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def excerpt(self) -> str:
        return "\n".join(self.lines)


def strip_timestamp(line: str) -> str:
    """The console line without its ``[    1.234567] `` printk timestamp."""
    return _TIMESTAMP.sub("", line, count=1)


# Reported loudly but not fatal: a WARNING ends the session only with panic_on_warn, and then the
# kernel's "Kernel panic - not syncing: …" line that follows is the crash (exit 3, docs/formats.md).
NONFATAL_KINDS = frozenset({"warning"})


def classify_line(line: str) -> tuple[str, str] | None:
    """``(kind, title)`` if this console line opens a kernel crash report, else None.

    Headers must start the line (after the printk timestamp): the kernel prints its own reports that
    way, while other messages only mention the words ("traps: prog[42] general protection fault ip:…"
    for a user-space fault, "RETBleed: WARNING: …" for a mitigation notice).
    """
    text = strip_timestamp(line)
    for pattern in CRASH_PATTERNS:
        m = pattern.regex.match(text)
        if m:
            return pattern.kind, m.group("title").strip()
    return None


def is_guest_output(line: str) -> bool:
    """True for a line printed by the guest kernel or init, not by the firmware."""
    return not _FIRMWARE.search(line)


class _Log:
    """The console log file. A full disk ends the log, not the watching: readiness and crashes still count."""

    def __init__(self, f: TextIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, text: str) -> None:
        if self.error is None:
            try:
                self._f.write(text)
            except OSError as err:
                self.error = err

    def flush(self) -> None:
        if self.error is None:
            try:
                self._f.flush()
            except OSError as err:
                self.error = err

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


class ConsoleWatcher:
    """Read QEMU's serial output from ``fd`` in a thread: log it, find readiness and crashes.

    Every line goes to ``log_path``. Events (``first_output``, ``init_seen``, ``ready``, ``eof``,
    ``crashed``, ``setup_failed``) are threading.Events with host timestamps in ``times``.
    """

    def __init__(self, fd: int, log_path: Path, tail_lines: int = 200) -> None:
        self.log_path = log_path
        self._log = _Log(open(log_path, "a", encoding="utf-8", errors="replace"))
        self._child = pexpect.fdpexpect.fdspawn(
            fd, timeout=None, maxread=65536, encoding="utf-8", codec_errors="replace", use_poll=True
        )
        self._child.logfile_read = self._log
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._lock = threading.Lock()
        self.first_output = threading.Event()
        self.init_seen = threading.Event()
        self.ready = threading.Event()
        self.setup_failed = threading.Event()
        self.setup_failure = ""
        self.eof = threading.Event()
        self.crashed = threading.Event()
        self.crashes: list[Crash] = []
        self.warnings: list[Crash] = []  # NONFATAL_KINDS: reported, the session goes on
        self.times: dict[str, float] = {}
        self.guest_uptime: dict[str, float] = {}
        self.kernel_release: str | None = None
        self._open: Crash | None = None
        self._thread = threading.Thread(target=self._run, name="pagelab-console", daemon=True)

    def start(self) -> ConsoleWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        # A line, or 4 KiB without a newline (junk must not grow the buffer). Anchored at the buffer's
        # start, which is always a line start, so a long pending line is never rescanned from every offset.
        patterns: list[re.Pattern[str] | type[pexpect.EOF] | type[pexpect.TIMEOUT]]
        patterns = [re.compile(r"\A(?:[^\n]{0,4095}\n|[^\n]{4096})"), pexpect.EOF, pexpect.TIMEOUT]
        try:
            while True:
                index = self._child.expect_list(patterns, timeout=0.5)
                if index == 0:
                    assert isinstance(self._child.after, str)  # the match of pattern 0 (an encoding is set)
                    self._on_line(self._child.after.rstrip("\r\n"))
                elif index == 1:
                    if self._child.before:
                        self._on_line(self._child.before.rstrip("\r\n"))
                    break
                else:
                    self._log.flush()
                    self._finish_open_crash()
                    # A partial line (no newline yet) is still output: KVM's proof may be mid-line.
                    if self._child.buffer and is_guest_output(self._child.buffer):
                        self._mark("first_output", self.first_output)
        except (OSError, ValueError):
            pass  # the fd was closed under us: QEMU is gone
        finally:
            self._finish_open_crash()
            self._log.flush()
            self.eof.set()

    def _mark(self, name: str, event: threading.Event) -> None:
        if not event.is_set():
            self.times[name] = time.monotonic()
            event.set()

    def _on_line(self, raw: str) -> None:
        line = raw.replace("\r", "")
        with self._lock:
            self._tail.append(line)
        if is_guest_output(line):
            self._mark("first_output", self.first_output)
        text = strip_timestamp(line)
        if self._open is not None:
            self._open.lines.append(line)
            if _END_OF_REPORT.search(text) or len(self._open.lines) >= EXCERPT_LINES:
                self._finish_open_crash()
        found = classify_line(line)
        if found is not None and found[0] in NONFATAL_KINDS:
            with self._lock:
                self.warnings.append(Crash(found[0], found[1], [line], complete=True))
            return
        if found is not None:
            kind, title = found
            if self._open is None or kind in ("panic",):
                # A panic line inside an oops report still names the outcome; keep both.
                self._finish_open_crash()
                with self._lock:
                    # The kernel line just before the header often says what triggered it (sysrq: …).
                    context = [c for c in list(self._tail)[-2:-1] if _TIMESTAMP.match(c)]
                crash = Crash(kind, title, [*context, line])
                with self._lock:
                    self.crashes.append(crash)
                self._open = crash
                self._mark("crash", self.crashed)
            return
        if m := INIT_LINE.match(text):
            self.guest_uptime["init"] = float(m.group("uptime"))
            self._mark("init", self.init_seen)
        elif m := READY_LINE.match(text):
            self.guest_uptime["ready"] = float(m.group("uptime"))
            self.kernel_release = m.group("kernel")
            self._mark("ready", self.ready)
        elif m := SETUP_FAILED_LINE.match(text):
            self.setup_failure = self.setup_failure or m.group("what").strip()
            self._mark("setup_failed", self.setup_failed)

    def _finish_open_crash(self) -> None:
        if self._open is not None:
            self._open.complete = True
            self._open = None

    def tail(self, n: int = 20) -> list[str]:
        """The last ``n`` console lines."""
        with self._lock:
            return list(self._tail)[-n:]

    def first_crash(self, settle: float = 2.0) -> Crash | None:
        """The first crash seen, after waiting up to ``settle`` seconds for its report to be complete."""
        if not self.crashes:
            return None
        deadline = time.monotonic() + settle
        while not self.crashes[0].complete and not self.eof.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.crashes[0]

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reader to see EOF (QEMU gone) and close the log."""
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._log.close()
