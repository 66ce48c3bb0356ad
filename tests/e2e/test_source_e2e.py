"""Source lines, MAINTAINERS sections and allocinfo on a real guest: the truth tests of the source lens.

One extra kernel configuration for all of them (CI budget): the 6.12 default plus ``debuginfo`` and
``alloc-profiling``. One run (leaky-leak, leaky-slab, tmpfs-grow × 2) feeds every test.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pagelab.cache import cache_dir
from pagelab.cli import main
from pagelab.kernel.build import BuildOptions, BuildResult, build_kernel
from pagelab.source.lens import SourceLens
from pagelab.source.maintainers import Maintainers
from pagelab.source.symbolize import Symbolizer, parse
from pagelab.ui import UI

pytestmark = [pytest.mark.vm, pytest.mark.slow]

LEAKY_C = Path(__file__).resolve().parents[2] / "guest" / "modules" / "leaky" / "leaky.c"
ITERATIONS = 2
SLAB_OBJECTS = 2048  # leaky-slab's default (guest/workloads/leaky-slab.sh)
OBJECT_SIZE = 1024  # LEAKY_OBJECT_SIZE in leaky.c


@pytest.fixture(scope="module")
def build() -> BuildResult:
    return build_kernel(BuildOptions(fragments=["debuginfo", "alloc-profiling"]), UI(plain=True))


@pytest.fixture(scope="module")
def run(build: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("source") / "run"
    argv = ["run", "--fragment", "debuginfo", "--fragment", "alloc-profiling", "--ci", "--accel", "tcg"]
    for w in ("leaky-leak", "leaky-slab", "tmpfs-grow"):
        argv += ["--workload", w]
    code = main([*argv, "--iterations", str(ITERATIONS), "--out", str(out)])
    assert code in (0, 1), (out / "report.txt").read_text() if (out / "report.txt").exists() else code
    return out


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def _line_in(function: str, call: str) -> int:
    """The line of ``call`` inside ``function`` in leaky.c, read from the source (not from pagelab)."""
    lines = LEAKY_C.read_text().splitlines()
    start = next(i for i, text in enumerate(lines) if re.search(rf"\b{function}\(", text) and "noinline" in text)
    return next(i + 1 for i in range(start, len(lines)) if call in lines[i])


def _suspect(report: dict, callsite: str) -> dict:
    return next(s for s in report["suspects"] if s["callsite"] == callsite)


def _get_maintainer_sections(tree: Path, path: str) -> list[str]:
    """Section titles in get_maintainer.pl's order (the tree's own script: the reference)."""
    proc = subprocess.run(
        ["perl", "scripts/get_maintainer.pl", "--no-git", "--no-git-fallback", "--sections", "-f", path],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    titles = []
    for block in proc.stdout.split("\n\n"):
        first = block.strip().splitlines()[0] if block.strip() else ""
        if first and not re.match(r"^[A-Z]:\t", first):
            titles.append(first)
    return titles


def test_the_build_says_it_has_line_info(build: BuildResult) -> None:
    assert build.to_json()["line_info"] is True
    assert json.loads(build.metadata.read_text()).get("line_info", True) is True


def test_leaky_suspects_resolve_to_the_lines_of_their_allocation_calls(run: Path) -> None:
    report = _report(run)
    page = _suspect(report, "leaky_alloc_page")
    assert page["source"].endswith(f"/leaky.c:{_line_in('leaky_alloc_page', 'alloc_pages(')}"), page
    slab = _suspect(report, "leaky_slab_leak")
    assert slab["source"].endswith(f"/leaky.c:{_line_in('leaky_slab_leak', 'kmalloc(')}"), slab
    # kmalloc is an inline wrapper: the chain says so, innermost first, ending at the module's line.
    assert any(step["function"].startswith("kmalloc") for step in slab["inlined"]), slab["inlined"]
    assert slab["subsystem"] is None  # an out-of-tree module is no MAINTAINERS section's
    text = (run / "report.txt").read_text()
    assert f"at {page['source']}" in text


def test_a_tmpfs_suspect_resolves_into_mm_shmem_c_with_its_maintainers_section(run: Path, build: BuildResult) -> None:
    report = _report(run)
    shmem = next(s for s in report["suspects"] if s["callsite"].startswith("shmem_get_folio"))
    assert re.fullmatch(r"mm/shmem\.c:\d+", shmem["source"]), shmem
    tree = (build.build_dir / "source").resolve()
    expected = _get_maintainer_sections(tree, "mm/shmem.c")
    assert shmem["subsystem"] == expected[0] == "TMPFS (SHMEM FILESYSTEM)", expected
    # The line is inside shmem_get_folio_gfp's body in the tree's mm/shmem.c.
    lines = (tree / "mm" / "shmem.c").read_text().splitlines()
    line = int(shmem["source"].rsplit(":", 1)[1])
    start = next(i for i, t in enumerate(lines, 1) if re.match(r"^static int shmem_get_folio_gfp\(", t))
    end = next(i for i, t in enumerate(lines, 1) if i > start and t == "}")
    assert start < line < end, (start, line, end)
    assert f"· {shmem['subsystem']}" in (run / "report.txt").read_text()


def test_allocinfo_growth_shows_the_slab_leak_bytes_at_its_line(run: Path) -> None:
    assert sorted(p.name for p in (run / "snapshots").glob("*.allocinfo.zst")) == [
        "00-baseline.allocinfo.zst",
        "01-iter1.allocinfo.zst",
        "02-iter2.allocinfo.zst",
    ]
    report = _report(run)
    line = _line_in("leaky_slab_leak", "kmalloc(")
    rows = [g for g in report["allocinfo"]["growth"] if g["function"] == "leaky_slab_leak"]
    assert len(rows) == 1, report["allocinfo"]["growth"][:5]
    row = rows[0]
    assert (row["module"], row["line"], row["file"].endswith("/leaky.c")) == ("leaky", line, True), row
    assert row["bytes"] == ITERATIONS * SLAB_OBJECTS * OBJECT_SIZE and row["calls"] == ITERATIONS * SLAB_OBJECTS
    # The page owner suspect of the same callsite carries the row: bytes and line without reading DWARF.
    assert _suspect(report, "leaky_slab_leak")["allocinfo"] == row
    # tmpfs: allocinfo tags shmem_alloc_folio, which 6.12 inlines into the frame page owner prints.
    shmem = next(s for s in report["suspects"] if s["callsite"].startswith("shmem_get_folio"))
    assert shmem["allocinfo"] is not None and shmem["allocinfo"]["file"] == "mm/shmem.c", shmem["allocinfo"]


def test_report_and_diff_resolve_offline_against_the_build(run: Path, build: BuildResult, capsys) -> None:
    snaps = run / "snapshots"
    last = str(snaps / "02-iter2.page_owner.zst")
    assert main(["report", last, "--build", str(build.build_dir), "--by", "file,subsystem", "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    files = {g["key"]: g["pages"] for g in rep["groups"]["file"]}
    subsystems = {g["key"] for g in rep["groups"]["subsystem"]}
    assert files.get("mm/shmem.c", 0) >= ITERATIONS * 8 * 256  # tmpfs-grow: 8 MiB an iteration
    assert "TMPFS (SHMEM FILESYSTEM)" in subsystems
    resolved = [s for s in rep["stacks"] if s["source"]]
    assert len(resolved) >= 0.95 * len(rep["stacks"]), [s["frames"][:3] for s in rep["stacks"] if not s["source"]][:5]

    base = str(snaps / "00-baseline.page_owner.zst")
    assert main(["diff", base, last, "--build", str(build.build_dir), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert _suspect(d, "leaky_slab_leak")["source"] == _suspect(_report(run), "leaky_slab_leak")["source"]
    assert d["allocinfo"]["growth"][0]["bytes"] > 0

    a, b = str(snaps / "00-baseline.allocinfo.zst"), str(snaps / "02-iter2.allocinfo.zst")
    assert main(["diff", a, b, "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)["allocinfo"]["growth"]
    assert any(r["function"] == "leaky_slab_leak" for r in rows)


def test_every_distinct_frame_resolves_in_one_batch_per_binary_then_from_the_cache(
    run: Path, build: BuildResult, tmp_path: Path, monkeypatch
) -> None:
    from pagelab.pageowner.analyse import load_snapshot

    # The test module's .ko is in the run's cache (pagelab/kernel/modules.py): pass it as the run passes an
    # --upload'ed one, then point the cache at an empty directory so the symbol cache is cold.
    # Several builds of it may be there (one per kernel): the symbolizer keeps the one whose symbol sizes match.
    kos = sorted(cache_dir("modules", "leaky").glob("*/src/leaky.ko"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    snap = load_snapshot(run / "snapshots" / "02-iter2.page_owner.zst")
    frames = {f for st in snap.stacks for f in st}
    modules = {f.rsplit("[", 1)[1].rstrip("]") for f in frames if f.endswith("]")}
    cold = Symbolizer(build.build_dir, kos)
    first = cold.resolve(frames)
    assert cold.stats.processes <= 1 + 2 * len(modules)  # vmlinux once; a module once per text section
    assert not cold.stats.missing_modules and "leaky" in modules
    # Every frame with a symbol resolves: C functions, assembly entry points, the module's functions.
    assert [f for f in frames if parse(f) is not None and first[f] is None] == []
    assert all(first[f] is not None for f in frames if f.endswith("[leaky]"))
    warm = Symbolizer(build.build_dir, kos)
    parsed = sum(parse(f) is not None for f in frames)  # a raw address (freed module init text) has no key
    assert warm.resolve(frames) == first and warm.stats.processes == 0 and warm.stats.cached == parsed


def test_another_builds_dump_gets_no_lines_rather_than_wrong_ones(build: BuildResult, capsys) -> None:
    # A 6.12 dump of another config (tests/fixtures): many functions have other sizes there.
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "report_po612.txt.xz"
    assert main(["report", str(fixture), "--build", str(build.build_dir), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert "do not fit" in captured.err
    assert all(s["source"] is None for s in json.loads(captured.out)["stacks"])


def test_a_build_without_debug_info_says_how_to_get_lines(kernel_build: BuildResult, run: Path, capsys) -> None:
    lens = SourceLens(kernel_build.build_dir)
    assert lens.line_info is False and "--fragment debuginfo" in (lens.hint() or "")
    dump = str(run / "snapshots" / "00-baseline.page_owner.zst")
    assert main(["report", dump, "--build", str(kernel_build.build_dir), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("--fragment debuginfo") == 1
    rep = json.loads(captured.out)
    assert all(s["source"] is None and s["subsystem"] is None for s in rep["stacks"])


def test_maintainers_sections_match_get_maintainer_pl(build: BuildResult) -> None:
    tree = (build.build_dir / "source").resolve()
    m = Maintainers(tree)
    listed = subprocess.run(
        [
            "find",
            "mm",
            "fs/proc",
            "lib",
            "kernel/sched",
            "drivers/virtio",
            "net/core",
            "include/linux",
            "-name",
            "*.[ch]",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    files = [*sorted(listed.stdout.split())[::40], "mm/shmem.c", "mm/slub.c", "include/linux/slab.h"]
    mismatches = []
    for path in files:
        want = _get_maintainer_sections(tree, path)
        got = [s.title for s in m.sections_for(path)]
        # get_maintainer.pl orders equally specific sections by Perl hash order: compare those as sets.
        if sorted(got) != sorted(want) or (got and got[0] not in want[: _tied(m, path)]):
            mismatches.append((path, got, want))
    assert not mismatches, mismatches[:3]
    assert len(files) >= 30


def _tied(m: Maintainers, path: str) -> int:
    ranks = [s.rank(path) for s in m.sections_for(path)]
    return sum(1 for r in ranks if r == ranks[0]) if ranks else 0
