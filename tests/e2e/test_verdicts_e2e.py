"""Leak or cache, in a real guest: the leaky module's slab and vmalloc leaks and its bounded cache, tmpfs files.

Each test is one `pagelab run` (boot, baseline, 3 iterations, 4 snapshots) on the default 6.12 kernel.
Page counts are checked against the raw snapshot files, counted here record by record.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import zstandard

from pagelab.cli import main
from pagelab.pageowner.analyse import callsite
from pagelab.pageowner.parse import iter_records

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.usefixtures("kernel_build")]

SLAB_OBJECTS = 2048  # 1 KiB each: 512 pages of kmalloc-1k slabs per call (order-2 slabs of 16 objects on 6.12)
VMALLOC_PAGES = 256
CACHE_PAGES = 512
ITERATIONS = 3


def _run(out: Path, *workloads: str, fail_on_growth: int) -> tuple[int, dict]:
    argv = ["run", "--iterations", str(ITERATIONS), "--settle", "1", "--ci", "--out", str(out), "--accel", "tcg"]
    for w in workloads:
        argv += ["--workload", w]
    code = main([*argv, "--fail-on-growth", str(fail_on_growth)])
    return code, json.loads((out / "report.json").read_text())


def _pages(snapshot: Path, at: str, *frames: str) -> int:
    """Pages of the records whose first frame past the allocators is ``at`` and whose stack has every one of
    ``frames`` (symbol names), counted record by record in a raw snapshot file."""
    with zstandard.ZstdDecompressor().stream_reader(open(snapshot, "rb")) as f:
        return sum(
            r.pages
            for r in iter_records(f)
            if callsite(r.stack) == at and all(any(fr.startswith(name + "+") for fr in r.stack) for name in frames)
        )


def _suspect(report: dict, callsite: str) -> dict:
    found = [s for s in report["suspects"] if s["callsite"] == callsite]
    assert len(found) == 1, [(s["callsite"], s["growth_pages"], s["verdict"]) for s in report["suspects"][:10]]
    return found[0]


def test_slab_and_vmalloc_leaks_are_leaks_at_their_functions_and_the_bounded_cache_is_not(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, report = _run(
        out,
        f"leaky-slab {SLAB_OBJECTS}",
        f"leaky-vmalloc {VMALLOC_PAGES}",
        f"leaky-cache {CACHE_PAGES}",
        "tmpfs-grow 8",
        fail_on_growth=CACHE_PAGES - 112,
    )
    snaps = sorted((out / "snapshots").glob("*.page_owner.zst"))
    assert len(snaps) == ITERATIONS + 1 and report["identities"]["followed"], report["identities"]

    slab = _suspect(report, "leaky_slab_leak")
    vm = _suspect(report, "leaky_vmalloc_leak")
    cache = _suspect(report, "leaky_cache_refill")
    assert (slab["verdict"], vm["verdict"], cache["verdict"]) == ("leak", "leak", "cache")
    assert slab["module"] == vm["module"] == cache["module"] == "leaky"

    # Exact page counts: the report's growth is what the raw dumps hold at those functions. The vmalloc
    # area's pages are exactly what the module asked for (its page-table pages are __pte_alloc_kernel's).
    assert vm["growth_pages"] == _pages(snaps[-1], "leaky_vmalloc_leak") == ITERATIONS * VMALLOC_PAGES
    assert _pages(snaps[0], "leaky_vmalloc_leak") == _pages(snaps[0], "leaky_slab_leak") == 0
    # Every slab page there came from new_slab under kmalloc. A call may first fill the free objects of slabs
    # other code started (not ours in page_owner): the CPU's own slab, its per-CPU partial list and the node's
    # partial list, on either vCPU, hold such slabs. So a few slabs less per call than 1 KiB × objects: up
    # to 32 pages (8 order-2 slabs), i.e. at least 480 of the 512 pages each call leaks.
    assert slab["growth_pages"] == _pages(snaps[-1], "leaky_slab_leak", "new_slab", "__kmalloc_cache_noprof")
    assert ITERATIONS * (SLAB_OBJECTS // 4 - 32) <= slab["growth_pages"] <= ITERATIONS * SLAB_OBJECTS // 4

    # Every cohort of the leaks is still whole at the last snapshot; every cache batch but the last is gone.
    for s in (slab, vm):
        assert all(c["alive"][-1] == c["alive"][0] for c in s["cohorts"]), s["cohorts"]
        assert s["freed_pages"] == 0
    assert cache["per_snapshot"] == [0] + [CACHE_PAGES] * ITERATIONS
    assert [c["alive"] for c in cache["cohorts"]] == [[CACHE_PAGES, 0, 0], [CACHE_PAGES, 0], [CACHE_PAGES]]
    assert cache["turnover"] == 1.0
    assert all(a is not None and a >= 0 for a in slab["age"]["oldest_s"][1:])

    # The tmpfs files are kept: the shmem pages of tmpfs-grow are a leak of the workload.
    shmem = [s for s in report["suspects"] if s["class"] == "page cache" and s["growth_pages"] >= 3 * 2048 - 64]
    assert shmem and shmem[0]["verdict"] == "leak", [(s["callsite"], s["growth_pages"]) for s in shmem]

    # --fail-on-growth 400 fails on the leaks, not on the cache that grew 512.
    assert code == 1 and report["status"] == "leak"
    growth = {tc.get("name"): tc for tc in ET.parse(out / "junit.xml").getroot().iter("testcase")}["growth"]
    failure = growth.find("failure")
    assert failure is not None and "verdict leak" in failure.get("message", "")
    assert "leaky_cache_refill" not in failure.get("message", "")
    text = (out / "report.txt").read_text()
    assert "verdict" in text and "born in iter1" in text


def test_a_cache_and_tmpfs_churn_never_fail_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, report = _run(out, f"leaky-cache {CACHE_PAGES}", "tmpfs-churn 32", fail_on_growth=CACHE_PAGES - 112)
    cache = _suspect(report, "leaky_cache_refill")
    assert cache["growth_pages"] == CACHE_PAGES and cache["verdict"] == "cache"
    assert code == 0 and report["status"] == "ok", [(s["callsite"], s["verdict"]) for s in report["suspects"][:5]]
    # tmpfs-churn frees what it wrote: no shmem stack is a leak of any size worth a threshold.
    assert not [
        s
        for s in report["suspects"]
        if s["class"] == "page cache" and s["verdict"] == "leak" and s["growth_pages"] > 64
    ]
