"""A live guest: boot (accelerator by proof), wait for SSH, run commands, watch for crashes, clean up.

``with Guest(kernel, image, options, ui) as guest:`` boots on enter and, on exit (normal, error,
Ctrl-C or crash), syncs the guest if it can, quits QEMU and removes the private run directory
(unless ``keep``). QEMU also dies with pagelab if pagelab is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pagelab.errors import GuestCrash, InfraError, UsageError
from pagelab.guest.keys import Keys, ensure_keys
from pagelab.guest.machine import Machine, PortInUse, free_port
from pagelab.guest.qemu import (
    BOOT_TIMEOUT,
    HOST_GATEWAY,
    KVM_PROOF_DEADLINE,
    AccelVerdict,
    QemuConfig,
    kvm_usable,
    load_verdict,
    parse_memory,
    save_verdict,
    verdict_path,
)
from pagelab.guest.ssh import CommandResult, HostKeyMismatch, Sink, SSHSession
from pagelab.settings import DEFAULT_CPUS, DEFAULT_MEMORY
from pagelab.settings import check as check_setting
from pagelab.ui import UI, default_ui

if TYPE_CHECKING:
    from pagelab.settings import Settings

PORT_ATTEMPTS = 8


class BuiltKernel(Protocol):
    """What Guest needs from pagelab.kernel.build.BuildResult."""

    bzimage: Path
    kernel_version: str


class BootTimeout(InfraError):
    """The guest did not reach SSH-ready in time (exit 4); carries the last console lines."""

    def __init__(self, message: str, console_tail: list[str]) -> None:
        self.console_tail = console_tail
        lines = "\n".join(f"  | {line}" for line in console_tail) or "  | (no console output)"
        super().__init__(f"{message}; last console lines:\n{lines}")


class _KvmUnproven(Exception):
    """Internal: KVM did not prove itself within the deadline (reason in args[0])."""


@dataclass
class GuestOptions:
    """How to boot: memory, vCPUs, accelerator, extra kernel arguments, timeouts, where logs go."""

    memory: str = DEFAULT_MEMORY
    cpus: int = DEFAULT_CPUS
    accel: str = "auto"  # auto | kvm | tcg
    append: list[str] = field(default_factory=list)
    timeout: float | None = None  # boot timeout (launch to SSH-ready); None: per-accelerator default
    keep: bool = False  # keep the run directory (console log, QEMU stderr, QMP socket)
    console_log: Path | None = None  # write the console here (e.g. an artifact dir) instead of the run dir
    qemu_args: list[str] = field(default_factory=list)
    kvm_proof_deadline: float = KVM_PROOF_DEADLINE
    run_dir_parent: Path | None = None
    # Bulk stdout of run_stream/stream over plain TCP to the host's loopback instead of the SSH
    # channel (the guest's software crypto is the bottleneck under TCG); off = SSH channel only.
    direct_streams: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> GuestOptions:
        """The guest stage's settings (``pagelab/settings.py``); ``--append`` values are split like a shell.

        ``--kernel`` and ``--upload`` are for the caller (what to boot, what to copy in after boot).
        Raises UsageError for malformed values.
        """
        values = settings.stage_values("guest")
        for name, value in values.items():
            check_setting(name, value)
        opts = cls(
            memory=values["memory"],
            cpus=values["cpus"],
            accel=values["accel"],
            append=[word for item in values["append"] for word in shlex.split(item)],
            timeout=values["timeout"],
            keep=values["keep"],
        )
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raises UsageError for a bad memory size, vCPU count, accelerator or timeout."""
        for name in ("memory", "cpus", "accel", "timeout"):
            check_setting(name, getattr(self, name))


def sweep_stale_run_dirs(parent: Path | None = None) -> list[Path]:
    """Remove run directories whose pagelab process is gone (left by SIGKILL); returns them."""
    removed = []
    for run_dir in Path(parent or tempfile.gettempdir()).glob("pagelab-run-*"):
        try:
            if run_dir.lstat().st_uid != os.getuid():
                continue  # another user's: never ours to remove
            pid = int((run_dir / "pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


def bzimage_version(path: Path) -> str | None:
    """The kernel release in a bzImage's setup header (``kernel_version`` field), or None if absent."""
    try:
        with open(path, "rb") as f:
            header = f.read(0x210)
            if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
                return None
            (offset,) = struct.unpack_from("<H", header, 0x20E)
            if offset == 0:
                return None
            f.seek(offset + 0x200)
            raw = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    return raw.split()[0] if raw.split() else None


class Guest:
    """A booted guest reachable over SSH. See the module docstring for the lifecycle.

    ``kernel`` is a bzImage path or a BuildResult; ``image`` the initramfs from build_image.
    """

    def __init__(
        self,
        kernel: Path | str | BuiltKernel,
        image: Path | str,
        options: GuestOptions | None = None,
        ui: UI | None = None,
        *,
        keys: Keys | None = None,
    ) -> None:
        if isinstance(kernel, (str, Path)):
            self.bzimage = Path(kernel)
            self._built_version: str | None = None
        else:
            self.bzimage = Path(kernel.bzimage)
            self._built_version = kernel.kernel_version
        self.image = Path(image)
        self.options = options or GuestOptions()
        self.options.validate()
        self.ui = ui or default_ui()
        self._warnings_reported = 0  # kernel WARNINGs already reported by check_crash
        self.keys = keys or ensure_keys()
        self.accel = ""
        self.accel_reason = ""
        self.timings: dict[str, float] = {}
        self.run_dir: Path | None = None
        self.console_log: Path | None = None
        self._machine: Machine | None = None
        self._ssh: SSHSession | None = None
        for path, what in ((self.bzimage, "kernel"), (self.image, "image")):
            if not path.is_file():
                raise UsageError(f"{what} {path}: not a file")

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Guest:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Boot and connect. Raises GuestCrash (3), BootTimeout or InfraError (4)."""
        parent = self.options.run_dir_parent
        sweep_stale_run_dirs(parent)
        self.run_dir = Path(tempfile.mkdtemp(prefix="pagelab-run-", dir=parent))  # mode 0700
        (self.run_dir / "pid").write_text(f"{os.getpid()}\n")
        self.console_log = self.options.console_log or self.run_dir / "console.log"
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.console_log.write_text("")
        t0 = time.monotonic()
        accel = self._choose_accel()
        if accel == "kvm":
            try:
                self._boot("kvm", proof=self.options.kvm_proof_deadline)
                if self.options.accel == "auto":
                    save_verdict(AccelVerdict("kvm", "the guest printed on the console under KVM"))
            except _KvmUnproven as why:
                if self.options.accel == "kvm":
                    raise InfraError(f"--accel kvm: {why.args[0]}") from None
                path = save_verdict(AccelVerdict("tcg", str(why.args[0])))
                self.ui.warn(f"KVM does not work here ({why.args[0]}): using TCG (verdict saved in {path})")
                self.timings["kvm_probe"] = time.monotonic() - t0
                self.accel_reason = str(why.args[0])
                # Keep the failed probe's console apart: the log is the real boot's.
                shutil.copyfile(self.console_log, self.run_dir / "console-kvm-probe.log")
                self.console_log.write_text("")
                accel = "tcg"
        if accel == "tcg":
            self._boot("tcg", proof=None)
        self.timings["launch_to_ssh"] = time.monotonic() - t0

    def _choose_accel(self) -> str:
        requested = self.options.accel
        if requested == "tcg":
            self.accel_reason = "requested"
            return "tcg"
        why = kvm_usable()
        if requested == "kvm":
            if why:
                raise InfraError(f"--accel kvm: {why}")
            return "kvm"
        if why:
            self.accel_reason = f"KVM unavailable ({why})"
            self.ui.warn(f"{self.accel_reason}: using TCG")
            return "tcg"
        verdict = load_verdict()
        if verdict is not None and verdict.accel == "tcg":
            self.accel_reason = f"KVM failed its probe on this host earlier: {verdict.reason}"
            self.ui.info(f"accelerator: TCG; {self.accel_reason} (delete {verdict_path()} to probe again)")
            return "tcg"
        return "kvm"

    def _boot(self, accel: str, proof: float | None) -> None:
        assert self.run_dir is not None and self.console_log is not None
        for _attempt in range(PORT_ATTEMPTS):
            config = QemuConfig(
                kernel=self.bzimage,
                initrd=self.image,
                accel=accel,
                ssh_port=free_port(),
                qmp_socket=self.run_dir / "qmp.sock",
                memory_mib=parse_memory(self.options.memory),
                cpus=self.options.cpus,
                append=list(self.options.append),
                extra_args=list(self.options.qemu_args),
            )
            config.qmp_socket.unlink(missing_ok=True)
            machine = Machine(config, self.run_dir, self.console_log)
            self._machine = machine
            try:
                machine.start()
                break
            except PortInUse:
                machine.stop()
                self._machine = None
                continue
            except InfraError:
                if proof is not None:
                    machine.stop()
                    self._machine = None
                    raise _KvmUnproven(f"QEMU failed under KVM: {machine.stderr_summary() or 'no message'}") from None
                raise
        else:
            raise InfraError(f"no free port for the SSH forward after {PORT_ATTEMPTS} attempts")
        self.accel = accel
        try:
            self._wait_ready(machine, proof)
        except _KvmUnproven:
            machine.stop()
            self._machine = None
            raise
        self._connect(machine)

    def _boot_timeout(self) -> float:
        return self.options.timeout if self.options.timeout is not None else BOOT_TIMEOUT[self.accel]

    def _wait_ready(self, machine: Machine, proof: float | None) -> None:
        console = machine.console
        assert console is not None
        timeout = self._boot_timeout()
        deadline = machine.started_at + timeout
        while not console.ready.is_set():
            if console.crashed.is_set() or machine.qmp.panicked.is_set():
                self.check_crash()
            if console.setup_failed.is_set():
                raise BootTimeout(f"guest set-up failed: {console.setup_failure}", console.tail(15))
            if not machine.alive():
                console.eof.wait(2.0)
                self.check_crash()
                if proof is not None and not console.first_output.is_set():
                    raise _KvmUnproven(f"QEMU exited under KVM: {machine.stderr_summary() or 'no message'}")
                raise BootTimeout(f"QEMU exited during boot ({machine.stderr_tail()})", console.tail(15))
            now = time.monotonic()
            if proof is not None and not console.first_output.is_set() and now > machine.started_at + proof:
                raise _KvmUnproven(f"no guest console output within {proof:g} s under KVM")
            if now > deadline:
                raise BootTimeout(f"guest not ready within {timeout:g} s ({self.accel})", console.tail(15))
            console.ready.wait(0.05)
        self.check_crash()
        if console.setup_failed.is_set():  # init reports, then still says ready: no SSH will come
            raise BootTimeout(f"guest set-up failed: {console.setup_failure}", console.tail(15))

    def _connect(self, machine: Machine) -> None:
        console = machine.console
        assert console is not None
        gateway = HOST_GATEWAY if self.options.direct_streams else None
        ssh = SSHSession(machine.config.ssh_port, self.keys, check=self._check_alive, direct_gateway=gateway)
        remaining = max(5.0, machine.started_at + self._boot_timeout() - time.monotonic())
        try:
            ssh.connect(timeout=remaining)
        except HostKeyMismatch:
            raise
        except InfraError as err:
            raise BootTimeout(str(err), console.tail(15)) from None
        self._ssh = ssh
        now = time.monotonic()
        t_init = console.times.get("init", now)
        t_ready = console.times.get("ready", now)
        up_init = console.guest_uptime.get("init", 0.0)
        up_ready = console.guest_uptime.get("ready", up_init)
        # The guest clock starts early in start_kernel; before it: QEMU start, firmware, decompression.
        self.timings.update(
            qemu_start=max(0.0, t_init - machine.started_at - up_init),
            kernel_boot=up_init,
            init=max(0.0, up_ready - up_init),
            sshd=max(0.0, now - t_ready),
            boot_total=now - machine.started_at,
        )

    def close(self) -> None:
        """Sync the guest (if healthy), quit QEMU, remove the run directory unless ``keep``."""
        try:
            if self._ssh is not None:
                healthy = self._machine is not None and self._machine.alive() and not self._crash_seen()
                if healthy:
                    with contextlib.suppress(Exception):
                        self._ssh.run("sync", timeout=15)
                self._ssh.close()
                self._ssh = None
        finally:
            if self._machine is not None:
                self._machine.stop()
            if self.run_dir is not None:
                if self.options.keep:
                    (self.run_dir / "pid").unlink(missing_ok=True)  # kept on purpose: not for the sweeper
                    self.ui.info(f"run directory kept: {self.run_dir}")
                else:
                    shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- crash checks -----------------------------------------------------------------------------
    def _crash_seen(self) -> bool:
        m = self._machine
        return m is not None and m.console is not None and (m.console.crashed.is_set() or m.qmp.panicked.is_set())

    def check_crash(self) -> None:
        """Raise GuestCrash if the console showed a crash (or QEMU reported a guest panic).

        A kernel WARNING is not a crash without panic_on_warn: it is reported once, loudly.
        """
        m = self._machine
        if m is not None and m.console is not None:
            fresh = m.console.warnings[self._warnings_reported :]
            self._warnings_reported += len(fresh)
            for w in fresh:
                self.ui.warn(f"guest kernel {w.title} (not fatal without panic_on_warn; see {m.console.log_path})")
        if m is None or m.console is None or not self._crash_seen():
            return
        if not m.console.crashed.is_set():
            m.console.crashed.wait(2.0)  # pvpanic fired: give the console a moment to name it
        # After GUEST_PANICKED the guest is paused: nothing more will come, so don't wait long.
        crash = m.console.first_crash(settle=0.3 if m.qmp.panicked.is_set() else 2.0)
        if crash is not None:
            raise GuestCrash(crash.kind, crash.title, crash.excerpt)
        raise GuestCrash("panic", "guest reported a panic (pvpanic GUEST_PANICKED)", "\n".join(m.console.tail(20)))

    def _check_alive(self) -> None:
        self.check_crash()
        m = self._machine
        if m is not None and not m.alive():
            assert m.console is not None
            m.console.eof.wait(2.0)
            self.check_crash()
            tail = "\n".join(f"  | {line}" for line in m.console.tail(10))
            raise InfraError(f"QEMU exited unexpectedly ({m.stderr_tail() or 'no message'}); console:\n{tail}")

    @property
    def crashes(self) -> list[Any]:
        """Every crash report seen on the console so far (kind, title, lines)."""
        m = self._machine
        return list(m.console.crashes) if m is not None and m.console is not None else []

    @property
    def kernel_version(self) -> str | None:
        """``uname -r`` of the running guest (from its readiness line), else the build's or bzImage's."""
        m = self._machine
        if m is not None and m.console is not None and m.console.kernel_release:
            return m.console.kernel_release
        return self._built_version or bzimage_version(self.bzimage)

    def status(self) -> str:
        """QEMU's run state from QMP ``query-status``: running, paused, guest-panicked, shutdown, …

        Raises InfraError when QEMU is not running or does not answer.
        """
        m = self._machine
        if m is None or not m.alive():
            raise InfraError("guest is not running")
        try:
            return str(m.qmp.execute("query-status")["status"])
        except Exception as err:  # qemu.qmp errors, timeouts, a closed socket
            raise InfraError(f"QMP query-status failed: {err}") from None

    @property
    def qmp_events(self) -> list[dict[str, Any]]:
        """QMP events received so far (``{"event": "GUEST_PANICKED", "data": …, "timestamp": …}``)."""
        return list(self._machine.qmp.events) if self._machine is not None else []

    @property
    def ssh_port(self) -> int | None:
        return self._machine.config.ssh_port if self._machine is not None else None

    # -- commands ---------------------------------------------------------------------------------
    def _session(self) -> SSHSession:
        if self._ssh is None:
            raise InfraError("guest is not running (use `with Guest(...) as guest:`)")
        return self._ssh

    def run(self, cmd: str, timeout: float | None = None) -> CommandResult:
        """Run a shell command in the guest. Raises GuestCrash, CommandTimeout, InfraError."""
        result = self._session().run(cmd, timeout)
        self.check_crash()
        return result

    def run_stream(self, cmd: str, sink: Sink, timeout: float | None = None, *, stderr_sink: Sink | None = None) -> int:
        """Run a command, its stdout fed to ``sink`` in chunks; returns its status (thread-safe)."""
        status = self._session().run_stream(cmd, sink, timeout, stderr_sink=stderr_sink)
        self.check_crash()
        return status

    def stream(self, path: str, sink: Sink, timeout: float | None = None) -> None:
        """Stream a guest file to ``sink`` without holding it. Raises InfraError if unreadable."""
        self._session().stream(path, sink, timeout)
        self.check_crash()

    def upload(self, src: Path | str, dst: str, timeout: float | None = None) -> str:
        """Copy a host file into the guest; returns the guest path. Raises UsageError, InfraError."""
        src = Path(src)
        if not src.is_file():
            raise UsageError(f"--upload {src}: not a file")
        path = self._session().upload(src, dst, timeout)
        self.check_crash()
        return path

    def shell(self, cmd: str | None = None) -> int:
        """Interactive shell (or command) on this terminal with a real PTY; returns its status."""
        status = self._session().shell(cmd)
        self.check_crash()
        return status
