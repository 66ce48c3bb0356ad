"""A real fragmenting run (guest/workloads/frag-mix.sh): its pollution ranking against an independent count of
the raw snapshot, and its report.html and a diff's in headless Chromium.

One `pagelab run` (one boot of a 512 MiB guest, about two minutes under TCG) serves every test in this module.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import zstandard
from chromium import Chromium, pixel_variety, requires_chromium

from pagelab.cli import main

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.usefixtures("kernel_build")]

_RECORD = re.compile(
    r"^Page allocated via order (\d+),.*\n"
    r"PFN (0x[0-9a-f]+|\d+) type (\S+) Block (\d+) type (\S+)[^\n]*\n"
    r"((?: [^\n]*\n)*)",
    re.M,
)


@pytest.fixture(scope="module")
def frag_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frag") / "run"
    args = ["run", "--workload", "frag-mix", "--iterations", "1", "--settle", "0", "--ci", "--out", str(out)]
    # 512 MiB: frag-mix fills the guest's memory, so less of it is a shorter run (docs/html.md).
    assert main([*args, "--accel", "tcg", "--memory", "512M"]) == 0
    return out


def snapshot_text(path: Path) -> str:
    with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
        return io.TextIOWrapper(r, encoding="utf-8", errors="replace").read()


def independent_ranking(text: str) -> dict[tuple[str, ...], tuple[int, set[int]]]:
    """Pages across the movable line and the printed blocks they sit in, per stack, by regex over the dump."""
    out: dict[tuple[str, ...], tuple[int, set[int]]] = {}
    for order, _pfn, mt, block, bmt, frames in _RECORD.findall(text):
        movable_line = {mt, bmt} & {"Movable"} and {mt, bmt} & {"Unmovable", "Reclaimable"}
        if not movable_line:
            continue
        stack = tuple(line[1:] for line in frames.splitlines())
        pages, blocks = out.get(stack, (0, set()))
        out[stack] = (pages + (1 << int(order)), blocks | {int(block)})
    return out


def test_the_pollution_ranking_matches_an_independent_count_of_the_snapshot(frag_run: Path) -> None:
    report = json.loads((frag_run / "report.json").read_text())
    pol = report["pollution"]
    last = Path(report["snapshots"][-1]["path"])
    expected = independent_ranking(snapshot_text(last))
    assert pol["culprits"], "frag-mix placed no page across the movable line"
    assert pol["culprits_total"] == len(expected)
    assert pol["pages"] == sum(p for p, _ in expected.values())
    for entry in pol["culprits"][:5]:
        pages, blocks = expected[tuple(entry["frames"])]
        assert (entry["pages"], entry["blocks"]) == (pages, len(blocks)), entry["callsite"]
    ranked = sorted((p for p, _ in expected.values()), reverse=True)
    assert [c["pages"] for c in pol["culprits"][:5]] == ranked[:5]


def test_report_by_pollution_of_the_snapshot_agrees_with_the_run(frag_run: Path, tmp_path: Path, capsys) -> None:
    report = json.loads((frag_run / "report.json").read_text())
    out = tmp_path / "r.json"
    assert main(["report", report["snapshots"][-1]["path"], "--by", "pollution", "--json", str(out)]) == 0
    assert "Fragmentation culprits" in capsys.readouterr().out
    assert json.loads(out.read_text())["pollution"] == report["pollution"]


@requires_chromium
def test_the_run_report_and_a_diff_load_clean_in_chromium(frag_run: Path, tmp_path: Path) -> None:
    html = frag_run / "report.html"
    page = html.read_text()
    for heading in ("Run", "Suspects", "Snapshots", "Ownership icicle", "Pageblock map", "Fragmentation culprits"):
        assert f"<h2>{heading}" in page
    assert 'href="snapshots/01-iter1.page_owner.zst"' in page and 'href="report.json"' in page
    snaps = sorted((frag_run / "snapshots").glob("*.page_owner.zst"))
    diff_html = tmp_path / "diff.html"
    assert main(["diff", str(snaps[0]), str(snaps[-1]), "--html", str(diff_html)]) == 0
    with Chromium(tmp_path / "profile") as browser:
        for url in (html.as_uri(), diff_html.as_uri()):
            load = browser.load(url)
            assert load.errors == [] and load.requests == [], (url, load.errors, load.requests)
            colours, busy = pixel_variety(load.screenshot)
            assert colours >= 16 and busy >= 0.02, (url, colours, busy)
