"""`pagelab run` end to end on a real kernel in QEMU: the truth test, artifacts, exit codes, the parallel reader."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import zstandard

from pagelab.cli import main
from pagelab.pageowner.parse import iter_records

# kernel_build (tests/e2e/conftest.py) builds the default kernel once, before the first run needs it.
pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.usefixtures("kernel_build")]

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
LEAK = 256
NOISE = 4  # pages: the leaky stack is the module's own, so nothing else should land on it


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _validate(schema: str, doc: object) -> None:
    """``doc`` holds the contract of docs/formats.md (the schema shipped in the package)."""
    text = (resources.files("pagelab") / "schemas" / f"{schema}.schema.json").read_text(encoding="utf-8")
    jsonschema.validate(doc, json.loads(text), cls=jsonschema.Draft202012Validator)


def _junit(out: Path) -> dict[str, ET.Element]:
    root = ET.parse(out / "junit.xml").getroot()
    return {tc.get("name", ""): tc for tc in root.iter("testcase")}


def test_leaked_pages_are_the_top_suspect_and_the_churn_control_is_not(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["run", "--profile", str(PROFILES / "leaky.toml"), "--ci", "--out", str(out), "--accel", "tcg"])
    report = _report(out)
    assert code == 1, report  # the leak is over the profile's fail_on_growth (200 pages)
    top = report["suspects"][0]
    assert top["module"] == "leaky" and "leaky_leak" in "\n".join(top["frames"]), top
    assert abs(top["growth_pages"] - 3 * LEAK) <= NOISE
    assert top["monotonic"] and len(top["per_snapshot"]) == 4
    steps = [b - a for a, b in itertools.pairwise(top["per_snapshot"])]
    assert all(abs(s - LEAK) <= NOISE for s in steps), steps
    # The control allocates the same pages through the same helper and frees them: never a suspect.
    flagged = [s for s in report["suspects"] if s["growth_pages"] > NOISE]
    assert not any("leaky_churn" in "\n".join(s["frames"]) for s in flagged)
    assert report["status"] == "leak" and report["crashes"] == []

    # Artifacts: raw snapshots first, then the report in every form.
    names = sorted(p.name for p in (out / "snapshots").iterdir() if p.name.endswith(".page_owner.zst"))
    assert names == [
        f"{i:02d}-{label}.page_owner.zst" for i, label in enumerate(["baseline", "iter1", "iter2", "iter3"])
    ]
    for name in ("console.log", "report.txt", "metadata.json"):
        assert (out / name).stat().st_size > 0, name
    assert "leaky" in (out / "report.txt").read_text()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kernel"]["config_sha256"] and meta["versions"]["qemu"].startswith("QEMU")
    assert meta["reproduce"].startswith("pagelab run ") and "--workload 'leaky-leak 256'" in meta["reproduce"]
    cases = _junit(out)
    assert cases["growth"].find("failure") is not None
    assert cases["boot"].find("error") is None and cases["crash-free"].find("failure") is None
    assert "leaky-leak-256 iteration 3" in cases
    assert "verdict" in capsys.readouterr().out


def test_a_quick_run_prints_json_on_stdout_and_keeps_every_artifact(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(
        ["run", "--workload", "true", "--iterations", "1", "--settle", "0", "--ci", "--out", str(out), "--json", "-"]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0 and report["status"] in ("ok", "leak")
    assert [s["label"] for s in report["snapshots"]] == ["baseline", "iter1"]
    assert all(s["records"] > 1000 and s["total_pages"] > 1000 for s in report["snapshots"])
    assert report == _report(out)
    # The snapshot file is the dump itself: parseable, PFNs strictly increasing (ranges merged in order).
    with zstandard.ZstdDecompressor().stream_reader(open(out / "snapshots" / "01-iter1.page_owner.zst", "rb")) as f:
        pfns = [r.pfn for r in iter_records(f)]
    assert len(pfns) == report["snapshots"][1]["records"]
    assert all(a < b for a, b in itertools.pairwise(pfns))
    # The documented formats hold for a real run, its kernel and a real `build --json`.
    _validate("run-report", report)
    meta = json.loads((out / "metadata.json").read_text())
    _validate("metadata", meta)
    _validate("build", meta["kernel"])
    _validate("metadata", json.loads(Path(meta["kernel"]["metadata"]).read_text()))
    build = subprocess.run(
        [sys.executable, "-m", "pagelab", "build", "--json"], capture_output=True, text=True, check=True
    )
    _validate("build", json.loads(build.stdout))


def test_a_kernel_crash_is_exit_3_with_the_crash_and_the_baseline_kept(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--workload",
            "echo c > /proc/sysrq-trigger",
            "--iterations",
            "1",
            "--settle",
            "0",
            "--ci",
            "--out",
            str(out),
        ]
    )
    report = _report(out)
    assert code == 3
    assert report["status"] == "crash" and report["crashes"], report
    _validate("run-report", report)
    _validate("metadata", json.loads((out / "metadata.json").read_text()))
    assert (out / "snapshots" / "00-baseline.page_owner.zst").stat().st_size > 0
    assert _junit(out)["crash-free"].find("failure") is not None
    assert "crash" in capsys.readouterr().err


def test_parallel_ranges_merge_to_what_cat_reads(tmp_path: Path, kernel_build) -> None:
    """Four po-read ranges at once, merged in order, against one `cat` of the same guest a moment later."""
    from pagelab.collect.collector import READER_GUEST_PATH, Collector, build_reader, guest_clock_ns
    from pagelab.guest.image import build_image
    from pagelab.guest.session import Guest, GuestOptions
    from pagelab.run import workloads as wl
    from pagelab.ui import UI

    ui = UI(plain=True, quiet=True)
    extra = wl.guest_files()
    extra[READER_GUEST_PATH] = build_reader(ui=ui)
    image = build_image(kernel_build.modules_dir, extra, ui)
    options = GuestOptions(cpus=2)
    with Guest(kernel_build, image, options, ui) as guest:
        assert guest.run("nproc").stdout.strip() == "2"
        # Memory that stays put between the two reads: 64 MiB of tmpfs pages.
        assert guest.run(f"sh {wl.catalogue()['tmpfs-grow'].guest_path} 64").status == 0
        # The guest's clock before the merged read, on page_owner's ts clock: what is allocated later (the
        # readers' own processes: sh, nc, po-read per range, then cat) is in one read and not the other.
        before = guest_clock_ns(guest)
        assert before is not None
        with Collector(guest, tmp_path, ui, readers=4) as collector:
            taken = collector.take("parallel")
        assert (taken.readers, taken.ranges) == (4, 16)
        raw = bytearray()
        assert guest.run_stream("cat /sys/kernel/debug/page_owner", raw.extend, timeout=600) == 0
    with zstandard.ZstdDecompressor().stream_reader(open(taken.path, "rb")) as f:
        merged_all = [(r.pfn, r.stack, r.ts_ns) for r in iter_records(f)]
    cat_all = [(r.pfn, r.stack, r.ts_ns) for r in iter_records(io.BytesIO(bytes(raw)))]
    pfns = [p for p, _, _ in merged_all]
    assert all(a < b for a, b in itertools.pairwise(pfns))  # in PFN order, no range read twice
    # Of the allocations older than both reads, only the few freed in between can differ (measured, three
    # guests: cat has all ~31,230 of them, the merged read 3 to 22 more; ~3% of each read is newer).
    merged = {(p, s) for p, s, ts in merged_all if ts < before}
    cat = {(p, s) for p, s, ts in cat_all if ts < before}
    common = merged & cat
    numbers = f"{len(common)} old in common of {len(merged)} and {len(cat)}; all: {len(merged_all)}, {len(cat_all)}"
    assert len(merged) > 0.9 * len(merged_all) and len(common) >= 0.99 * len(cat), numbers
    assert len(merged) <= 1.05 * len(cat), numbers
    assert min(pfns) == min(p for p, _, _ in cat_all) and abs(max(pfns) - max(p for p, _, _ in cat_all)) < 4096


def test_nightly_script_runs_profiles_and_checks_expected_exits(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    # smoke must exit 0; expecting a finding (exit 1) from it is the failure nightly.sh must report.
    proc = subprocess.run(
        [str(root / "scripts" / "nightly.sh"), "-o", str(tmp_path), "smoke", "smoke:1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = (tmp_path / "summary.md").read_text()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = [line for line in summary.splitlines() if line.startswith("| smoke |")]
    # profile | exit | expected | status | …: both runs exited 0; the second expected 1.
    assert [r.split("|")[2:4] for r in rows] == [[" 0 ", " 0 "], [" 0 ", " 1 "]], summary
    for run_dir in ("01-smoke", "02-smoke"):
        assert (tmp_path / run_dir / "junit.xml").is_file() and (tmp_path / f"{run_dir}.log").is_file()
