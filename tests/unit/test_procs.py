"""pagelab/procs.py: tool versions and the one way a failed build step is reported (die-with-parent: test_qemu.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pagelab.errors import BuildError
from pagelab.procs import FAILED_TAIL_LINES, step_failed, tool_version


def test_tool_version_is_the_first_line_a_real_tool_prints() -> None:
    expected = subprocess.run([sys.executable, "--version"], capture_output=True, text=True).stdout.strip()
    assert tool_version([sys.executable, "--version"]) == expected.splitlines()[0]


def test_tool_version_is_none_for_a_missing_or_failing_tool() -> None:
    assert tool_version(["/nonexistent/pagelab-tool", "--version"]) is None
    assert tool_version(["sh", "-c", "echo 'not a version'; exit 3"]) is None


def test_a_failed_step_shows_its_status_the_last_lines_of_its_log_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with open(log, "w") as out:
        rc = subprocess.run(["sh", "-c", "for i in $(seq 1 50); do echo line $i; done; exit 3"], stdout=out).returncode
    err = step_failed("kernel build", rc, log=log)
    assert isinstance(err, BuildError) and err.exit_code == 4
    text = str(err)
    assert text.startswith(f"kernel build failed (exit 3); last {FAILED_TAIL_LINES} lines:\n")
    shown = text.split("\n")[1:-1]
    assert shown == [f"line {i}" for i in range(51 - FAILED_TAIL_LINES, 51)]
    assert text.endswith(f"\nfull log: {log}")


def test_a_failed_step_without_a_log_shows_its_output_and_the_hint() -> None:
    proc = subprocess.run(["sh", "-c", "echo 'cc1: fatal error' >&2; exit 1"], capture_output=True, text=True)
    text = str(
        step_failed("po-read.c: gcc -static", proc.returncode, output=proc.stderr, hint="is libc6-dev installed?")
    )
    assert text == "po-read.c: gcc -static failed (exit 1); is libc6-dev installed?; last 1 lines:\ncc1: fatal error"
    assert str(step_failed("tar", 2)) == "tar failed (exit 2); no output"
