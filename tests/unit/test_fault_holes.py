"""Holes the fault matrix found (issue 13) that need no guest: each test failed on the code before the fix.

The guest-side cases (signals, QEMU killed, panics, OOM, full disks) are in tests/e2e/test_faults.py.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from pagelab.cli import main
from pagelab.collect.collector import AnalysisWorker
from pagelab.errors import InfraError
from pagelab.guest.image import IMAGE_NAME, build_image, read_cpio
from pagelab.guest.keys import CLIENT_KEY_NAME, HOST_KEY_NAME, ensure_keys
from pagelab.guest.ssh import exit_status_of_signal
from pagelab.pageowner.parse import iter_records
from pagelab.ui import UI

PACKAGE = Path(__file__).resolve().parents[2] / "pagelab"
RECORD = (
    "Page allocated via order {order}, mask {mask}, pid 1, tgid 1 (init), ts {ts} ns\n"
    "PFN 0x{pfn:x} type Unmovable Block 8 type Unmovable Flags 0x0()\n"
    " get_page_from_freelist+0x1/0x2\n"
    " __alloc_pages_noprof+0x3/0x4\n"
    "\n"
)


def _dump(n: int, bad_at: int | None = None) -> str:
    out = []
    for i in range(n):
        order, mask = ("x", "zz") if i == bad_at else ("0", "0xcc0(GFP_KERNEL)")
        out.append(RECORD.format(order=order, mask=mask, ts=1000 + i, pfn=0x1000 + i))
    return "".join(out)


# -- pagelab sort: a header that is not a page_owner header -----------------------------------------
@pytest.mark.parametrize(("records", "bad_at", "line"), [(1, 0, 1), (500, 321, 321 * 5 + 1)], ids=["alone", "deep"])
def test_sort_rejects_an_order_that_is_not_a_number_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], records: int, bad_at: int, line: int
) -> None:
    src, out = tmp_path / "dump.txt", tmp_path / "sorted.txt"
    src.write_text(_dump(records, bad_at))
    assert main(["sort", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{src}:{line}:" in err[0] and "order x, mask zz" in err[0]
    assert not out.exists()  # nothing written, as for every other bad input


def test_sort_still_sorts_good_headers(tmp_path: Path) -> None:
    src, out = tmp_path / "dump.txt", tmp_path / "sorted.txt"
    src.write_text(_dump(50))
    assert main(["sort", str(src), str(out)]) == 0
    assert out.read_text().startswith("50 times, 50 pages, allocated by OTHERS :\nPage allocated via order 0")


# -- a command killed by a signal in the guest -------------------------------------------------------
@pytest.mark.parametrize(("name", "status"), [("KILL", 137), ("TERM", 143), ("SEGV", 139), ("NOSUCH", 255)])
def test_a_signal_name_from_dropbear_is_the_shells_status(name: str, status: int) -> None:
    assert exit_status_of_signal(name) == status


# -- snapshot files on a full disk ------------------------------------------------------------------
def test_a_snapshot_that_cannot_be_written_is_one_infra_error_and_the_next_one_works(tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC: the analysis child says so and stays in step."""
    dump = _dump(20).encode()
    worker = AnalysisWorker()
    try:
        worker.begin(Path("/dev/full"), "full", tmp_path / "00-full.page_owner.zst")
        worker.feed(dump)
        with pytest.raises(InfraError, match=r"cannot write .*00-full\.page_owner\.zst: No space left on device"):
            worker.finish()
        good = tmp_path / "01-good.page_owner.zst"
        worker.begin(good, "good")
        worker.feed(dump)
        snapshot, total = worker.finish()
    finally:
        worker.close()
    assert (snapshot.records, total) == (20, len(dump))
    with zstandard.ZstdDecompressor().stream_reader(open(good, "rb")) as f:
        assert len(list(iter_records(f))) == 20


# -- cache entries: modes and truncation ----------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_loosened_key_modes_are_made_private_again(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    for private in (keys.client_key, keys.host_key):
        os.chmod(private, 0o644)
    os.chmod(keys.directory, 0o755)
    again = ensure_keys(tmp_path / "keys")
    assert again == keys  # the same keys, not new ones: the pinned host key stays valid
    assert _mode(again.directory) == 0o700
    assert {_mode(again.directory / n) for n in (CLIENT_KEY_NAME, HOST_KEY_NAME)} == {0o600}


def test_a_truncated_cached_image_is_rebuilt_not_booted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a private cache: others boot the real one
    ui = UI(plain=True, quiet=True)
    image = build_image(ui=ui, tools=())
    whole = image.read_bytes()
    cut = image.with_name("cut")
    cut.write_bytes(whole[: len(whole) // 2])
    os.replace(cut, image)  # as a full disk or a killed copy would leave it
    again = build_image(ui=ui, tools=())
    assert again == image and again.read_bytes() == whole
    assert [n for n, *_ in read_cpio(whole)][:1]  # a complete archive again
    # Private: the image embeds the guest's host key.
    assert _mode(image) == 0o600
    assert _mode(image.parent) == 0o700 and _mode(image.parent.parent) == 0o700
    assert image.name == IMAGE_NAME


# -- profiles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("unterminated.toml", b'[run]\niterations = "three\n'),
        ("binary.toml", b"\xff\xfe[run]\n"),
        ("directory.toml", None),
    ],
    ids=["malformed", "not-utf8", "unreadable"],
)
def test_a_bad_profile_is_one_line_exit_2_and_nothing_runs(tmp_path: Path, name: str, content: bytes | None) -> None:
    profile = tmp_path / name
    if content is None:
        profile.mkdir()  # root reads any file: a directory is what stays unreadable
    else:
        profile.write_bytes(content)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pagelab", "run", "--profile", str(profile), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and str(profile) in lines[0], lines
    assert not out.exists()


# -- nothing through a shell with user input ------------------------------------------------------------
_SHELLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}


def _shell_calls(root: Path) -> list[str]:
    """Calls that hand a string to /bin/sh on the host: shell=True, os.system, os.popen, subprocess.getoutput."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in _SHELLS:
                found.append(f"{path.name}:{node.lineno}: {f.value.id}.{f.attr}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{path.name}:{node.lineno}: shell={ast.unparse(kw.value)}")
    return found


def test_no_shell_true_or_os_system_in_pagelab() -> None:
    assert _shell_calls(PACKAGE) == []


def test_the_static_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The check above cannot pass vacuously: it flags calls planted in a copy of the package."""
    copy = tmp_path / "pagelab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (copy / "planted.py").write_text("import os, subprocess\nsubprocess.run(cmd, shell=True)\nos.system(cmd)\n")
    assert _shell_calls(copy) == ["planted.py:2: shell=True", "planted.py:3: os.system"]
