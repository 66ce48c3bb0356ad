"""pagelab sort against the kernel's page_owner_sort (6.12 and 7.3, each with its --compat) built from the
trees: byte-identical output files.

Every option alone and a broad set of combinations (sort options, cull keys, filters with lists, -d,
permuted argv, abbreviations), over real 6.1 and 6.12 dumps and hand-made edge-case dumps. ``--sort``
alone is compared with the C tool carrying the fix of its 6.12 bug (the one deliberate output
difference, see docs/sort.md); usage errors must exit 2 with one line where the C tool prints usage.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
from missing import missing_source
from sort_ctool import VERSIONS, build_c_tools, compat_of, run_c

from pagelab import cli

# Compiles the kernel's page_owner_sort (a C tool): never in the fast selection (tests/conftest.py).
pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DUMPS = {
    "po61": "sort_po61.txt.xz",  # real 6.1 dump (boot), decimal PFNs, free_ts, slab flags
    "po612": "sort_po612.txt.xz",  # real 6.12 dump (tmpfs writes), hex PFNs
    "edge61": "sort_edge61.txt.xz",
    "edge612": "sort_edge612.txt.xz",
    "odd612": "sort_odd612.txt.xz",  # unusual records: only the exact line reader takes them
}
SMALL = ["po61", "edge61", "edge612", "odd612"]

# Every option the C tool accepts alone (its default needs no option).
SINGLE = [
    [],
    ["-a"],
    ["-m"],
    ["-n"],
    ["-p"],
    ["-P"],
    ["-s"],
    ["-t"],
    ["-d"],
    ["--cull", "pid"],
    ["--cull", "tg"],
    ["--cull", "name"],
    ["--cull", "st"],
    ["--cull", "allocator"],
    ["--cull", "p"],
    ["--cull", "tgid"],
    ["--cull", "n"],
    ["--cull", "stacktrace"],
    ["--cull", "ator"],
    ["--pid", "1"],
    ["--tgid", "48,120,70"],
    ["--name", "swapper/0"],
]
COMBINATIONS = [
    ["--cull", "st,p"],
    ["--cull", "p,tg,n"],
    ["--cull", "stacktrace,allocator"],
    ["--cull", "ator,st"],  # compared in the fixed order whatever the user's order
    ["--cull=n,st,ator"],
    ["--cull", "pid,tgid,name,stacktrace,allocator"],
    ["--cull", "p", "--cull", "st"],  # repeated --cull accumulates
    ["--cull", "st", "-m"],
    ["--cull", "p", "-p"],
    ["--cull", "n", "-n"],
    ["--cull", "ator", "-a"],
    ["--cull", "st,tg", "-s"],
    ["--cull", "tg", "-P"],
    ["--cull", "p,st", "-t"],
    ["--cull", "st", "-a"],
    ["-m", "--pid", "0,1,2,48"],
    ["--tgid", "120", "--cull", "st"],
    ["--name", "dd,hoard-load,a b(c) d,swapper", "--cull", "st", "-m"],
    ["--pid", "48,812", "--name", "dd", "-n"],
    ["--pid", "-1,5", "--cull", "p"],
    ["--pid", " 7,+8, 9", "-p"],  # strtol: leading blanks and signs
    ["--pid", "4294967297"],  # strtol into an int: 1
    ["--name", "kworker/u4:0,my worker (2)", "--tgid", "801,899", "--cull", "ator", "-P"],
    ["--name", "", "--cull", "n"],
    ["--pid", "1", "--pid", "2"],  # the last list wins
    ["-d", "-m", "--cull", "st"],
    ["-md"],
    ["-tt", "-d"],
    ["{in}", "-m", "{out}"],  # glibc permutes argv: options after the positionals
    ["{in}", "{out}", "--cull", "st", "-s"],
    ["--cu", "st", "--na=dd,swapper"],  # unique prefixes of long options
    ["--p=0", "--t", "0", "--c=p"],
    ["-m", "--", "{in}", "{out}"],
    ["--sort", "pid", "-m"],  # a short sort option wins over --sort (6.12 and pagelab alike)
    ["-t", "--sort", "n"],
    ["{in}", "{out}", "extra-argument"],  # ignored
]
# --sort without a short sort option: 6.12 ignores it (its bug); pagelab honours it, like the fixed tool.
SORT_KEYS = [
    ["--sort", "pid"],
    ["--sort", "-pid,n"],
    ["--sort", "st,-T"],
    ["--sort", "at"],
    ["--sort", "pid,at"],
    ["--sort", "-at,st"],
    ["--sort", "-ator,p"],
    ["--sort", "tg,-p"],
    ["--sort", "n", "--cull", "st"],
    ["--cull", "st", "--sort", "-p"],
    ["--sort=-st"],
    ["--sort", "T"],
    ["--sort", "+at", "--cull", "p"],
    ["--so", "p,n", "--cull", "n,ator"],
    ["--sort", "name,-tgid,alloc_ts", "--pid", "0,1,48"],
    ["--sort", "stacktrace,txt,allocator", "--cull", "p,st"],
    ["--sort", "-p,n", "--cull", "p,st", "--name", "dd,swapper/0,kworker/u4:0,sh"],  # sort + cull + filter
    ["--tgid", "1,48,120,801", "--sort", "-ator,-at", "--cull", "tg,ator"],
]
# Rejected by the C tool (usage or option error, exit 1): exit 2 and one line here.
USAGE_ERRORS = [
    [],
    ["{in}"],
    ["-x", "{in}", "{out}"],
    ["-m", "-p", "{in}", "{out}"],
    ["-a", "-s", "{in}", "{out}"],
    ["--pid", "x", "{in}", "{out}"],
    ["--pid", "1,,2", "{in}", "{out}"],
    ["--pid", "1,", "{in}", "{out}"],
    ["--tgid", "", "{in}", "{out}"],
    ["--pid", "99999999999999999999", "{in}", "{out}"],
    ["--cull", "txt", "{in}", "{out}"],
    ["--cull", "at", "{in}", "{out}"],
    ["--cull", "", "{in}", "{out}"],
    ["--cull", "st,bogus", "{in}", "{out}"],
    ["--cull", "comm", "{in}", "{out}"],  # page_owner_sort's usage names "comm", its parser only "name"
    ["--sort", "comm", "{in}", "{out}"],
    ["--sort", "bogus", "{in}", "{out}"],
    ["--sort", "-", "{in}", "{out}"],
    ["--sort", "pid,", "{in}", "{out}"],
    ["--foo", "{in}", "{out}"],
    ["--=3", "{in}", "{out}"],
    ["{in}", "{out}", "--pid"],
    ["--sortx=p", "{in}", "{out}"],
    ["-m", "-Z", "{in}", "{out}"],
]


@pytest.fixture(scope="session", params=VERSIONS)
def c_tools(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """Each test runs against 6.12's and 7.3's page_owner_sort, pagelab sort with the matching --compat."""
    try:
        return build_c_tools(request.param)
    except FileNotFoundError as err:
        missing_source(f"cannot build page_owner_sort {request.param}: {err}")


@pytest.fixture(scope="session")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture dumps decompressed: the C tool needs regular files."""
    out = tmp_path_factory.mktemp("sort-dumps")
    paths = {}
    for name, fixture in DUMPS.items():
        path = out / f"{name}.txt"
        path.write_bytes(lzma.decompress((FIXTURES / fixture).read_bytes()))
        paths[name] = path
    return paths


def _argv(template: list[str], inp: Path, out: Path) -> list[str]:
    if "{in}" not in template:
        template = [*template, "{in}", "{out}"]
    return [str(inp) if a == "{in}" else str(out) if a == "{out}" else a for a in template]


def assert_same_output(ours: bytes, theirs: bytes) -> None:
    """Byte equality with a short report of the first difference."""
    if ours == theirs:
        return
    a, b = ours.splitlines(keepends=True), theirs.splitlines(keepends=True)
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    pytest.fail(
        f"outputs differ at line {i + 1} (pagelab {len(ours)} bytes, page_owner_sort {len(theirs)} bytes):\n"
        f"  pagelab:         {a[i] if i < len(a) else b'<end>'!r}\n"
        f"  page_owner_sort: {b[i] if i < len(b) else b'<end>'!r}"
    )


def compare(tool: Path, template: list[str], inp: Path, tmp_path: Path) -> bytes:
    """Run both on the same argv; assert identical output files; return the output."""
    c_out, our_out = tmp_path / "c.out", tmp_path / "pagelab.out"
    result = run_c(tool, _argv(template, inp, c_out), tmp_path)
    assert result.returncode == 0, result.stderr
    assert cli.main(["sort", "--compat", compat_of(tool), *_argv(template, inp, our_out)]) == 0
    theirs = c_out.read_bytes()
    assert_same_output(our_out.read_bytes(), theirs)
    return theirs


def _id(argv: list[str]) -> str:
    return " ".join(argv) or "default"


@pytest.mark.parametrize("dump", SMALL)
@pytest.mark.parametrize("template", SINGLE + COMBINATIONS, ids=_id)
def test_output_matches_page_owner_sort(c_tools, dumps, tmp_path, dump, template):
    compare(c_tools[0], template, dumps[dump], tmp_path)


@pytest.mark.parametrize(
    "template",
    [[], ["-a"], ["-m"], ["-n"], ["-s"], ["--cull", "st"], ["--cull", "p,st,ator", "-P"], ["--name", "dd", "-m"]],
    ids=_id,
)
def test_output_matches_page_owner_sort_on_the_larger_612_dump(c_tools, dumps, tmp_path, template):
    assert compare(c_tools[0], template, dumps["po612"], tmp_path)


@pytest.mark.parametrize("dump", ["po61", "edge612", "odd612"])
@pytest.mark.parametrize("template", SORT_KEYS, ids=_id)
def test_sort_keys_match_the_fixed_page_owner_sort(c_tools, dumps, tmp_path, dump, template):
    compare(c_tools[1], template, dumps[dump], tmp_path)


@pytest.mark.parametrize("dump", ["po61", "edge612"])
@pytest.mark.parametrize("sign", ["", "+", "-"], ids=["asc", "plus", "minus"])
@pytest.mark.parametrize("key", ["p", "tg", "n", "st", "T", "at", "ator"])
def test_each_sort_key_with_each_sign(c_tools, dumps, tmp_path, dump, sign, key):
    compare(c_tools[1], ["--sort", f"{sign}{key}"], dumps[dump], tmp_path)


def test_page_owner_sort_612_ignores_a_bare_sort_and_pagelab_does_not(c_tools, dumps, tmp_path):
    """The deliberate difference: 6.12 prints its default order for --sort pid; pagelab sorts by pid."""
    stock, fixed = c_tools
    inp = dumps["edge612"]
    for args, name in (([], "default.out"), (["--sort", "pid"], "stock.out")):
        assert run_c(stock, [*args, str(inp), str(tmp_path / name)], tmp_path).returncode == 0
    default = (tmp_path / "default.out").read_bytes()
    assert (tmp_path / "stock.out").read_bytes() == default
    assert compare(fixed, ["--sort", "pid"], inp, tmp_path) != default


@pytest.mark.parametrize("template", USAGE_ERRORS, ids=_id)
def test_usage_errors_exit_2_with_one_line(c_tools, dumps, tmp_path, capsys, template):
    inp, out = dumps["edge612"], tmp_path / "out"
    result = run_c(c_tools[0], _argv(template, inp, out) if "{in}" in template else template, tmp_path)
    assert result.returncode == 1, "page_owner_sort accepted it"
    argv = [str(inp) if a == "{in}" else str(out) if a == "{out}" else a for a in template]
    capsys.readouterr()
    assert cli.main(["sort", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: pagelab")  # "--=3" is refused by the top-level parser already
    assert not out.exists()


def _tool(version: str) -> Path:
    try:
        return build_c_tools(version)[0]
    except FileNotFoundError as err:
        missing_source(f"cannot build page_owner_sort {version}: {err}")


def test_7_3_stops_at_a_record_without_tgid_and_name_and_pagelab_says_so(tmp_path, capsys):
    """5.11-5.17 dumps print no 'tgid N (COMM)': 7.3's get_comm() fails ("Out of memory", no output)."""
    inp = tmp_path / "old.txt"
    inp.write_bytes(lzma.decompress((FIXTURES / "parse_5_11.txt.xz").read_bytes()))
    assert b"tgid" not in inp.read_bytes()
    result = run_c(_tool("7.3"), [str(inp), str(tmp_path / "c73.out")], tmp_path)
    assert b"Out of memory" in result.stderr and not (tmp_path / "c73.out").exists()
    capsys.readouterr()
    assert cli.main(["sort", str(inp), str(tmp_path / "ours.out")]) == 2
    err = capsys.readouterr().err
    assert "page_owner_sort 7.3 stops there" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ours.out").exists()
    # 6.12 reads them with an empty name, and so does --compat 6.12.
    assert compare(_tool("6.12"), ["--cull", "n"], inp, tmp_path)


def test_help_exits_0_with_the_usage_as_in_7_3(tmp_path, capsys):
    for flag in ("-h", "--help"):
        result = run_c(_tool("7.3"), [flag], tmp_path)
        assert result.returncode == 0 and result.stdout.startswith(b"Usage:")
        assert run_c(_tool("6.12"), [flag], tmp_path).returncode == 1
        capsys.readouterr()
        assert cli.main(["sort", flag]) == 0
        assert capsys.readouterr().out.startswith("Usage: pagelab sort")
