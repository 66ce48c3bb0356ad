"""One QEMU process: launch (QEMU dies with pagelab), console watcher, QMP monitor, shutdown.

QMP is ``qemu.qmp.QMPClient`` on a private event-loop thread, so its events (``GUEST_PANICKED``)
are handled as they arrive while the caller's threads block on SSH channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient, QMPError

from pagelab.errors import InfraError
from pagelab.guest.console import ConsoleWatcher
from pagelab.guest.qemu import QemuConfig
from pagelab.procs import popen_tied

_T = TypeVar("_T")
QEMU_START_TIMEOUT = 20.0


class PortInUse(InfraError):
    """QEMU could not bind the SSH forward's host port (another process took it): retry another."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (QEMU may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QmpMonitor:
    """A QMP connection served by its own asyncio loop thread; records events, flags guest panics."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pagelab-qmp", daemon=True)
        self._client = QMPClient("pagelab")
        self._listener: Any = None
        self.events: list[dict[str, Any]] = []
        self.panicked = threading.Event()
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop).result(timeout + 1)

    def connect(self, path: Path, timeout: float = 5.0) -> None:
        """Connect and negotiate. Raises QMPError/OSError/TimeoutError when QEMU is not there yet."""
        self._call(self._client.connect(str(path)), timeout)
        self._listener = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)

    async def _listen(self) -> None:
        async for event in self._client.events:
            self.events.append(dict(event))
            if event["event"] == "GUEST_PANICKED":
                self.panicked.set()

    def execute(self, command: str, arguments: dict[str, object] | None = None, timeout: float = 5.0) -> Any:
        """Run a QMP command. Raises qemu.qmp.QMPError (or TimeoutError) on failure."""
        return self._call(self._client.execute(command, arguments), timeout)

    def close(self) -> None:
        """Disconnect and stop the loop thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._listener is not None:
            self._listener.cancel()
        with contextlib.suppress(Exception):
            self._call(self._client.disconnect(), 3.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(3.0)
        if not self._thread.is_alive():
            self._loop.close()


class Machine:
    """A running QEMU: ``start()`` launches it and returns once QMP answers; ``stop()`` ends it."""

    def __init__(self, config: QemuConfig, run_dir: Path, console_log: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.console_log = console_log
        self.stderr_path = run_dir / f"qemu-{config.accel}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: ConsoleWatcher | None = None
        self.qmp = QmpMonitor()
        self.started_at = 0.0
        self.qmp_ready_at = 0.0

    def start(self, timeout: float = QEMU_START_TIMEOUT) -> None:
        """Launch QEMU and wait for its QMP socket (it opens after the network backends are set up).

        Raises PortInUse when the SSH forward port was taken, InfraError if QEMU exits or hangs.
        """
        argv = self.config.command()
        stderr = open(self.stderr_path, "wb")
        self.started_at = time.monotonic()
        try:
            # SIGKILL when pagelab dies, even by SIGKILL: QEMU must never outlive it (pagelab/procs.py).
            self.proc = popen_tied(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C goes to pagelab, which shuts QEMU down in order
            )
        except OSError as err:
            raise InfraError(f"cannot start {argv[0]}: {err.strerror}") from None
        finally:
            stderr.close()
        assert self.proc.stdout is not None
        self.console = ConsoleWatcher(self.proc.stdout.fileno(), self.console_log).start()
        deadline = self.started_at + timeout
        while True:
            if self.proc.poll() is not None:
                self._raise_exited()
            if self.config.qmp_socket.exists():
                try:
                    self.qmp.connect(self.config.qmp_socket, timeout=2.0)
                    self.qmp_ready_at = time.monotonic()
                    return
                except (QMPError, OSError, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise InfraError(f"QEMU did not open its QMP socket within {timeout:.0f} s ({self.stderr_tail()})")
            time.sleep(0.02)

    def _raise_exited(self) -> None:
        assert self.proc is not None
        self.proc.wait()
        tail = self.stderr_tail()
        if "host forwarding" in tail or "Address already in use" in tail:
            raise PortInUse(f"SSH forward port {self.config.ssh_port} is taken: {tail}")
        raise InfraError(f"QEMU exited with status {self.proc.returncode} at start: {tail or 'no message'}")

    def stderr_tail(self, lines: int = 3) -> str:
        """QEMU's last stderr lines, joined on one line (for error messages)."""
        try:
            text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def stderr_summary(self) -> str:
        """The one QEMU stderr line that says what went wrong (the first error line, else the last)."""
        try:
            lines = [ln.strip() for ln in self.stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        chosen = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
        return chosen.removeprefix(f"{self.config.binary}: ").removeprefix("error: ")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """QMP ``quit``, then SIGTERM, then SIGKILL; always reaps QEMU and stops the helper threads."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit", timeout=2.0)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.qmp.close()
        if self.console is not None:
            self.console.join()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
