"""Process plumbing shared by the stages: signals that unwind like Ctrl-C.

CI cancels a job with SIGTERM (then SIGKILL after a grace period); a user presses Ctrl-C. Both must
unwind the same way, through every ``finally`` (QEMU quit, make killed, partial files removed), so
that the run's artifacts are written and pagelab exits ``128 + N`` (the shell's convention for "killed
by signal N", which CI shows as cancelled rather than failed).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

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
