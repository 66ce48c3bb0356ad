"""Process plumbing shared by the stages: signals that unwind like Ctrl-C, children that die with
pagelab, tool versions, and how a failed build step is reported.

CI cancels a job with SIGTERM (then SIGKILL after a grace period); a user presses Ctrl-C. Both must
unwind the same way, through every ``finally`` (QEMU quit, make killed, partial files removed), so
that the run's artifacts are written and pagelab exits ``128 + N`` (the shell's convention for "killed
by signal N", which CI shows as cancelled rather than failed).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import Any

from pagelab.errors import BuildError

#: The signals that unwind pagelab like Ctrl-C.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal asked pagelab to stop: the CLI exits ``128 + signum`` once everything is cleaned up."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_of(err: BaseException) -> int:
    """The signal number behind an interrupt (Python's own Ctrl-C KeyboardInterrupt is SIGINT)."""
    return err.signum if isinstance(err, Interrupted) else int(signal.SIGINT)


@contextlib.contextmanager
def signals_interrupt(signals: tuple[signal.Signals, ...] = INTERRUPTS) -> Iterator[None]:
    """Within the block, SIGTERM (and SIGINT) raise Interrupted in the main thread; restored after.

    Only the first signal raises: a second one (CI's repeated TERM, an impatient Ctrl-C) must not
    cut short the clean-up the first one started, which is bounded by its own timeouts. Outside the
    main thread (where Python cannot install handlers) the block runs with signals untouched.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if _state["fired"]:
            return
        _state["fired"] = signum
        if not _state["deferred"]:
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            # The outermost block is done: the next one starts afresh.
            _state["fired"] = _state["deferred"] = 0
        for sig, old in previous.items():
            signal.signal(sig, old)


# Shared by nested blocks (pagelab run → kernel build): one interrupt per outermost block.
_state = {"depth": 0, "fired": 0, "deferred": 0}


def defer_interrupts() -> None:
    """Inside signals_interrupt: from now on a signal is only recorded (see pending_interrupt).

    For the last step that must not be cut short, such as writing the report of a finished run.
    """
    _state["deferred"] = 1


def pending_interrupt() -> Interrupted | None:
    """The interrupt recorded by the current block, if a signal came."""
    return Interrupted(_state["fired"]) if _state["fired"] else None


# -- children that die with pagelab ------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child of a threaded parent must not dlopen (the loader's locks may be
# held by a thread that does not exist in the child).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(parent: int, signum: int) -> None:
    """preexec_fn: the kernel sends ``signum`` to the child when pagelab dies, even by SIGKILL."""
    _prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:  # pagelab died between fork and prctl
        os._exit(1)


class _Launcher:
    """Forks children from one daemon thread that lives as long as pagelab.

    PR_SET_PDEATHSIG is tied to the *thread* that forked, not the process: a child forked from a
    short-lived thread (a thread pool, a test) would be killed when that thread ended. This thread only
    ends with the process, which is exactly when the children should die.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Future[subprocess.Popen[Any]], list[str], dict[str, Any]]]
        self._requests = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv, **kwargs) run on the launcher thread (exceptions re-raised here)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="pagelab-launcher", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[Any]] = Future()
        self._requests.put((done, argv, kwargs))
        return done.result()

    def _serve(self) -> None:
        while True:
            done, argv, kwargs = self._requests.get()
            try:
                done.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as err:
                done.set_exception(err)


_launcher = _Launcher()


def popen_tied(argv: Sequence[str], *, death_signal: int = signal.SIGKILL, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **kwargs)`` whose child gets ``death_signal`` when pagelab dies, even by SIGKILL.

    The child is forked from the launcher thread (see _Launcher), so it does not die with the thread
    that called this. ``kwargs`` must not set ``preexec_fn``. Raises what Popen raises (OSError).
    """
    parent = os.getpid()
    return _launcher.popen(list(argv), preexec_fn=lambda: _die_with_parent(parent, death_signal), **kwargs)


# -- tool versions -------------------------------------------------------------------------------------
def tool_version(argv: Sequence[str], timeout: float = 20.0) -> str | None:
    """The first line ``argv`` (``["gcc", "--version"]``) prints, or None when the tool is missing or fails."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


# -- failed steps ----------------------------------------------------------------------------------------
#: Lines of a failed step's output shown in its error (the full log is named beside them).
FAILED_TAIL_LINES = 40


def step_failed(what: str, status: int, *, log: Path | None = None, output: str = "", hint: str = "") -> BuildError:
    """The error for a build step (make, gcc, tar, …) that exited with ``status``, worded the same everywhere.

    ``WHAT failed (exit N)[; HINT]; last K lines:`` then the last FAILED_TAIL_LINES lines of ``log``
    (or of ``output`` when there is no log file), then ``full log: LOG``. The caller raises it.
    """
    if log is not None:
        try:
            output = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            output = ""
    lines = output.strip().splitlines()[-FAILED_TAIL_LINES:]
    message = f"{what} failed (exit {status})" + (f"; {hint}" if hint else "")
    message += f"; last {len(lines)} lines:\n" + "\n".join(lines) if lines else "; no output"
    if log is not None:
        message += f"\nfull log: {log}"
    return BuildError(message)
