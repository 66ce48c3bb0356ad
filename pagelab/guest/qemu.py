"""The QEMU command line, the kernel command line and the accelerator choice (with its cached verdict).

KVM may exist and not work (nested KVM aborts or hangs after the firmware), so ``auto`` only
trusts KVM once a guest proved it by printing on the console; the verdict is remembered per host
(host kernel + QEMU version) so later runs skip the probe.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pagelab.cache import atomic_write, cache_dir, content_key
from pagelab.errors import InfraError, UsageError
from pagelab.procs import tool_version
from pagelab.settings import DEFAULT_CPUS, DEFAULT_MEMORY, memory_mib

QEMU_BINARY = "qemu-system-x86_64"
# Always on the kernel command line (the user's --append comes after, so it can override).
# Not quiet: the full boot log costs no measurable time under TCG (BENCHMARKS.md) and a boot
# timeout or crash is then reported with the kernel's own lines.
BASE_APPEND: tuple[str, ...] = ("console=ttyS0", "page_owner=on", "panic=-1")
# Seconds the guest has to print its first line before KVM is declared broken under --accel auto.
KVM_PROOF_DEADLINE = 10.0
# Default boot timeouts (launch to SSH-ready); TCG is slower and CI machines are loaded.
BOOT_TIMEOUT = {"kvm": 30.0, "tcg": 90.0}

# QEMU user networking: the guest is 10.0.2.15/24 and reaches the host's loopback at 10.0.2.2.
HOST_GATEWAY = "10.0.2.2"
_DEFAULT_MEMORY_MIB = memory_mib(DEFAULT_MEMORY)


def parse_memory(size: str) -> int:
    """Guest memory in MiB from ``1G``, ``2048M``, ``512`` (MiB); raises UsageError if malformed."""
    try:
        return memory_mib(size)
    except ValueError as err:
        raise UsageError(f"--memory {size!r}: {err}") from None


@dataclass
class QemuConfig:
    """What one QEMU launch needs; ``command()`` turns it into argv."""

    kernel: Path
    initrd: Path
    accel: str  # kvm | tcg
    ssh_port: int
    qmp_socket: Path
    memory_mib: int = _DEFAULT_MEMORY_MIB
    cpus: int = DEFAULT_CPUS
    append: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    binary: str = QEMU_BINARY

    def kernel_cmdline(self) -> str:
        return " ".join([*BASE_APPEND, *self.append])

    def command(self) -> list[str]:
        """The argv. The serial console is QEMU's stdout; nothing reads QEMU's stdin."""
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
        return [
            self.binary,
            "-name", "pagelab",
            "-machine", "pc",
            *accel,
            # One CPU per socket: without ACPI the guest finds CPUs in SeaBIOS's MP table, which lists
            # only the first CPU of each package (QEMU's default -smp N is one socket of N cores).
            "-smp", f"{self.cpus},sockets={self.cpus},cores=1,threads=1",
            "-m", f"{self.memory_mib}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel),
            "-initrd", str(self.initrd),
            "-append", self.kernel_cmdline(),
            "-chardev", "stdio,id=console,signal=off",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            # romfile= skips loading the iPXE option ROM: we boot with -kernel, never from the network.
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            # Entropy at once: dropbear's key exchange never waits for the CRNG.
            "-device", "virtio-rng-pci",
            # GUEST_PANICKED on QMP when the guest has the driver; pause keeps the state for reading.
            "-device", "pvpanic-pci",
            "-action", "panic=pause",
            *self.extra_args,
        ]  # fmt: skip


def qemu_version(binary: str = QEMU_BINARY) -> str:
    """``QEMU emulator version …`` first line; raises InfraError when QEMU is not installed."""
    path = shutil.which(binary)
    if path is None:
        raise InfraError(f"{binary} not found: install qemu-system-x86 (scripts/setup-host.sh)")
    return tool_version([path, "--version"]) or "unknown"


def kvm_usable() -> str | None:
    """None if /dev/kvm opens read-write, else why not (opening proves little: see the module doc)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return f"/dev/kvm: {err.strerror}"
    os.close(fd)
    return None


@dataclass(frozen=True)
class AccelVerdict:
    """What a KVM probe concluded on this host: ``accel`` is kvm or tcg, ``reason`` says why."""

    accel: str
    reason: str


def verdict_path(binary: str = QEMU_BINARY) -> Path:
    """Where this host's accelerator verdict is kept (keyed by host kernel and QEMU version)."""
    uname = platform.uname()
    key = content_key([uname.release, uname.version, uname.machine, qemu_version(binary)])
    return cache_dir("hosts") / f"accel-{key}.json"


def load_verdict(binary: str = QEMU_BINARY) -> AccelVerdict | None:
    """The remembered verdict for this host kernel and QEMU, if any."""
    try:
        data = json.loads(verdict_path(binary).read_text())
        return AccelVerdict(str(data["accel"]), str(data["reason"]))
    except (OSError, ValueError, KeyError):
        return None


def save_verdict(verdict: AccelVerdict, binary: str = QEMU_BINARY) -> Path:
    """Remember a probe's verdict for this host; returns the file (delete it to probe again)."""
    path = verdict_path(binary)
    atomic_write(path, json.dumps({"accel": verdict.accel, "reason": verdict.reason}) + "\n")
    return path
