"""`pagelab boot` argument handling that needs no guest: usage errors exit 2 before anything boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.cli import main
from pagelab.errors import UsageError
from pagelab.guest.boot import command_line, parse_upload


def test_one_argument_is_a_shell_string() -> None:
    assert command_line(["--", "echo a | wc -c"]) == "echo a | wc -c"


def test_several_arguments_are_an_exact_argv() -> None:
    assert command_line(["sh", "-c", "echo 'x y'"]) == "sh -c 'echo '\"'\"'x y'\"'\"''"


def test_no_command_means_a_shell() -> None:
    assert command_line([]) is None and command_line(["--"]) is None


def test_upload_spec_splits_at_the_first_colon(tmp_path: Path) -> None:
    f = tmp_path / "a.sh"
    f.write_text("x")
    assert parse_upload(f"{f}:/root/b:c") == (f, "/root/b:c")


@pytest.mark.parametrize("spec", ["nocolon", ":/root", "/etc/hostname:", "/nonexistent:/root"])
def test_bad_upload_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match="--upload"):
        parse_upload(spec)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--memory", "lots"], "--memory"),
        (["--cpus", "0"], "--cpus"),
        (["--timeout", "-3"], "--timeout"),
        (["--upload", "nocolon"], "--upload"),
        (["--kernel", "/nonexistent/bzImage"], "not a file"),
        (["--kernel", "/etc/hostname"], "not an x86 bzImage"),
        (["--kernel", "/etc/hostname", "--fragment", "x.config"], "--fragment would be ignored"),
    ],
)
def test_boot_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(["boot", *argv, "--", "true"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
