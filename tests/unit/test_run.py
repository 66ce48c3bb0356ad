"""The run's verdict, report, junit.xml and artifacts, from real dumps (no VM: the e2e tests boot one)."""

from __future__ import annotations

import json
import lzma
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pagelab.cli import build_parser
from pagelab.collect.collector import SnapshotFile
from pagelab.errors import UsageError
from pagelab.pageowner.analyse import SnapshotBuilder
from pagelab.pageowner.render import as_text
from pagelab.run.artifacts import RunDir, default_out_dir, kernel_compiler
from pagelab.run.pipeline import RunState, WorkloadRun, _analyse, _write_artifacts, render_run, run
from pagelab.run.profiles import settings_from
from pagelab.run.workloads import resolve
from pagelab.settings import Settings, given
from pagelab.ui import UI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEAK_FRAMES = (
    " leaky_alloc_page+0x9/0x20 [leaky]\n leaky_leak+0x2a/0x70 [leaky]\n leak_write+0x4d/0x80 [leaky]\n"
    " full_proxy_write+0x55/0x80\n vfs_write+0xd1/0x430\n ksys_write+0x6d/0xf0\n do_syscall_64+0x58/0x120\n"
)


def _dump_with_leak(pages: int) -> bytes:
    """The real 6.12 fixture dump plus ``pages`` order-0 records from the leaky module, past its last PFN."""
    base = lzma.decompress((FIXTURES / "report_po612.txt.xz").read_bytes())
    extra = "".join(
        f"Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 99, tgid 99 (sh), ts {i} ns\n"
        f"PFN {hex(0x900000 + i)} type Unmovable Block {(0x900000 + i) >> 9} type Unmovable Flags 0x0(zone=1)\n"
        f"{LEAK_FRAMES}\n"
        for i in range(pages)
    )
    return base + extra.encode()


def _settings(*argv: str) -> Settings:
    args = build_parser().parse_args(["run", *argv])
    return settings_from(given(args), args.profile)


def _state(tmp_path: Path, leaks: list[int], *argv: str) -> RunState:
    settings = _settings("--workload", "leaky-leak 256", *argv)
    state = RunState(settings, RunDir(tmp_path / "out"))
    state.kernel_version = "6.12.117"
    state.booted = True
    state.timings.update(boot=3.0, snapshots=8.0)
    for i, pages in enumerate(leaks):
        label = "baseline" if i == 0 else f"iter{i}"
        b = SnapshotBuilder(label=label, source=f"{i:02d}-{label}")
        data = _dump_with_leak(pages)
        b.feed(data)
        path = state.out.snapshots / f"{i:02d}-{label}.page_owner.zst"
        path.write_bytes(b"")
        state.snapshots.append(SnapshotFile(i, label, path, b.finish(), 1.5, len(data), 2, 8))
        if i:
            state.runs.append(WorkloadRun(resolve("leaky-leak 256"), i, 0.4, 0, ""))
    return state


def test_growth_over_the_threshold_is_exit_1_and_a_junit_failure(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256, 512], "--fail-on-growth", "300", "--iterations", "2")
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.exit_code == 1
    top = outcome.report["suspects"][0]
    assert (top["growth_pages"], top["per_snapshot"], top["module"]) == (512, [0, 256, 512], "leaky")
    assert outcome.report["status"] == "leak"
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    cases = {tc.get("name"): tc for tc in ET.parse(state.out.junit_xml).getroot().iter("testcase")}
    assert cases["growth"].find("failure") is not None
    assert cases["boot"].find("error") is None and "leaky-leak-256 iteration 2" in cases


def test_growth_within_the_threshold_is_exit_0(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256], "--fail-on-growth", "256", "--iterations", "1")
    assert _analyse(state, UI(plain=True, quiet=True)).exit_code == 0


def test_without_a_threshold_growth_is_reported_not_failed(tmp_path: Path) -> None:
    outcome = _analyse(_state(tmp_path, [0, 256], "--iterations", "1"), UI(plain=True, quiet=True))
    assert outcome.exit_code == 0 and outcome.report["status"] == "leak"


def test_a_crash_is_exit_3_and_fails_crash_free(tmp_path: Path) -> None:
    state = _state(tmp_path, [0], "--iterations", "2")
    state.crashes.append({"kind": "BUG", "title": "kernel BUG at mm/slub.c:42!", "excerpt": "RIP: 0010:..."})
    state.runs.append(WorkloadRun(resolve("leaky-leak 256"), 1, 0.1, None, ""))
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.exit_code == 3 and outcome.report["status"] == "crash"
    assert outcome.report["crashes"][0]["kind"] == "BUG"
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    cases = {tc.get("name"): tc for tc in ET.parse(state.out.junit_xml).getroot().iter("testcase")}
    failure = cases["crash-free"].find("failure")
    assert failure is not None and "mm/slub.c:42" in failure.get("message", "")
    assert cases["leaky-leak-256 iteration 2"].find("skipped") is not None
    assert cases["growth"].find("skipped") is not None  # one snapshot: nothing to compare
    assert "kernel BUG at mm/slub.c:42!" in state.out.report_txt.read_text()


def test_a_failed_workload_is_an_error_exit_4(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256], "--iterations", "1")
    state.runs[0].status = 127
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.exit_code == 4 and outcome.report["status"] == "error"
    assert "leaky-leak 256" in outcome.report["error"]


def test_report_json_has_the_run_shape_and_artifacts_are_written(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256, 512, 768])
    outcome = _analyse(state, UI(plain=True, quiet=True))
    json_out = tmp_path / "copy.json"
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), str(json_out))
    report = json.loads(state.out.report_json.read_text())
    assert report == json.loads(json_out.read_text())
    assert {"status", "kernel", "snapshots", "suspects", "crashes", "timings"} <= set(report)
    assert [s["label"] for s in report["snapshots"]] == ["baseline", "iter1", "iter2", "iter3"]
    assert report["snapshots"][0]["path"].endswith("00-baseline.page_owner.zst")
    assert report["suspects"][0]["rank"] == 1 and report["suspects"][0]["monotonic"]
    meta = json.loads(state.out.metadata_json.read_text())
    assert meta["reproduce"].startswith("pagelab run ") and meta["versions"]["pagelab"]
    assert meta["timings"]["boot"] == 3.0


def test_the_terminal_report_has_summary_suspects_owners_and_verdict(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256, 512, 768])
    outcome = _analyse(state, UI(plain=True, quiet=True))
    text = as_text(lambda ui: render_run(ui, state, outcome))
    for heading in ("Run", "Snapshots", "Leak suspects", "Top owners in the last snapshot (iter3)", "verdict:"):
        assert heading in text, heading
    assert "leaky_alloc_page" in text and "+768" in text and "6.12.117" in text


def test_bad_settings_fail_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"missing\.sh"):
        run(
            _settings("--upload", f"{tmp_path}/missing.sh:/root/"),
            UI(plain=True, quiet=True),
            out=str(tmp_path / "out"),
        )
    assert not (tmp_path / "out").exists()


def test_default_out_dir_is_a_fresh_timestamped_directory(tmp_path: Path) -> None:
    first = default_out_dir(tmp_path, now=0)
    assert first == tmp_path / "19700101-000000"
    first.mkdir()
    assert default_out_dir(tmp_path, now=0) == tmp_path / "19700101-000000-2"


def test_the_kernel_compiler_comes_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text('CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"\nCONFIG_64BIT=y\n')
    assert kernel_compiler(config) == "gcc (Debian 12.2.0-14) 12.2.0"
    assert kernel_compiler(tmp_path / "missing") is None


def test_an_unknown_test_module_is_a_usage_error_naming_the_available_ones(tmp_path: Path) -> None:
    from pagelab.kernel.modules import available, build_module

    assert "leaky" in available()
    with pytest.raises(UsageError, match=r"available: .*leaky"):
        build_module("nope", tmp_path, "key", UI(plain=True, quiet=True))


def test_a_failed_build_is_a_junit_error_not_only_skipped_cases(tmp_path: Path) -> None:
    state = _state(tmp_path, [], "--iterations", "1")
    state.booted = None
    state.error = "kernel build failed (make exit 2)"
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.exit_code == 4
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    suite = ET.parse(state.out.junit_xml).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert cases["build"].find("error").get("message") == "kernel build failed (make exit 2)"  # type: ignore[union-attr]
    assert cases["boot"].find("skipped") is not None


def test_a_prebuilt_kernel_cannot_take_test_modules_and_must_exist(tmp_path: Path) -> None:
    bz = tmp_path / "bzImage"
    bz.write_bytes(b"x")
    for argv, pattern in (
        (["--kernel", str(tmp_path / "nope")], "no such file"),
        (["--kernel", str(bz), "--workload", "leaky-leak 8"], "drop --kernel"),
    ):
        settings = _settings(*argv)
        with pytest.raises(UsageError, match=pattern):
            run(settings, UI(plain=True, quiet=True), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_non_monotonic_growth_over_the_threshold_is_exit_1_and_status_leak(tmp_path: Path) -> None:
    # exit 1 and report.json's status follow one rule, so a nightly summary never says "ok" on exit 1.
    state = _state(tmp_path, [0, 512, 300], "--fail-on-growth", "200", "--iterations", "2")
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.report["suspects"][0]["monotonic"] is False
    assert outcome.exit_code == 1 and outcome.report["status"] == "leak"


def test_growth_over_the_threshold_fails_in_junit_even_when_a_workload_failed(tmp_path: Path) -> None:
    state = _state(tmp_path, [0, 256, 512], "--fail-on-growth", "200", "--iterations", "2")
    state.runs[0].status = 1
    outcome = _analyse(state, UI(plain=True, quiet=True))
    assert outcome.exit_code == 4
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    cases = {tc.get("name"): tc for tc in ET.parse(state.out.junit_xml).getroot().iter("testcase")}
    assert cases["growth"].find("failure") is not None


def test_a_workload_that_did_not_finish_is_a_junit_error_not_skipped(tmp_path: Path) -> None:
    state = _state(tmp_path, [0], "--iterations", "1")
    state.runs.append(WorkloadRun(resolve("leaky-leak 256"), 1, 900.0, None, "", error="timed out after 900 s"))
    state.error = "timed out after 900 s"
    outcome = _analyse(state, UI(plain=True, quiet=True))
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    cases = {tc.get("name"): tc for tc in ET.parse(state.out.junit_xml).getroot().iter("testcase")}
    error = cases["leaky-leak-256 iteration 1"].find("error")
    assert error is not None and "900 s" in error.get("message", "")


def test_an_unexpected_error_still_writes_the_report_and_exits_4(tmp_path: Path, monkeypatch) -> None:
    import pagelab.run.pipeline as run_module
    from pagelab.errors import InfraError

    def broken_kernel(state, ui):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module, "_kernel", broken_kernel)
    settings = _settings("--workload", "true", "--iterations", "1")
    with pytest.raises(InfraError, match="No space left on device"):
        run(settings, UI(plain=True, quiet=True), out=str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "error" and "No space left" in report["error"]
    assert (tmp_path / "out" / "junit.xml").is_file() and (tmp_path / "out" / "metadata.json").is_file()


def test_a_run_stopped_during_a_snapshot_is_a_junit_error_named_after_the_phase(tmp_path: Path) -> None:
    state = _state(tmp_path, [0], "--iterations", "1")
    state.runs.append(WorkloadRun(resolve("leaky-leak 256"), 1, 0.4, 0, ""))
    state.phase, state.error = "snapshot 01-iter1", "QEMU exited unexpectedly"
    outcome = _analyse(state, UI(plain=True, quiet=True))
    _write_artifacts(state, outcome, UI(plain=True, quiet=True), None)
    cases = {tc.get("name"): tc for tc in ET.parse(state.out.junit_xml).getroot().iter("testcase")}
    error = cases["snapshot 01-iter1"].find("error")
    assert error is not None and error.get("message") == "QEMU exited unexpectedly"


def test_a_usage_error_inside_the_stages_is_exit_2_in_metadata(tmp_path: Path, monkeypatch) -> None:
    import pagelab.run.pipeline as run_module

    def no_modules(state, ui):
        raise UsageError("module 'leaky': the kernel was built without CONFIG_MODULES")

    monkeypatch.setattr(run_module, "_kernel", no_modules)
    with pytest.raises(UsageError) as err:
        run(_settings("--workload", "true", "--iterations", "1"), UI(plain=True, quiet=True), out=str(tmp_path / "o"))
    assert err.value.exit_code == 2
    assert json.loads((tmp_path / "o" / "metadata.json").read_text())["exit_code"] == 2


def test_an_internal_error_in_the_analysis_is_exit_4_with_the_report_written(tmp_path: Path, monkeypatch) -> None:
    import pagelab.run.pipeline as run_module
    from pagelab.errors import InfraError

    def done(state, ui, workloads):
        return None

    def broken(*args):
        raise KeyError("boom")

    monkeypatch.setattr(run_module, "_stages", done)
    monkeypatch.setattr(run_module, "_source_lens", broken)
    with pytest.raises(InfraError, match=r"internal error.*KeyError.*report it"):
        run(_settings("--workload", "true", "--iterations", "1"), UI(plain=True, quiet=True), out=str(tmp_path / "o"))
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["status"] == "error" and "KeyError" in report["error"]
    assert json.loads((tmp_path / "o" / "metadata.json").read_text())["exit_code"] == 4


def test_a_signal_while_the_report_is_written_exits_with_the_written_code(tmp_path: Path, monkeypatch) -> None:
    import os
    import signal

    import pagelab.run.pipeline as run_module

    write = run_module._write_artifacts

    def done(state, ui, workloads):
        return None

    def interrupted_write(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # deferred: recorded, not raised
        write(*args)

    monkeypatch.setattr(run_module, "_stages", done)
    monkeypatch.setattr(run_module, "_write_artifacts", interrupted_write)
    settings = _settings("--workload", "true", "--iterations", "1")
    code = run(settings, UI(plain=True, quiet=True), out=str(tmp_path / "o"))
    assert code == json.loads((tmp_path / "o" / "metadata.json").read_text())["exit_code"]


def test_a_bug_is_one_line_and_exit_4_not_a_traceback(monkeypatch, capsys) -> None:
    import pagelab.cli as cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "build_parser", broken)
    assert cli.main(["run"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ZeroDivisionError" in err and "report it" in err


def test_a_handle_mode_snapshot_reports_its_unresolved_records_and_warnings(tmp_path: Path) -> None:
    import jsonschema

    state = _state(tmp_path, [0, 8], "--iterations", "1")
    state.snapshots[1].read_mode, state.snapshots[1].unresolved_records = "handle", 12
    state.snapshots[1].snapshot.warnings.append("01-iter1: 12 record(s) with 1 handle(s) not in the stacks file")
    report = _analyse(state, UI(plain=True, quiet=True)).report
    assert "unresolved_records" not in report["snapshots"][0] and "warnings" not in report["snapshots"][0]
    assert report["snapshots"][1]["unresolved_records"] == 12
    assert report["snapshots"][1]["warnings"] == ["01-iter1: 12 record(s) with 1 handle(s) not in the stacks file"]
    schema = json.loads((Path(__file__).resolve().parents[2] / "pagelab/schemas/run-report.schema.json").read_text())
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)


def test_bad_build_input_is_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    from pagelab.errors import PagelabError

    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_PAGE_OWNER=y\nthis is not a kconfig line\n")
    for argv in (
        ["--fragment", str(tmp_path / "missing.config")],
        ["--fragment", str(bad)],
        ["--base", str(tmp_path / "missing.config")],
        ["--kernel-src", str(tmp_path / "no-tree")],
    ):
        settings = _settings("--workload", "true", *argv)
        with pytest.raises(PagelabError) as err:
            run(settings, UI(plain=True, quiet=True), out=str(tmp_path / "out"))
        assert err.value.exit_code == 2, (argv, err.value)
        assert not (tmp_path / "out").exists(), argv


def test_the_settle_is_a_phase_of_its_own(tmp_path: Path) -> None:
    from pagelab.run.pipeline import _settle

    state = _state(tmp_path, [0], "--iterations", "1", "--settle", "0")
    state.phase = "workload 'true' iteration 1"
    _settle(state, guest=None)  # no --drop-caches and no pause: nothing asked of the guest
    assert state.phase == "settle"  # a signal or failure now is reported as during the settle
