"""SIGTERM unwinds like Ctrl-C (pagelab.procs): real signals to this process."""

from __future__ import annotations

import os
import signal

import pytest

from pagelab.procs import Interrupted, defer_interrupts, pending_interrupt, signal_of, signals_interrupt


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_interrupted_naming_it_and_handlers_are_restored(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(Interrupted) as caught, signals_interrupt():
        os.kill(os.getpid(), sig)
        for _ in range(10**6):
            pass
    assert caught.value.signum == sig and caught.value.exit_code == 128 + sig
    assert str(caught.value) == f"interrupted by {sig.name}"
    assert signal.getsignal(sig) is before


def test_a_second_signal_does_not_cut_the_clean_up_short() -> None:
    cleaned = []
    with pytest.raises(Interrupted), signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):
                pass
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # CI's second TERM, during the clean-up
            for _ in range(10**6):
                pass
            cleaned.append(True)
    assert cleaned == [True]


def test_a_deferred_signal_is_recorded_not_raised() -> None:
    with signals_interrupt():
        defer_interrupts()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):
            pass
        late = pending_interrupt()
    assert late is not None and late.signum == signal.SIGTERM
    assert pending_interrupt() is None  # the block is over: the next one starts afresh


def test_plain_ctrl_c_counts_as_sigint() -> None:
    assert signal_of(KeyboardInterrupt()) == signal.SIGINT
    assert signal_of(Interrupted(signal.SIGTERM)) == signal.SIGTERM
