"""SSH to the guest with paramiko: pinned host key, key-only auth, commands, streaming, uploads, a shell.

The guest's host key is the one pagelab generated (pagelab/guest/keys.py) and the only one accepted
(RejectPolicy + that key in the known hosts); there are no passwords. Output streams through
large channel windows in big chunks to a sink callable, never held whole; each call uses its own
channel, so several can run at once from different threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from pagelab.errors import InfraError
from pagelab.guest.keys import Keys

# Big windows let the guest keep sending while the host writes; chunks are read up to this size.
WINDOW_SIZE = 32 << 20
MAX_PACKET = 1 << 15
CHUNK = 1 << 20
POLL = 0.2
LOST_GRACE = 2.0  # seconds check() gets to explain a lost connection (see SSHSession._lost)
# Seconds a connection to the direct-stream listener gets to send the token (SSHSession._accept_guest). The
# guest's sh starts and prints it at once, but ten TCG guests on two host cores can take seconds to get there.
TOKEN_WAIT = 10.0

Sink = Callable[[bytes], object]

# paramiko logs every refused early connection attempt with a traceback; errors reach us as exceptions.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CommandResult:
    """A finished guest command: exit status and its decoded output."""

    status: int
    stdout: str
    stderr: str


class HostKeyMismatch(InfraError):
    """The guest presented a host key other than the pinned one: refused, nothing was sent."""


class CommandTimeout(InfraError):
    """A guest command ran past its timeout (exit 4); the partial output is kept."""

    def __init__(self, command: str, timeout: float, stdout: str = "", stderr: str = "") -> None:
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"guest command timed out after {timeout:g} s: {command}")


def _no_check() -> None:
    return None


def exit_status_of_signal(name: str) -> int:
    """The shell's status for a command killed by signal ``name`` (``KILL`` → 137); 255 if unknown."""
    sig = getattr(signal.Signals, f"SIG{name}", None)
    return 128 + int(sig) if sig is not None else 255


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko's channel-request handler, plus RFC 4254 6.10 ``exit-signal``.

    paramiko 5.1 ignores ``exit-signal``: a command the guest killed (the OOM killer, ``kill -9``)
    then ends with status -1, shown as 255. dropbear sends the signal's name (svr-chansession.c,
    send_exitsignalstatus); the status becomes 128 + N, as a shell reports it.
    """
    start = m.packet.tell()
    if m.get_text() != "exit-signal":
        m.packet.seek(start)
        paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]  # private: no public hook
        return
    m.get_boolean()  # want_reply: false for exit-signal
    chan.exit_status = exit_status_of_signal(m.get_text())
    chan.status_event.set()


def _discard(_chunk: bytes) -> None:
    return None


class SSHSession:
    """One authenticated SSH transport to the guest.

    ``check`` is called while waiting on the guest (and may raise, e.g. GuestCrash or "QEMU
    died"), so no call blocks forever on a dead guest.
    """

    def __init__(
        self,
        port: int,
        keys: Keys,
        *,
        host: str = "127.0.0.1",
        check: Callable[[], None] = _no_check,
        direct_gateway: str | None = None,
    ):
        self.port = port
        self.host = host
        self.keys = keys
        self.check = check
        # The host as the guest sees it (QEMU user networking: 10.0.2.2 is the host's loopback).
        # When set, bulk stdout comes over a plain TCP connection (see _run_stream_direct).
        self.direct_gateway = direct_gateway
        # A pool of connections, one per concurrent command. dropbear (2022.83) serves all channels of
        # a connection in one process, where overlapping channels trip a race in its check_close()
        # ("Failed assertion (common-channel.c:705): !channel->sent_close", mkj/dropbear#321, #173)
        # that kills the whole connection; channels on separate connections never overlap.
        self._lock = threading.Lock()
        self._all: list[paramiko.SSHClient] = []
        self._idle: list[paramiko.SSHClient] = []

    # -- connection --------------------------------------------------------------------------------
    def connect(self, timeout: float = 30.0) -> None:
        """Connect, verify the pinned host key, authenticate with the client key; retry until ``timeout``.

        Raises HostKeyMismatch if the guest's key is not the pinned one, InfraError on timeout.
        """
        client = self._new_client(timeout)
        with self._lock:
            self._all.append(client)
            self._idle.append(client)

    def _new_client(self, timeout: float) -> paramiko.SSHClient:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self.check()
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            pinned = self.keys.pinned_host_key()
            client.get_host_keys().add(f"[{self.host}]:{self.port}", pinned.get_name(), pinned)
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username="root",
                    pkey=self.keys.load_client_key(),
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=5.0,
                    banner_timeout=10.0,
                    auth_timeout=10.0,
                )
            except paramiko.BadHostKeyException as err:
                client.close()
                raise HostKeyMismatch(
                    f"guest SSH host key {err.key.get_fingerprint().hex()} is not the pinned key "
                    f"{err.expected_key.get_fingerprint().hex()} ({self.keys.directory}): refusing to connect"
                ) from None
            except paramiko.AuthenticationException as err:
                client.close()
                raise InfraError(
                    f"guest refused pagelab's client key {self.keys.client_key} ({err}): "
                    "was the image built with other keys?"
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as err:
                # QEMU's forward accepts before the guest listens: resets and EOFs are expected early.
                client.close()
                last = err
                time.sleep(0.05)
                continue
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(15)
            # attr-defined (twice): paramiko's private dispatch table; it has no public hook for channel requests.
            table = transport._channel_handler_table  # type: ignore[attr-defined]
            transport._channel_handler_table = {**table, MSG_CHANNEL_REQUEST: _channel_request}  # type: ignore[attr-defined]
            return client
        raise InfraError(f"SSH to guest 127.0.0.1:{self.port} failed for {timeout:.0f} s: {last}")

    def close(self) -> None:
        """Close every connection of the session (idempotent)."""
        with self._lock:
            clients, self._all, self._idle = self._all, [], []
        for client in clients:
            client.close()

    def _acquire(self) -> paramiko.SSHClient:
        with self._lock:
            if not self._all:
                raise InfraError("SSH session is not connected")
            while self._idle:
                client = self._idle.pop()
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                self._all.remove(client)
                client.close()
        self.check()
        try:
            client = self._new_client(timeout=20.0)
        except InfraError as err:
            raise InfraError(f"SSH connection to the guest was lost and could not be re-opened: {err}") from None
        with self._lock:
            self._all.append(client)
        return client

    def _release(self, client: paramiko.SSHClient) -> None:
        transport = client.get_transport()
        with self._lock:
            if client in self._all and transport is not None and transport.is_active():
                self._idle.append(client)
                return
            if client in self._all:
                self._all.remove(client)
        client.close()

    @contextlib.contextmanager
    def _channel(self) -> Iterator[paramiko.Channel]:
        """A new channel on a connection no other command is using (see ``__init__``)."""
        client = self._acquire()
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                self._lost("SSH connection to the guest was lost")
            try:
                chan = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET, timeout=10.0)
            except (paramiko.SSHException, OSError, EOFError) as err:  # a reset when QEMU has just died
                self._lost(f"SSH channel to the guest failed: {err or type(err).__name__}")
            try:
                yield chan
            finally:
                chan.close()
        finally:
            self._release(client)

    def _status(self, chan: paramiko.Channel, command: str) -> int:
        """The command's exit status. Raises InfraError (or what ``check`` raises) if none came.

        paramiko closes a channel whose connection died (QEMU killed) with status -1: the command did
        not finish, so it must not pass for one that exited.
        """
        status = chan.recv_exit_status()
        if status < 0:
            self._lost(f"SSH channel closed without an exit status: {command}")
        return status

    def _lost(self, message: str) -> NoReturn:
        """The connection failed: raise what ``check`` finds (QEMU gone, a crash), else InfraError(message).

        The connection usually drops a moment before QEMU is seen to have exited, so check() is given
        a short grace to find the real cause.
        """
        deadline = time.monotonic() + LOST_GRACE
        while True:
            self.check()
            if time.monotonic() >= deadline:
                raise InfraError(message)
            time.sleep(0.1)

    def _exec(self, chan: paramiko.Channel, command: str) -> None:
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as err:  # EOFError: the connection just closed
            self._lost(f"SSH exec in the guest failed ({err or type(err).__name__}): {command}")

    # -- commands ----------------------------------------------------------------------------------
    def run_stream(
        self,
        command: str,
        sink: Sink,
        timeout: float | None = None,
        *,
        stderr_sink: Sink | None = None,
        stdin: Path | None = None,
        direct: bool | None = None,
    ) -> int:
        """Run ``command``; feed its stdout to ``sink`` in chunks as they arrive; return its exit status.

        ``direct`` (default: on when the session has a ``direct_gateway``) carries stdout over a
        plain TCP connection instead of the SSH channel. Raises CommandTimeout past ``timeout``,
        InfraError if the connection drops, and whatever ``check`` raises (GuestCrash) while waiting.
        """
        if direct is None:
            direct = self.direct_gateway is not None
        if direct and stdin is None and self.direct_gateway is not None:
            return self._run_stream_direct(command, sink, timeout, stderr_sink or _discard)
        with self._channel() as chan:
            self._exec(chan, command)
            try:
                if stdin is not None:
                    self._send_file(chan, stdin)
                # EOF on stdin at once (like ssh -n): a command that reads stdin must not wait forever.
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException) as err:
                self._lost(f"SSH connection to the guest was lost ({err or type(err).__name__}): {command}")
            return self._pump(chan, command, sink, stderr_sink or _discard, timeout)

    def _run_stream_direct(self, command: str, sink: Sink, timeout: float | None, stderr_sink: Sink) -> int:
        """stdout over a TCP connection the guest opens to a one-shot listener on the host's loopback.

        Under TCG the guest's software AES and HMAC for the SSH channel are the bulk-transfer
        bottleneck; this path skips them (BENCHMARKS.md). The command, its stderr and its exit status
        still go through SSH. The guest proves itself with a random token sent over SSH, so another
        local process connecting to the port first is rejected. busybox ``nc -e`` execs the command
        only once connected, so if the guest cannot connect nothing ran and the SSH channel is used.
        """
        token = secrets.token_hex(16).encode()
        # stdin is empty, as on the SSH channel path (nc -e would make it the socket: a reader would hang).
        inner = f"exec </dev/null; printf %s {token.decode()}; {command}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            remote = f"exec nc {self.direct_gateway} {port} -e sh -c {shlex.quote(inner)}"
            deadline = None if timeout is None else time.monotonic() + timeout
            data: socket.socket | None = None
            early_stderr: list[bytes] = []  # nc's own complaints, before the command runs
            try:
                with self._channel() as chan:
                    self._exec(chan, remote)
                    chan.shutdown_write()
                    data_eof = False
                    while True:
                        if data is None:
                            data = self._accept_guest(listener, token)
                            if data is not None:
                                for early in early_stderr:
                                    stderr_sink(early)
                        if data is not None and not data_eof:
                            chunk: bytes | None  # None: nothing yet; b"": end of the stream
                            try:
                                chunk = data.recv(CHUNK)
                            except BlockingIOError:
                                chunk = None
                            if chunk:
                                sink(chunk)
                                if deadline is not None and time.monotonic() > deadline:
                                    raise CommandTimeout(command, timeout or 0.0)
                                continue
                            if chunk == b"":
                                data_eof = True
                        while chan.recv_stderr_ready():
                            err = chan.recv_stderr(CHUNK)
                            (early_stderr.append if data is None else stderr_sink)(err)
                        while chan.recv_ready():
                            sink(chan.recv(CHUNK))
                        if chan.exit_status_ready() and not chan.recv_stderr_ready():
                            if data is None and (data := self._accept_guest(listener, token)) is None:
                                if b"nc:" in b"".join(early_stderr):
                                    break  # busybox nc could not connect, so the command never ran
                                # Something else went wrong after the command may have run: never run it twice.
                                raise InfraError(
                                    f"direct stream for {command!r} lost (exit {chan.recv_exit_status()}): "
                                    + b"".join(early_stderr).decode(errors="replace").strip()[-300:]
                                )
                            if data_eof:
                                return self._status(chan, command)
                        if deadline is not None and time.monotonic() > deadline:
                            raise CommandTimeout(command, timeout or 0.0)
                        self.check()
                        watch: list[Any] = [chan, data if data is not None and not data_eof else listener]
                        select.select(watch, [], [], POLL)
            finally:
                if data is not None:
                    data.close()
        # No direct path from this guest (nc could not connect): the SSH channel from now on.
        self.direct_gateway = None
        return self.run_stream(command, sink, timeout, stderr_sink=stderr_sink)

    @staticmethod
    def _accept_guest(listener: socket.socket, token: bytes) -> socket.socket | None:
        """Accept the guest's data connection if it is waiting and sends the token; else None."""
        while True:
            try:
                conn, _addr = listener.accept()
            except BlockingIOError:
                return None
            conn.settimeout(TOKEN_WAIT)  # a stray client that sends nothing stalls us no longer than this
            got = b""
            try:
                while len(got) < len(token) and (part := conn.recv(len(token) - len(got))):
                    got += part
            except OSError:
                got = b""
            if got == token:
                conn.setblocking(False)
                return conn
            conn.close()  # not our guest: keep waiting for the real one

    def _send_file(self, chan: paramiko.Channel, path: Path) -> None:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                chan.sendall(chunk)

    def _pump(self, chan: paramiko.Channel, command: str, sink: Sink, stderr_sink: Sink, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = False
            while chan.recv_ready():
                sink(chan.recv(CHUNK))
                got = True
            while chan.recv_stderr_ready():
                stderr_sink(chan.recv_stderr(CHUNK))
                got = True
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if chan.exit_status_ready() and drained and (chan.eof_received or chan.closed):
                return self._status(chan, command)
            if got:
                continue
            if chan.closed and not chan.exit_status_ready():
                self._lost(f"SSH channel closed without an exit status: {command}")
            transport = chan.get_transport()
            if transport is None or not transport.is_active():
                self._lost(f"SSH connection to the guest was lost during: {command}")
            if deadline is not None and time.monotonic() > deadline:
                raise CommandTimeout(command, timeout or 0.0)
            self.check()
            select.select([chan], [], [], POLL)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command``; return its status and output (decoded, errors replaced).

        Raises CommandTimeout past ``timeout`` (with the partial output), InfraError, GuestCrash.
        """
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            status = self.run_stream(command, out.append, timeout, stderr_sink=err.append, direct=False)
        except CommandTimeout:
            raise CommandTimeout(command, timeout or 0.0, _text(out), _text(err)) from None
        return CommandResult(status, _text(out), _text(err))

    def stream(self, path: str, sink: Sink, timeout: float | None = None) -> None:
        """Stream a guest file to ``sink`` in chunks. Raises InfraError if the guest cannot read it."""
        err: list[bytes] = []
        command = f"cat -- {shlex.quote(path)}"
        if self.direct_gateway is not None:
            # Files like page_owner return one record per read(): coalesce them into big TCP writes
            # (measured ~1.4x faster than record-sized sends through QEMU's user network).
            command = f"set -o pipefail; {command} | dd obs=1M 2>/dev/null"
        status = self.run_stream(command, sink, timeout, stderr_sink=err.append)
        if status != 0:
            raise InfraError(f"guest: cannot read {path}: {_text(err).strip() or f'cat exited {status}'}")

    def upload(self, src: Path, dst: str, timeout: float | None = None) -> str:
        """Copy a host file into the guest (into ``dst`` if it is a directory); returns the guest path.

        Keeps the file's permission bits. Raises InfraError if the guest side fails.
        """
        src = Path(src)
        mode = f"{src.stat().st_mode & 0o7777:o}"
        script = (
            f"d={shlex.quote(dst)}; n={shlex.quote(src.name)}; "
            'case "$d" in */) mkdir -p "$d";; esac; [ -d "$d" ] && d="${d%/}/$n"; '
            f'mkdir -p "$(dirname "$d")" && cat > "$d" && chmod {mode} "$d" && echo "$d"'
        )
        out: list[bytes] = []
        err: list[bytes] = []
        status = self.run_stream(script, out.append, timeout, stderr_sink=err.append, stdin=src)
        if status != 0:
            raise InfraError(f"upload {src} -> guest:{dst} failed: {_text(err).strip() or f'status {status}'}")
        return _text(out).strip()

    # -- interactive shell -------------------------------------------------------------------------
    def shell(self, command: str | None = None) -> int:
        """An interactive session on this terminal (a real PTY, window size passed through).

        Without a TTY on stdin it runs with plain pipes. Returns the remote exit status.
        """
        with self._channel() as chan:
            return self._interact(chan, command)

    def _interact(self, chan: paramiko.Channel, command: str | None) -> int:
        stdin_fd = sys.stdin.fileno()
        stdout_fd = sys.stdout.fileno()
        is_tty = os.isatty(stdin_fd)
        restore = None
        old_winch = None
        try:
            if is_tty:
                import termios
                import tty

                cols, rows = os.get_terminal_size(stdin_fd)
                chan.get_pty(term=os.environ.get("TERM", "xterm"), width=cols, height=rows)
                restore = termios.tcgetattr(stdin_fd)
                tty.setraw(stdin_fd)

                def on_winch(_sig: int, _frame: object) -> None:
                    with contextlib.suppress(OSError):
                        c, r = os.get_terminal_size(stdin_fd)
                        chan.resize_pty(width=c, height=r)

                old_winch = signal.signal(signal.SIGWINCH, on_winch)
            if command is None:
                chan.invoke_shell()
            else:
                self._exec(chan, command)
            stdin_open = True
            while True:
                watch: list[Any] = [chan]  # a channel and a descriptor: select takes both
                if stdin_open:
                    watch.append(stdin_fd)
                try:
                    ready, _, _ = select.select(watch, [], [], POLL)
                except InterruptedError:
                    continue
                if chan in ready or chan.recv_ready() or chan.recv_stderr_ready():
                    while chan.recv_ready():
                        os.write(stdout_fd, chan.recv(CHUNK))
                    while chan.recv_stderr_ready():
                        os.write(sys.stderr.fileno(), chan.recv_stderr(CHUNK))
                if stdin_fd in ready:
                    data = os.read(stdin_fd, 4096)
                    if data:
                        chan.sendall(data)
                    else:
                        stdin_open = False
                        chan.shutdown_write()
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    return chan.recv_exit_status()
                self.check()
        finally:
            if restore is not None:
                import termios

                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, restore)
            if old_winch is not None:
                signal.signal(signal.SIGWINCH, old_winch)


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")
