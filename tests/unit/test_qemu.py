"""QEMU command line, options, accelerator verdict cache, port clashes and QEMU dying with pagelab."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pagelab.errors import UsageError
from pagelab.guest.machine import Machine, PortInUse, free_port
from pagelab.guest.qemu import AccelVerdict, QemuConfig, load_verdict, parse_memory, save_verdict
from pagelab.guest.session import GuestOptions, bzimage_version
from pagelab.settings import Settings


def _config(tmp_path: Path, accel: str = "tcg", **kw: object) -> QemuConfig:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 1024)
    initrd = tmp_path / "initramfs.cpio"
    initrd.write_bytes(b"")
    return QemuConfig(kernel, initrd, accel, 40022, tmp_path / "qmp.sock", **kw)  # type: ignore[arg-type]


def test_ssh_forward_binds_loopback_only(tmp_path: Path) -> None:
    argv = _config(tmp_path).command()
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev


def test_kernel_command_line_always_has_console_and_page_owner_then_user_args(tmp_path: Path) -> None:
    cmdline = _config(tmp_path, append=["init=/bin/sh", "page_owner=off"]).kernel_cmdline().split()
    assert cmdline[:2] == ["console=ttyS0", "page_owner=on"]
    assert cmdline[-2:] == ["init=/bin/sh", "page_owner=off"]  # last wins in the kernel: the user can override


def test_accelerator_selects_cpu_model(tmp_path: Path) -> None:
    kvm = _config(tmp_path, accel="kvm").command()
    tcg = _config(tmp_path, accel="tcg").command()
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"
    assert tcg[tcg.index("-accel") + 1] == "tcg"


def test_qmp_is_a_unix_socket_and_panics_pause_the_guest(tmp_path: Path) -> None:
    argv = _config(tmp_path).command()
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"
    assert "pvpanic-pci" in argv and "panic=pause" in argv and "-no-reboot" in argv


@pytest.mark.parametrize(("text", "mib"), [("1G", 1024), ("2048M", 2048), ("512", 512), ("3GiB", 3072)])
def test_parse_memory(text: str, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["lots", "1X", "64M", ""])
def test_parse_memory_rejects_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="--memory"):
        parse_memory(text)


def test_guest_options_from_settings_split_append_and_apply_defaults() -> None:
    opts = GuestOptions.from_settings(Settings(append=["quiet loglevel=7", "'init=/bin/x y'"], keep=True))
    assert (opts.memory, opts.cpus, opts.accel, opts.keep) == ("1G", 2, "auto", True)
    assert opts.append == ["quiet", "loglevel=7", "init=/bin/x y"]


@pytest.mark.parametrize(("field", "value"), [("cpus", 0), ("timeout", -1.0), ("accel", "hvf")])
def test_guest_options_reject_bad_values(field: str, value: object) -> None:
    opts = GuestOptions(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        opts.validate()


def test_accel_verdict_is_remembered_per_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert load_verdict() is None
    path = save_verdict(AccelVerdict("tcg", "no guest console output within 10 s under KVM"))
    assert path.is_relative_to(tmp_path)
    assert load_verdict() == AccelVerdict("tcg", "no guest console output within 10 s under KVM")


def test_bzimage_version_reads_the_setup_header(tmp_path: Path) -> None:
    blob = bytearray(0x1000)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x20E, 0x300)
    text = b"6.12.48-pagelab (root@vm) #1 SMP PREEMPT_DYNAMIC\0"
    blob[0x500 : 0x500 + len(text)] = text
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(blob))
    assert bzimage_version(path) == "6.12.48-pagelab"


def test_bzimage_version_of_a_non_kernel_is_none(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"hello")
    assert bzimage_version(path) is None


def test_qemu_reports_a_taken_forward_port_as_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        config = _config(tmp_path)
        config.ssh_port = blocker.getsockname()[1]
        machine = Machine(config, tmp_path, tmp_path / "console.log")
        with pytest.raises(PortInUse, match=str(config.ssh_port)):
            machine.start(timeout=20)
        machine.stop()
    assert not machine.alive()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_child_started_like_qemu_dies_when_pagelab_is_sigkilled(tmp_path: Path) -> None:
    # Launched as QEMU is (pagelab/procs.py); the parent is SIGKILLed, so only the kernel can kill the child.
    script = textwrap.dedent(
        """
        import time
        from pagelab.procs import popen_tied
        p = popen_tied(["sleep", "60"], start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # A zombie is still "there" until init reaps it; check its state.
        state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}").exists() else "X"
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("child survived its parent's SIGKILL")


def test_a_child_launched_from_a_short_lived_thread_outlives_that_thread() -> None:
    # PR_SET_PDEATHSIG follows the forking *thread*; the launcher thread lives as long as pagelab.
    from pagelab.procs import popen_tied

    box: dict[str, subprocess.Popen[bytes]] = {}

    def worker() -> None:
        box["p"] = popen_tied(["sleep", "30"])

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    child = box["p"]
    try:
        time.sleep(0.5)
        assert child.poll() is None, "the child died with the thread that asked for it"
    finally:
        child.kill()
        child.wait()
