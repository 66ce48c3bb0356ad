"""Opening inputs: compression by magic bytes, and damaged compressed files as clean input errors."""

from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from pagelab.errors import InputError
from pagelab.pageowner.inputs import open_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DUMP = lzma.decompress((FIXTURES / "report_po612.txt.xz").read_bytes())


def _read(path: Path) -> bytes:
    with open_input(path) as f:
        return f.read()


def test_zstd_multi_frame_reads_as_one_stream(tmp_path: Path) -> None:
    half = len(DUMP) // 2
    c = zstandard.ZstdCompressor()
    path = tmp_path / "two.zst"
    path.write_bytes(c.compress(DUMP[:half]) + c.compress(DUMP[half:]))
    assert _read(path) == DUMP


def test_truncated_zstd_is_an_input_error_not_a_short_read(tmp_path: Path) -> None:
    whole = zstandard.ZstdCompressor().compress(DUMP)
    for cut in (100, len(whole) // 2, len(whole) - 1):
        path = tmp_path / f"cut{cut}.zst"
        path.write_bytes(whole[:cut])
        with pytest.raises(InputError, match="truncated zstd"):
            _read(path)


def test_truncated_xz_is_an_input_error(tmp_path: Path) -> None:
    whole = lzma.compress(DUMP)
    path = tmp_path / "cut.xz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="corrupt xz"):
        _read(path)


def _pagelab(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pagelab", *argv], capture_output=True, env={"COLUMNS": "200", "PATH": "/usr/bin"}
    )


def test_csv_to_stdout_keeps_the_tables_on_stderr(tmp_path: Path) -> None:
    proc = _pagelab("report", str(FIXTURES / "report_po612.txt.xz"), "--csv", "-")
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"rank,pages,") and b"Top " in proc.stderr


def test_only_one_output_may_be_stdout() -> None:
    proc = _pagelab("report", str(FIXTURES / "report_po612.txt.xz"), "--csv", "-", "--json", "-")
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().strip().count("\n") == 0 and "only one output" in proc.stderr.decode()


def test_a_reader_that_leaves_early_is_not_a_finding() -> None:
    # `pagelab report … | head -1`: exit 0, never 1 (which means "growth found").
    cmd = f"{sys.executable} -m pagelab report {FIXTURES / 'report_po612.txt.xz'} | head -1; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
