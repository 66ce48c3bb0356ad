"""`pagelab boot` and the Guest API on the real kernel in real QEMU (TCG here; KVM where it works)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagelab.guest import CommandTimeout, Guest, GuestOptions, HostKeyMismatch
from pagelab.guest.keys import ensure_keys
from pagelab.guest.session import sweep_stale_run_dirs
from pagelab.guest.ssh import SSHSession
from pagelab.kernel.build import BuildResult
from pagelab.ui import UI

pytestmark = pytest.mark.vm


def _marker() -> str:
    # An unknown kernel parameter: harmless in the guest, findable in QEMU's command line on the host.
    return f"pagelab_test={uuid.uuid4().hex[:12]}"


def _qemu_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return [p for p in pids if p != os.getpid()]


def _wait_gone(marker: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _qemu_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _boot_cli(*args: str, tmpdir: Path | None = None, **kw: object) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen(
        [sys.executable, "-m", "pagelab", "boot", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


# -- the CLI ---------------------------------------------------------------------------------------
def test_boot_runs_the_command_and_exits_with_its_status(kernel_build: BuildResult, tmp_path: Path) -> None:
    payload = tmp_path / "payload.sh"
    payload.write_text("echo uploaded-ok\n")
    proc = _boot_cli("--upload", f"{payload}:/root/", "--", "sh /root/payload.sh; uname -r; echo to-stderr >&2; exit 7")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 7, err
    assert out.splitlines() == ["uploaded-ok", kernel_build.kernel_version]
    assert "to-stderr" in err


def test_sysrq_crash_is_exit_3_with_the_panic_named_and_no_qemu_left(kernel_build: BuildResult) -> None:
    marker = _marker()
    started = time.monotonic()
    proc = _boot_cli("--kernel", str(kernel_build.bzimage), "--append", marker, "--", "echo c > /proc/sysrq-trigger")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert time.monotonic() - started < 60
    assert "guest kernel crashed (panic): sysrq triggered crash" in err
    assert "Kernel panic - not syncing: sysrq triggered crash" in err  # the console lines themselves
    assert _wait_gone(marker, 5) == []


def test_three_guests_boot_at_once_from_three_pagelab_processes(kernel_build: BuildResult) -> None:
    markers = [_marker() for _ in range(3)]
    procs = [
        _boot_cli("--kernel", str(kernel_build.bzimage), "--append", m, "--", f"cat /proc/cmdline; exit {10 + i}")
        for i, m in enumerate(markers)
    ]
    for i, (proc, marker) in enumerate(zip(procs, markers, strict=True)):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 10 + i, err
        assert marker in out  # each answer came from its own guest
    assert all(_wait_gone(m, 5) == [] for m in markers)


def test_boot_timeout_is_exit_4_with_the_last_console_lines(kernel_build: BuildResult, tmp_path: Path) -> None:
    marker = _marker()
    # /bin/cat as the first process never exits and never starts sshd: a hang, not a crash.
    proc = _boot_cli(
        "--kernel", str(kernel_build.bzimage), "--timeout", "12", "--append", f"rdinit=/bin/cat {marker}",
        "--", "true", tmpdir=tmp_path,
    )  # fmt: skip
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "guest not ready within 12 s" in err
    assert "Run /bin/cat as init process" in err
    assert _wait_gone(marker, 5) == []
    assert not list(tmp_path.glob("pagelab-run-*"))


def test_a_guest_without_network_fails_fast_naming_the_cause(kernel_build: BuildResult) -> None:
    # The virtio-net driver kept from initialising: init reports it, so no 90 s wait for SSH.
    proc = _boot_cli(
        "--kernel", str(kernel_build.bzimage), "--append", "initcall_blacklist=virtio_net_driver_init", "--", "true"
    )  # fmt: skip
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "guest set-up failed: network setup failed" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_qemu_does_not_survive_pagelab(kernel_build: BuildResult, tmp_path: Path, sig: signal.Signals) -> None:
    marker = _marker()
    proc = _boot_cli(
        "--kernel", str(kernel_build.bzimage), "--append", marker, "--", "echo up; sleep 300", tmpdir=tmp_path
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"
    assert _qemu_with(marker)
    proc.send_signal(sig)
    proc.wait(30)
    assert _wait_gone(marker, 10) == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert not list(tmp_path.glob("pagelab-run-*"))  # cleaned up on the way out
    else:
        # Nobody could clean up after SIGKILL; the next guest sweeps the dead run's directory.
        assert list(tmp_path.glob("pagelab-run-*"))
        sweep_stale_run_dirs(tmp_path)
        assert not list(tmp_path.glob("pagelab-run-*"))


# -- the Python API on one shared guest -----------------------------------------------------------
@pytest.fixture(scope="module")
def guest(kernel_build: BuildResult, guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    options = GuestOptions(console_log=artifacts / "console.log")
    with Guest(kernel_build, guest_image, options, UI(plain=True, quiet=True)) as g:
        yield g


def test_guest_reports_version_accel_timings_and_writes_the_console_log(
    guest: Guest, kernel_build: BuildResult
) -> None:
    assert guest.kernel_version == kernel_build.kernel_version
    assert guest.accel in ("kvm", "tcg")
    assert {"qemu_start", "kernel_boot", "init", "sshd", "launch_to_ssh"} <= set(guest.timings)
    assert guest.console_log is not None and "pagelab: ready" in guest.console_log.read_text()
    assert int(guest.run("nproc").stdout) == 2


def test_run_returns_status_stdout_and_stderr(guest: Guest) -> None:
    result = guest.run("echo out; echo err >&2; exit 3")
    assert (result.status, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_run_timeout_raises_and_the_guest_stays_usable(guest: Guest) -> None:
    with pytest.raises(CommandTimeout, match="timed out after 1 s"):
        guest.run("echo partial; sleep 30", timeout=1)
    assert guest.run("echo still-here").stdout == "still-here\n"


def test_run_stream_timeout_raises_on_the_direct_path_too(guest: Guest) -> None:
    got = bytearray()
    # 10 s for "partial" to arrive under TCG on a loaded host; the sleep outlasts it, so the timeout must fire.
    with pytest.raises(CommandTimeout):
        guest.run_stream("echo partial; sleep 30", got.extend, timeout=10)
    assert bytes(got) == b"partial\n"


def test_concurrent_streams_on_separate_channels_deliver_every_byte(guest: Guest) -> None:
    size = 8 << 20
    results: dict[int, tuple[int, str]] = {}

    def reader(i: int) -> None:
        digest = hashlib.sha256()
        status = guest.run_stream(f"head -c {size} /dev/zero", digest.update)
        results[i] = (status, digest.hexdigest())

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    expected = hashlib.sha256(b"\0" * size).hexdigest()
    assert results == {i: (0, expected) for i in range(3)}


def test_many_short_concurrent_commands_never_lose_the_connection(guest: Guest) -> None:
    # dropbear 2022.83 kills a connection whose channels overlap (mkj/dropbear#321): one per command.
    failures: list[str] = []

    def worker() -> None:
        for _ in range(10):
            try:
                out = bytearray()
                assert guest.run_stream("head -c 50000 /dev/zero", out.extend, timeout=60) == 0
                assert len(out) == 50000
            except Exception as err:  # collected: a thread's assert would otherwise vanish
                failures.append(repr(err))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert "Failed assertion" not in guest.run("cat /run/dropbear.log").stdout


def test_upload_then_stream_back_is_byte_identical(guest: Guest, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 << 20))
    src.chmod(0o750)
    assert guest.upload(src, "/tmp/up/") == "/tmp/up/blob.bin"
    assert guest.run("stat -c %a /tmp/up/blob.bin").stdout.strip() == "750"
    back = tmp_path / "back.bin"
    with open(back, "wb") as f:
        guest.stream("/tmp/up/blob.bin", f.write)
    assert back.read_bytes() == src.read_bytes()


def test_stdout_over_the_ssh_channel_and_over_direct_tcp_are_the_same(guest: Guest) -> None:
    assert guest._ssh is not None
    cmd = "seq 1 200000; echo done >&2; exit 4"
    results = []
    for direct in (False, True):
        out, err = bytearray(), bytearray()
        status = guest._ssh.run_stream(cmd, out.extend, 60, stderr_sink=err.extend, direct=direct)
        results.append((status, hashlib.sha256(out).hexdigest(), bytes(err)))
    assert results[0] == results[1]
    assert results[0][0] == 4 and results[0][2] == b"done\n"
    assert guest._ssh.direct_gateway is not None  # the direct path was used, not silently replaced


def test_a_command_that_reads_stdin_sees_end_of_file_on_both_paths(guest: Guest) -> None:
    assert guest._ssh is not None
    for direct in (False, True):
        out = bytearray()
        assert guest._ssh.run_stream("cat; echo eof", out.extend, 30, direct=direct) == 0
        assert bytes(out) == b"eof\n"
    assert guest._ssh.direct_gateway is not None


def test_direct_stream_falls_back_to_the_channel_when_the_guest_cannot_connect(guest: Guest) -> None:
    assert guest.ssh_port is not None
    # The guest's own loopback has no listener: nc fails before the command would run.
    session = SSHSession(guest.ssh_port, ensure_keys(), direct_gateway="127.0.0.1")
    session.connect(timeout=20)
    try:
        out, err = bytearray(), bytearray()
        assert session.run_stream("echo hello", out.extend, 30, stderr_sink=err.extend) == 0
        assert (bytes(out), bytes(err)) == (b"hello\n", b"")
        assert session.direct_gateway is None  # later streams go straight to the channel
    finally:
        session.close()


def test_streaming_a_missing_file_names_it(guest: Guest) -> None:
    from pagelab.errors import InfraError

    with pytest.raises(InfraError, match="cannot read /nonexistent"):
        guest.stream("/nonexistent", lambda _b: None)


def test_page_owner_is_readable_in_the_guest(guest: Guest) -> None:
    head = guest.run("head -c 4096 /sys/kernel/debug/page_owner")
    assert head.status == 0 and "Page allocated via order" in head.stdout


def test_a_wrong_host_key_is_refused(guest: Guest, tmp_path: Path) -> None:
    real = ensure_keys()
    other = ensure_keys(tmp_path / "other-keys")  # a different pinned host key, the real client key
    impostor = type(real)(real.directory, real.client_key, real.client_public, other.host_key, other.host_public)
    assert guest.ssh_port is not None
    session = SSHSession(guest.ssh_port, impostor)
    with pytest.raises(HostKeyMismatch, match="not the pinned key"):
        session.connect(timeout=20)
    session.close()


def test_a_client_key_the_guest_does_not_know_is_refused_at_once(guest: Guest, tmp_path: Path) -> None:
    from pagelab.errors import InfraError

    real = ensure_keys()
    other = ensure_keys(tmp_path / "other-keys")
    stranger = type(real)(real.directory, other.client_key, other.client_public, real.host_key, real.host_public)
    assert guest.ssh_port is not None
    session = SSHSession(guest.ssh_port, stranger)
    with pytest.raises(InfraError, match="guest refused pagelab's client key"):
        session.connect(timeout=60)
    session.close()


def test_check_crash_is_quiet_on_a_healthy_guest(guest: Guest) -> None:
    assert guest.status() == "running"  # QMP query-status
    guest.check_crash()
    assert guest.crashes == []


def test_auto_falls_back_to_tcg_with_a_reason_and_remembers_it(
    kernel_build: BuildResult, guest_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from pagelab.guest.qemu import kvm_usable, load_verdict

    if kvm_usable() is not None:
        pytest.skip(f"no /dev/kvm here ({kvm_usable()}): auto never probes")
    keys = ensure_keys()  # the image's keys, from the real cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a host with no verdict yet
    # A zero deadline makes any KVM fail its proof, so this runs the same on hosts where KVM works.
    options = GuestOptions(accel="auto", kvm_proof_deadline=0.0)
    with Guest(kernel_build, guest_image, options, UI(plain=True), keys=keys) as g:
        assert g.accel == "tcg" and "kvm_probe" in g.timings
    warning = capsys.readouterr().err
    assert "warning: KVM does not work here (" in warning and "using TCG" in warning
    verdict = load_verdict()
    assert verdict is not None and verdict.accel == "tcg"


def test_boot_without_a_command_opens_an_interactive_shell_with_the_terminal_size(kernel_build: BuildResult) -> None:
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "pagelab", "boot", "--kernel", str(kernel_build.bzimage)],
        dimensions=(37, 101),
        encoding="utf-8",
        timeout=120,
    )
    try:
        child.expect("pagelab:.*# ")  # the guest's prompt, on a real PTY
        child.sendline("stty size; tty; echo $((6 * 7))")
        child.expect(r"37 101\r\n/dev/pts/\d+\r\n42\r\n", timeout=30)
        child.setwinsize(30, 90)  # SIGWINCH reaches the guest's PTY
        child.sendline("sleep 0.5; stty size")
        child.expect(r"30 90\r\n", timeout=30)
        child.sendline("exit 5")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_a_panic_raises_guest_crash_and_qemu_reports_it_over_qmp(kernel_build: BuildResult, guest_image: Path) -> None:
    from pagelab.errors import GuestCrash

    with Guest(kernel_build, guest_image, GuestOptions(), UI(plain=True, quiet=True)) as g:
        with pytest.raises(GuestCrash) as info:
            g.run("echo c > /proc/sysrq-trigger", timeout=60)
        assert (info.value.kind, info.value.title) == ("panic", "sysrq triggered crash")
        # pvpanic: QEMU got GUEST_PANICKED and paused the guest (-action panic=pause).
        deadline = time.monotonic() + 10
        while "GUEST_PANICKED" not in [e["event"] for e in g.qmp_events] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "GUEST_PANICKED" in [e["event"] for e in g.qmp_events]
        assert g.status() == "guest-panicked"
