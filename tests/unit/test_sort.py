"""pagelab sort: its deliberate differences from page_owner_sort (docs/sort.md), errors, and reader internals.

Where page_owner_sort is wrong (pipes, CRLF, a last record without its blank line, doubled blank
lines, errors that exit 0), pagelab sort must give the output page_owner_sort gives on the well-formed
equivalent input; each test shows both sides.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from missing import missing_source
from sort_ctool import build_c_tools, run_c

from pagelab import cli
from pagelab.pageowner import sort as sortmod
from pagelab.pageowner.sortopts import USAGE, getopt_long, parse_argv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PAGELAB = [sys.executable, "-m", "pagelab"]


@pytest.fixture(scope="module")
def c_tool() -> Path:
    try:
        return build_c_tools()[0]
    except FileNotFoundError as err:
        missing_source(f"cannot build page_owner_sort: {err}")


def _dump(name: str) -> bytes:
    return lzma.decompress((FIXTURES / name).read_bytes())


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sort") / "edge612.txt"
    path.write_bytes(_dump("sort_edge612.txt.xz"))
    return path


def c_output(tool: Path, args: list[str], data: bytes, tmp_path: Path) -> bytes:
    """page_owner_sort's output for ``data`` given as a regular file."""
    inp, out = tmp_path / "c-input.txt", tmp_path / "c-output.txt"
    inp.write_bytes(data)
    assert run_c(tool, [*args, str(inp), str(out)], tmp_path).returncode == 0
    return out.read_bytes()


def our_output(args: list[str], data: bytes, tmp_path: Path, name: str = "input.txt") -> bytes:
    inp, out = tmp_path / name, tmp_path / "output.txt"
    inp.write_bytes(data)
    assert cli.main(["sort", *args, str(inp), str(out)]) == 0
    return out.read_bytes()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- inputs page_owner_sort cannot read ---------------------------------------------------------------
def test_stdin_pipe_gives_page_owner_sorts_file_output(c_tool, edge, tmp_path):
    out = tmp_path / "out.txt"
    xz = subprocess.Popen(["xz", "-dc", str(FIXTURES / "sort_edge612.txt.xz")], stdout=subprocess.PIPE)
    ours = subprocess.run([*PAGELAB, "sort", "--cull", "st", "-", str(out)], stdin=xz.stdout, capture_output=True)
    xz.wait()
    assert ours.returncode == 0, ours.stderr
    assert out.read_bytes() == c_output(c_tool, ["--cull", "st"], edge.read_bytes(), tmp_path)


def test_page_owner_sort_reads_nothing_from_a_pipe(c_tool, edge, tmp_path):
    """Why stdin matters: the C tool sizes its table from st_size, 0 for a pipe."""
    out = tmp_path / "out.txt"
    with open(edge, "rb") as f:
        result = subprocess.run(["sh", "-c", f"cat | {c_tool} /dev/stdin {out}"], stdin=f, capture_output=True)
    assert result.returncode == 0  # ... and says so only on stderr
    assert out.read_bytes() == b""


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, lzma.compress, bz2.compress, zstandard.ZstdCompressor().compress],
    ids=["gz", "xz", "bz2", "zst"],
)
def test_compressed_input_is_detected_by_content(c_tool, edge, tmp_path, compress):
    data = edge.read_bytes()
    assert our_output(["-m"], compress(data), tmp_path, name="dump.bin") == c_output(c_tool, ["-m"], data, tmp_path)


def test_output_dash_is_stdout(c_tool, edge, tmp_path):
    ours = subprocess.run([*PAGELAB, "sort", "-n", str(edge), "-"], capture_output=True)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == c_output(c_tool, ["-n"], edge.read_bytes(), tmp_path)
    assert b"loaded" in ours.stderr and b"loaded" not in ours.stdout


def test_crlf_input_parses_like_lf(c_tool, edge, tmp_path):
    data = edge.read_bytes()
    crlf = data.replace(b"\n", b"\r\n")
    assert c_output(c_tool, [], crlf, tmp_path) == b""  # page_owner_sort finds no blank line
    assert our_output([], crlf, tmp_path) == c_output(c_tool, [], data, tmp_path)


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["no-blank-line", "no-final-newline"])
def test_last_record_without_its_blank_line_is_counted_with_a_warning(c_tool, edge, tmp_path, capsys, ending):
    data = edge.read_bytes()
    assert data.endswith(b"\n\n")
    cut = data[:-2] + ending
    assert c_output(c_tool, ["--cull", "st"], cut, tmp_path) != c_output(c_tool, ["--cull", "st"], data, tmp_path)
    capsys.readouterr()
    assert our_output(["--cull", "st"], cut, tmp_path) == c_output(c_tool, ["--cull", "st"], data, tmp_path)
    assert "last record has no closing blank line" in capsys.readouterr().err


def test_doubled_blank_lines_are_not_records(c_tool, edge, tmp_path):
    data = edge.read_bytes()
    doubled = b"\n" + data.replace(b"\n\n", b"\n\n\n", 5)
    assert re.search(rb"\d+ times, 0 pages, allocated by [A-Z ]+:\n\n", c_output(c_tool, [], doubled, tmp_path))
    assert our_output([], doubled, tmp_path) == c_output(c_tool, [], data, tmp_path)


def test_output_may_be_the_input_file(c_tool, edge, tmp_path):
    path = tmp_path / "dump.txt"
    path.write_bytes(edge.read_bytes())
    assert cli.main(["sort", "-m", str(path), str(path)]) == 0
    assert path.read_bytes() == c_output(c_tool, ["-m"], edge.read_bytes(), tmp_path)


def test_posixly_correct_stops_at_the_first_positional_like_glibc(c_tool, edge, tmp_path, monkeypatch):
    monkeypatch.setenv("POSIXLY_CORRECT", "1")
    monkeypatch.chdir(tmp_path)
    assert run_c(c_tool, [str(edge), "-m", "ignored"], tmp_path).returncode == 0
    theirs = (tmp_path / "-m").read_bytes()  # "-m" is the output file
    (tmp_path / "-m").unlink()
    assert cli.main(["sort", str(edge), "-m", "ignored"]) == 0
    assert (tmp_path / "-m").read_bytes() == theirs


# -- errors: one line, exit 2 ---------------------------------------------------------------------------
RECORD = _dump("sort_edge612.txt.xz").split(b"\n\n")[0] + b"\n\n"
LINES = RECORD.count(b"\n")  # lines per record, its blank line included
SHOW_STACKS = b" hoard_stash_pages+0x1c/0x54 [hoard]\n do_syscall_64+0x82/0x160\nnr_base_pages: 512\n\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no page_owner records"),
        (b"\n\n\n", "no page_owner records"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, ":3: NUL byte"),
        (b"\xff\xfe garbage \x01\x02\n" * 3, ":1: expected a page_owner record"),
        (b"root:x:0:0:root:/root:/bin/bash\n", ":1: expected a page_owner record"),
        (SHOW_STACKS, ":1: expected a page_owner record"),
        (RECORD * 3 + b"hello\nworld\n\n" + RECORD, f":{LINES * 3 + 1}: expected a page_owner record"),
        (RECORD * 2 + RECORD.replace(b"ts ", b"ts \x00"), f":{LINES * 2 + 1}: NUL byte"),
        (RECORD[:-1] + b" x\n" * 50000 + b"\n", ":1: record longer than 128 KiB"),
    ],
    ids=["empty", "blank", "binary", "garbage", "passwd", "show_stacks", "junk-block", "nul", "huge-record"],
)
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert cli.main(["sort", str(path), str(tmp_path / "out")]) == 2
    err = one_error_line(capsys)
    assert f"error: {path}" in err
    assert expected in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing", "directory", "corrupt-xz"])
def test_unreadable_input_is_one_line(tmp_path, capsys, case):
    path = tmp_path / "in"
    if case == "directory":
        path.mkdir()
    elif case == "corrupt-xz":
        path.write_bytes(lzma.compress(RECORD * 50)[:-40] + b"\x00" * 40)
    out = tmp_path / "out"
    out.write_bytes(b"keep me")
    assert cli.main(["sort", str(path), str(out)]) == 2
    assert str(path) in one_error_line(capsys)
    assert out.read_bytes() == b"keep me"  # page_owner_sort truncates it before failing


@pytest.mark.parametrize("case", ["no-such-dir", "a-directory"])
def test_unwritable_output_is_one_line(edge, tmp_path, capsys, case):
    out = tmp_path / "nope" / "out" if case == "no-such-dir" else tmp_path
    assert cli.main(["sort", str(edge), str(out)]) == 2
    assert str(out) in one_error_line(capsys)


def test_help_prints_usage_and_exits_0(capsys):
    assert cli.main(["sort", "--help"]) == 0
    assert capsys.readouterr().out == USAGE
    assert cli.main(["sort", "-mh"]) == 0


def test_ignored_arguments_are_warned_about(edge, tmp_path, capsys):
    assert cli.main(["sort", "-m", "--sort", "pid", str(edge), str(tmp_path / "o"), "extra"]) == 0
    err = capsys.readouterr().err
    assert "--sort is ignored because -m is given" in err
    assert "extra arguments ignored: extra" in err


# -- option parsing ---------------------------------------------------------------------------------------
def test_getopt_permutes_and_stops_at_double_dash():
    positionals: list[str] = []
    opts = list(getopt_long(["a", "-m", "--cu=st", "b", "--pid", "-5", "--", "-t", "c"], positionals))
    assert opts == [("m", None), ("cull", "st"), ("pid", "-5")]
    assert positionals == ["a", "b", "-t", "c"]


def test_parse_argv_follows_page_owner_sort_semantics():
    opts = parse_argv(["--cull", "ator", "--cull=st,n", "--pid", "1,4294967295", "--name=a,b", "-d", "i", "o"])
    assert opts.cull == {"allocator", "stacktrace", "comm"}
    assert opts.pids == (1, -1)
    assert opts.comms == (b"a", b"b")
    assert opts.sort_keys == (("num", -1),) and opts.strip_ts and opts.debug
    assert parse_argv(["--sort", "at,-p", "i", "o"]).strip_ts is False
    assert parse_argv(["--sort", "p,at", "i", "o"]).strip_ts is True
    assert parse_argv(["-a", "i", "o"]).sort_keys == (("ts", 1),)


# -- the reader: fast path, exact path, chunk boundaries ----------------------------------------------------
ALL_DUMPS = ["sort_po61.txt.xz", "sort_edge61.txt.xz", "sort_edge612.txt.xz", "sort_odd612.txt.xz"]


@pytest.mark.parametrize("fixture", ALL_DUMPS)
@pytest.mark.parametrize("args", [[], ["-a"], ["--cull", "p,st,ator"], ["--sort", "pid,at"]], ids=" ".join)
def test_exact_reader_alone_gives_the_same_output(tmp_path, monkeypatch, fixture, args):
    data = _dump(fixture)
    fast = our_output(args, data, tmp_path)
    monkeypatch.setattr(sortmod._Reader, "_fast", lambda self, seg: False)
    assert our_output(args, data, tmp_path) == fast


@pytest.mark.parametrize("chunk", [97, 1000, 4096])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_chunk_boundaries_do_not_change_the_output(c_tool, tmp_path, monkeypatch, chunk, crlf):
    data = _dump("sort_odd612.txt.xz") + _dump("sort_edge612.txt.xz")
    expected = c_output(c_tool, ["--cull", "st,p"], data, tmp_path)
    monkeypatch.setattr(sortmod, "_CHUNK", chunk)
    fed = data.replace(b"\n", b"\r\n") if crlf else data
    assert our_output(["--cull", "st,p"], fed, tmp_path) == expected


def test_fast_path_takes_real_dumps_whole(tmp_path, capsys):
    """The exact line reader is a fallback: a real dump must not need it (it is ~10x slower)."""
    assert our_output(["-d"], _dump("sort_po612.txt.xz"), tmp_path)
    assert "0 segment(s) read by the exact line reader" in capsys.readouterr().err


POOL = [
    rec + b"\n\n"
    for name in ("sort_edge612.txt.xz", "sort_odd612.txt.xz", "sort_edge61.txt.xz")
    for rec in _dump(name).split(b"\n\n")[:-1]
]
OPTIONS = [
    [],
    ["-a"],
    ["-m"],
    ["-n"],
    ["-s"],
    ["-P"],
    ["--cull", "st"],
    ["--cull", "p,n,ator"],
    ["--cull", "tg,st", "-m"],
    ["--pid", "0,5,48", "--cull", "st"],
    ["--name", "dd,nopfn,ts 42 ns", "-p"],
]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.sampled_from(POOL), min_size=1, max_size=40), args=st.sampled_from(OPTIONS))
def test_any_mix_of_records_matches_page_owner_sort(c_tool, tmp_path, records, args):
    data = b"".join(records)
    assert our_output(args, data, tmp_path) == c_output(c_tool, args, data, tmp_path)


def _make_dump_module():
    spec = importlib.util.spec_from_file_location(
        "make_dump", FIXTURES.parents[1] / "scripts" / "bench" / "make_dump.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_dumps_replay_records_deterministically(c_tool, tmp_path):
    """scripts/bench/make_dump.py: same seed, same bytes; fresh PFNs and times; still sorted alike."""
    make_dump = _make_dump_module()
    records = make_dump.load_records([str(FIXTURES / "sort_edge61.txt.xz")])

    def generate(seed: int, fresh: bool = False) -> bytes:
        path = tmp_path / f"gen{seed}{fresh}.txt"
        with open(path, "wb") as out:
            assert make_dump.generate(records, out, count=3000, size=None, seed=seed, fresh_free_ts=fresh)[0] == 3000
        return path.read_bytes()

    first = generate(1)
    assert first == generate(1) and first != generate(2)
    assert first.count(b"\n\nPage allocated via order ") == 2999
    pfns = re.findall(rb"\nPFN (\d+) ", first)
    assert len(set(pfns)) == 3000  # every record has its own PFN
    for data, args in ((first, ["--cull", "st"]), (generate(1, fresh=True), [])):
        assert our_output(args, data, tmp_path) == c_output(c_tool, args, data, tmp_path)


# -- two processes over file halves -------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["sort_po61.txt.xz", "sort_edge61.txt.xz", "sort_po612.txt.xz"])
@pytest.mark.parametrize("args", [[], ["--cull", "st"], ["-P", "--cull", "p,ator"], ["--sort", "n,at"]], ids=" ".join)
def test_two_processes_give_the_same_output(c_tool, tmp_path, monkeypatch, capsys, fixture, args):
    data = _dump(fixture)
    expected = our_output(args, data, tmp_path)  # small files: one process
    monkeypatch.setattr(sortmod, "_PARALLEL_MIN", 0)
    capsys.readouterr()
    assert our_output(["-d", *args], data, tmp_path) == expected
    assert "debug: two processes" in capsys.readouterr().err
    if "--sort" not in args:
        assert expected == c_output(c_tool, args, data, tmp_path)


@pytest.mark.parametrize("why", ["odd records in the second half", "too many distinct records"])
def test_second_half_falls_back_to_the_parent(c_tool, tmp_path, monkeypatch, capsys, why):
    data = _dump("sort_edge612.txt.xz") + _dump("sort_odd612.txt.xz")  # the odd records need the exact reader
    monkeypatch.setattr(sortmod, "_PARALLEL_MIN", 0)
    if why == "too many distinct records":
        data = _dump("sort_odd612.txt.xz") + _dump("sort_edge61.txt.xz")
        monkeypatch.setattr(sortmod, "_WORKER_MAX_DISTINCT", 3)
    capsys.readouterr()
    assert our_output(["-d", "--cull", "st,p"], data, tmp_path) == c_output(c_tool, ["--cull", "st,p"], data, tmp_path)
    assert "the second half was read here" in capsys.readouterr().err


@pytest.mark.parametrize("why", ["PAGELAB_SORT_JOBS=1", "-a keeps every record distinct"])
def test_one_process_when_asked_or_useless(tmp_path, monkeypatch, capsys, why):
    monkeypatch.setattr(sortmod, "_PARALLEL_MIN", 0)
    if why.startswith("PAGELAB"):
        monkeypatch.setenv("PAGELAB_SORT_JOBS", "1")
    our_output(["-d", "-a"] if why.startswith("-a") else ["-d"], _dump("sort_po61.txt.xz"), tmp_path)
    assert "two processes" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_big_generated_dump_matches_in_two_processes(c_tool, tmp_path, capsys):
    """End to end at benchmark scale (40 MB, no thresholds patched): the worker really runs."""
    make_dump = _make_dump_module()
    dump = tmp_path / "big.txt"
    with open(dump, "wb") as out:
        make_dump.generate(
            make_dump.load_records([str(FIXTURES / "sort_po612.txt.xz")]), out, count=None, size=40 << 20, seed=3
        )
    for args in ([], ["--cull", "stacktrace"]):
        ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
        capsys.readouterr()
        assert cli.main(["sort", "-d", *args, str(dump), str(ours)]) == 0
        assert "debug: two processes" in capsys.readouterr().err
        assert run_c(c_tool, [*args, str(dump), str(theirs)], tmp_path).returncode == 0
        assert ours.read_bytes() == theirs.read_bytes()


def test_compat_and_stacks_options_keep_the_c_tools_abbreviations() -> None:
    from pagelab.errors import UsageError
    from pagelab.pageowner.sortopts import parse_argv

    assert parse_argv(["a", "b"]).compat == "7.3"  # the newest by default
    opts = parse_argv(["--co", "6.12", "--st=s.txt", "--c", "st", "--s", "p", "a", "b"])
    assert (opts.compat, opts.stacks, opts.cull, opts.sort_keys) == ("6.12", "s.txt", {"stacktrace"}, (("pid", 1),))
    with pytest.raises(UsageError, match=r"--compat expects one of 6\.12, 7\.3, got .7\.4."):
        parse_argv(["--compat", "7.4", "a", "b"])


@pytest.mark.parametrize(
    ("field", "compat", "expect"),
    [
        ("pid 0000000000000000000000001,", "6.12", "PID 1"),  # 25 digits: 6.12 takes the number
        ("pid 0000000000000000000000001,", "7.3", "PID -1"),  # 7.3's search_pattern refuses it
        ("pid 000000000000000000000001,", "7.3", "PID 1"),  # 24 digits fit FIELD_BUFF
    ],
)
def test_long_fields_read_as_each_c_version_reads_them(tmp_path: Path, field: str, compat: str, expect: str) -> None:
    from pagelab import cli

    dump = tmp_path / "d.txt"
    dump.write_text(
        f"Page allocated via order 0, mask 0x0(), {field} tgid 1 (sh), ts 5 ns\n"
        "PFN 0x1 type Unmovable Block 0 type Unmovable Flags 0x0()\n a+0x1/0x2\n\n"
    )
    assert cli.main(["sort", "--compat", compat, "--cull", "p", str(dump), str(tmp_path / "o")]) == 0
    assert (tmp_path / "o").read_text().startswith(f"1 times, 1 pages, {expect}\n")
