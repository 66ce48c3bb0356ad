"""collect: PFN ranges from the guest's memory map, the ordered merge of parallel reads, the static reader."""

from __future__ import annotations

import itertools
import lzma
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zstandard

from pagelab.collect.collector import (
    AnalysisWorker,
    Span,
    SpoolAbandoned,
    build_reader,
    parse_zoneinfo,
    read_in_order,
    reader_command,
    split_ranges,
)
from pagelab.errors import InputError
from pagelab.pageowner.analyse import load_snapshot

ZONEINFO = """Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 0
  pages free     3840
        boost    0
        min      21
        spanned  4095
        present  3998
        managed  3840
        cma      0
  start_pfn:           1
Node 0, zone    DMA32
  pages free     700000
        spanned  782304
        present  782304
        managed  760000
  start_pfn:           4096
Node 0, zone   Normal
  pages free     0
        spanned  0
        present  0
        managed  0
  start_pfn:           0
Node 0, zone  Movable
  pages free     0
        spanned  0
        present  0
  start_pfn:           0
"""


def test_zoneinfo_gives_the_populated_zones_merged() -> None:
    assert parse_zoneinfo(ZONEINFO) == [Span(1, 786400)]


def test_zoneinfo_keeps_holes_between_zones() -> None:
    text = ZONEINFO.replace("start_pfn:           4096", "start_pfn:           1048576")
    assert parse_zoneinfo(text) == [Span(1, 4096), Span(1048576, 1048576 + 782304)]


def test_zoneinfo_without_zones_is_an_error() -> None:
    with pytest.raises(ValueError, match="zoneinfo"):
        parse_zoneinfo("nothing here\n")


def test_ranges_cover_everything_in_order_from_zero_to_the_end() -> None:
    ranges = split_ranges([Span(1, 4096), Span(1048576, 2097152)], 8)
    assert len(ranges) == 8
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start
    # Boundaries fall inside populated memory, never in the hole between the spans.
    assert all(s < 4096 or s >= 1048576 for s, _ in ranges[1:])


def test_ranges_are_about_equal_in_populated_pages() -> None:
    spans = [Span(0, 1000), Span(5000, 8000)]
    ranges = split_ranges(spans, 4)
    sizes = []
    for start, end in ranges:
        stop = 10_000 if end is None else end
        sizes.append(sum(max(0, min(stop, s.end) - max(start, s.start)) for s in spans))
    assert sizes == [1000, 1000, 1000, 1000]


def test_one_range_is_the_whole_file() -> None:
    assert split_ranges([Span(1, 100)], 1) == [(0, None)]


def test_reader_command() -> None:
    assert reader_command(0, 4096) == "/usr/bin/po-read 0 4096"
    assert reader_command(4096, None) == "/usr/bin/po-read 4096"


def _job(pieces: list[bytes], delay: float):
    def run(sink):
        for p in pieces:
            time.sleep(delay * random.random())
            sink(p)

    return run


def test_parallel_reads_are_merged_in_job_order(tmp_path: Path) -> None:
    random.seed(7)
    expected = []
    jobs = []
    for j in range(9):
        pieces = [f"job{j}-piece{k}\n".encode() * (k + 1) for k in range(20)]
        expected.extend(pieces)
        jobs.append(_job(pieces, 0.002 * (9 - j)))  # later jobs finish first
    out: list[bytes] = []
    done: list[int] = []
    read_in_order(jobs, 3, out.append, spool_dir=str(tmp_path), on_job_done=done.append)
    assert b"".join(out) == b"".join(expected)
    assert done == list(range(9))
    assert list(tmp_path.iterdir()) == []  # spools are unlinked files


def test_jobs_run_concurrently() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()
    # Each job waits for two others: with fewer than 3 at once the barrier times out and the merge fails.
    together = threading.Barrier(3, timeout=10)

    def job(sink):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        together.wait()
        sink(b"x")
        with lock:
            active -= 1

    read_in_order([job] * 6, 3, lambda b: None)
    assert peak == 3


def test_a_failing_job_fails_the_merge_after_the_bytes_before_it() -> None:
    def bad(sink):
        sink(b"partial")
        raise RuntimeError("ssh lost")

    out: list[bytes] = []
    with pytest.raises(RuntimeError, match="ssh lost"):
        read_in_order([_job([b"a"], 0), bad, _job([b"c"], 0)], 2, out.append)
    assert out[0] == b"a"


def test_a_failing_consumer_stops_the_readers() -> None:
    stopped = threading.Event()

    def endless(sink):
        try:
            while True:
                sink(b"y" * 1024)
                time.sleep(0.001)
        except SpoolAbandoned:
            stopped.set()
            raise

    def consume(data: bytes) -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        read_in_order([endless, endless], 2, consume)
    assert stopped.is_set()


def _dump(pfns: list[int], hexa: bool) -> bytes:
    out = []
    for p in pfns:
        pfn = hex(p) if hexa else str(p)
        out.append(
            f"Page allocated via order 0, mask 0x0(), pid 1, tgid 1 (swapper/0), ts 0 ns\n"
            f"PFN {pfn} type Unmovable Block 0 type Unmovable Flags 0x0()\n"
            f" register_early_stack+0x1c/0x54\n\n"
        )
    return "".join(out).encode()


@pytest.mark.parametrize("hexa", [False, True], ids=["decimal-6.1", "hex-6.7+"])
def test_po_read_stops_at_the_first_record_past_the_end(po_read: Path, tmp_path: Path, hexa: bool) -> None:
    reader = po_read
    dump = tmp_path / "dump"
    dump.write_bytes(_dump([1, 5, 4095, 4096, 4100, 70000], hexa))
    first = subprocess.run([str(reader), "-f", str(dump), "0", "4096"], capture_output=True, check=True).stdout
    assert first == _dump([1, 5, 4095], hexa)
    everything = subprocess.run([str(reader), "-f", str(dump), "0"], capture_output=True, check=True).stdout
    assert everything == dump.read_bytes()


def test_po_read_is_static_and_cached(po_read: Path) -> None:
    reader = po_read
    assert build_reader() == reader  # the second call is the cache hit
    # Static: an ELF without a PT_INTERP program header (the guest has no dynamic loader for it).
    data = reader.read_bytes()
    assert data[:5] == b"\x7fELF\x02"
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    types = [int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little") for i in range(phnum)]
    assert types and 3 not in types  # PT_INTERP = 3


def test_po_read_usage_errors_exit_2(po_read: Path) -> None:
    reader = po_read
    assert subprocess.run([str(reader)], capture_output=True).returncode == 2
    assert subprocess.run([str(reader), "12x"], capture_output=True).returncode == 2
    missing = subprocess.run([str(reader), "-f", "/nonexistent", "0"], capture_output=True, text=True)
    assert missing.returncode == 1 and "/nonexistent" in missing.stderr


def test_po_read_mode_on_a_file_that_takes_none_exits_3_and_writes_nothing(po_read: Path, tmp_path: Path) -> None:
    # Exit 3 is how the collector's probe learns that a kernel has no mode=handle (6.x page_owner is 0400
    # and has no write); a regular file stands in for such a file and must come through unchanged.
    dump = tmp_path / "dump"
    dump.write_bytes(_dump([1, 5], True))
    proc = subprocess.run([str(po_read), "-f", str(dump), "-m", "handle", "0"], capture_output=True, text=True)
    assert proc.returncode == 3 and "mode=handle" in proc.stderr and proc.stdout == ""
    assert dump.read_bytes() == _dump([1, 5], True)
    assert reader_command(7, 9, mode="handle") == "/usr/bin/po-read -m handle 7 9"


def test_the_analysis_process_writes_the_raw_file_and_parses_it(tmp_path: Path, fixtures: Path) -> None:
    data = lzma.decompress((fixtures / "report_po612.txt.xz").read_bytes())
    worker = AnalysisWorker()
    try:
        for n in range(2):  # one process serves snapshot after snapshot
            path = tmp_path / f"{n:02d}-x.page_owner.zst"
            worker.begin(path, f"x{n}")
            for i in range(0, len(data), 100_000):
                worker.feed(data[i : i + 100_000])
            snap, total = worker.finish()
            assert total == len(data)
            assert zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read() == data
            expected = load_snapshot(fixtures / "report_po612.txt.xz")
            assert (snap.label, snap.records, snap.total_pages) == (f"x{n}", expected.records, expected.total_pages)
            assert snap.stacks.keys() == expected.stacks.keys()
    finally:
        worker.close()


def test_the_analysis_process_reports_bad_input_by_file_and_keeps_the_raw_bytes(tmp_path: Path) -> None:
    worker = AnalysisWorker()
    try:
        path = tmp_path / "00-bad.page_owner.zst"
        worker.begin(path, "bad")
        worker.feed(b"this is not a page_owner dump\n\n")
        with pytest.raises(InputError, match=r"00-bad\.page_owner\.zst"):
            worker.finish()
        assert zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read().startswith(b"this is not")
    finally:
        worker.close()
