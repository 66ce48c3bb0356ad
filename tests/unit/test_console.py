"""The console watcher: crash headers as the kernel prints them, readiness, excerpts, the log."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pagelab.guest.console import ConsoleWatcher, classify_line, is_guest_output, strip_timestamp

# Header lines copied from real kernel reports (x86-64, 6.x).
CRASH_LINES = [
    ("[   12.345999] Kernel panic - not syncing: sysrq triggered crash", "panic", "sysrq triggered crash"),
    ("[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000", "bug", None),
    ("[    3.2] Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops", "Oops: 0002 [#1] PREEMPT SMP NOPTI"),
    ("[    5.0] Oops: general protection fault, probably for non-canonical address 0xdead000000000100", "gpf", None),
    ("general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] SMP", "gpf", None),
    ("[   20.1] WARNING: CPU: 1 PID: 42 at mm/page_alloc.c:4500 __alloc_pages+0x1c/0x54", "warning", None),
    ("[  130.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", "hung_task", None),
    ("[   44.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:95]", "soft_lockup", None),
    ("[    9.0] BUG: KASAN: slab-out-of-bounds in hoard_stash_pages+0x1c/0x54 [hoard]", "kasan", None),
    ("[    9.0] BUG: KFENCE: use-after-free read in test_func+0x10/0x20", "kfence", None),
    ("[    9.0] UBSAN: array-index-out-of-bounds in lib/foo.c:12:3", "ubsan", None),
    ("[    9.0] kernel BUG at mm/slub.c:123!", "kernel_bug", "kernel BUG at mm/slub.c:123!"),
    ("[   61.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "rcu_stall", None),
]


@pytest.mark.parametrize(("line", "kind", "title"), CRASH_LINES)
def test_kernel_crash_headers_are_classified(line: str, kind: str, title: str | None) -> None:
    found = classify_line(line)
    assert found is not None and found[0] == kind
    if title is not None:
        assert found[1] == title


@pytest.mark.parametrize(
    "line",
    [
        "[    0.000000] Linux version 6.12.0 (root@vm) (gcc) #1 SMP",
        "pagelab: ready uptime=1.52 kernel=6.12.0",
        "[    1.0] page_owner is enabled",
        "[    0.5] Run /init as init process",
        "Booting from ROM..",
        # A user-space fault and mitigation notices only mention the words: the kernel is fine.
        "[    7.1] traps: gpbin[93] general protection fault ip:401005 sp:7ffd3c1e8e60 error:0 in gpbin[401000+1000]",
        "[    0.2] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks!",
        "[    0.2] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via "
        "Spectre v2",
    ],
)
def test_ordinary_boot_lines_are_not_crashes(line: str) -> None:
    assert classify_line(line) is None


def test_firmware_lines_do_not_prove_the_guest_runs() -> None:
    assert not is_guest_output("SeaBIOS (version 1.16.2-debian-1.16.2-1)")
    assert not is_guest_output("Booting from ROM..")
    assert is_guest_output("pagelab: init started uptime=0.91")


def test_strip_timestamp_removes_only_the_printk_time() -> None:
    assert strip_timestamp("[   12.345678] BUG: x [y]") == "BUG: x [y]"
    assert strip_timestamp("no stamp [1.0]") == "no stamp [1.0]"


def _feed(text: str, tmp_path: Path) -> ConsoleWatcher:
    r, w = os.pipe()
    watcher = ConsoleWatcher(r, tmp_path / "console.log").start()
    os.write(w, text.encode())
    os.close(w)
    assert watcher.eof.wait(10)
    watcher.join()
    os.close(r)
    return watcher


BOOT = (
    "SeaBIOS (version 1.16.2)\r\n"
    "Booting from ROM..\r\n"
    "pagelab: init started uptime=0.84\r\n"
    "pagelab: ready uptime=1.31 kernel=6.12.48-pagelab\r\n"
)
PANIC = (
    "[   30.000001] sysrq: Trigger a crash\r\n"
    "[   30.000002] Kernel panic - not syncing: sysrq triggered crash\r\n"
    "[   30.000003] CPU: 0 UID: 0 PID: 95 Comm: sh Not tainted 6.12.48 #1\r\n"
    "[   30.000004] Call Trace:\r\n"
    "[   30.000005]  <TASK>\r\n"
    "[   30.000006]  panic+0x33e/0x3a0\r\n"
    "[   30.000007] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\r\n"
    "[   30.000008] after the report\r\n"
)


def test_watcher_sees_readiness_and_records_guest_uptimes(tmp_path: Path) -> None:
    w = _feed(BOOT, tmp_path)
    assert w.first_output.is_set() and w.init_seen.is_set() and w.ready.is_set()
    assert w.guest_uptime == {"init": 0.84, "ready": 1.31}
    assert w.kernel_release == "6.12.48-pagelab"
    assert not w.crashed.is_set()


def test_watcher_logs_every_byte_of_the_console(tmp_path: Path) -> None:
    w = _feed(BOOT + PANIC, tmp_path)
    assert w.log_path.read_bytes().decode() == BOOT + PANIC


def test_watcher_records_a_panic_with_its_report_and_stops_at_the_end_marker(tmp_path: Path) -> None:
    w = _feed(BOOT + PANIC, tmp_path)
    crash = w.first_crash()
    assert crash is not None and crash.kind == "panic" and crash.title == "sysrq triggered crash"
    assert "sysrq: Trigger a crash" in crash.lines[0]  # context before the header
    assert crash.lines[-1].endswith("---[ end Kernel panic - not syncing: sysrq triggered crash ]---")
    assert "after the report" not in crash.excerpt


def test_an_oops_keeps_its_own_lines_and_a_later_panic_is_a_second_report(tmp_path: Path) -> None:
    text = (
        "[ 5.1] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
        "[ 5.2] #PF: supervisor write access in kernel mode\n"
        "[ 5.3] Oops: 0002 [#1] PREEMPT SMP NOPTI\n"
        "[ 5.4] Kernel panic - not syncing: Fatal exception\n"
    )
    w = _feed(text, tmp_path)
    assert [c.kind for c in w.crashes] == ["bug", "panic"]
    assert "Oops: 0002" in w.crashes[0].excerpt


def test_a_partial_line_from_the_guest_counts_as_first_output(tmp_path: Path) -> None:
    r, w = os.pipe()
    watcher = ConsoleWatcher(r, tmp_path / "console.log").start()
    os.write(w, b"[    0.000000] Linux version 6.12")  # no newline yet
    assert watcher.first_output.wait(5)
    os.close(w)
    watcher.eof.wait(5)
    watcher.join()
    os.close(r)


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    w = _feed("".join(f"line {i}\n" for i in range(50)), tmp_path)
    assert w.tail(3) == ["line 47", "line 48", "line 49"]


def test_watcher_thread_is_a_daemon_so_it_never_blocks_exit(tmp_path: Path) -> None:
    r, w = os.pipe()
    watcher = ConsoleWatcher(r, tmp_path / "console.log").start()
    assert any(t.name == "pagelab-console" and t.daemon for t in threading.enumerate())
    os.close(w)
    watcher.eof.wait(5)
    watcher.join()
    os.close(r)


def test_a_newline_free_flood_is_cut_into_lines_and_the_watcher_keeps_up(tmp_path: Path) -> None:
    w = _feed("x" * 100_000 + "\nKernel panic - not syncing: after junk\n", tmp_path)
    assert max(len(line) for line in w.tail(100)) <= 4096
    assert [c.kind for c in w.crashes] == ["panic"]


def test_init_failure_reports_are_recognised(tmp_path: Path) -> None:
    w = _feed("pagelab: init started uptime=0.5\npagelab: network setup failed: lo \n", tmp_path)
    assert w.setup_failed.is_set() and w.setup_failure == "network setup failed: lo"


def test_a_warning_is_recorded_but_does_not_end_the_session(tmp_path: Path) -> None:
    watcher = _feed(
        "[   20.1] WARNING: CPU: 1 PID: 42 at mm/page_alloc.c:4500 __alloc_pages+0x1c/0x54\r\n"
        "pagelab: ready uptime=1.52 kernel=6.12.0\r\n",
        tmp_path,
    )
    assert watcher.ready.is_set() and not watcher.crashed.is_set() and not watcher.crashes
    assert [x.kind for x in watcher.warnings] == ["warning"]
    assert "mm/page_alloc.c:4500" in watcher.warnings[0].title
