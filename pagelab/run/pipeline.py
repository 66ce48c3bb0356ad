"""The leak hunt: build → boot → baseline → iterations of workloads and snapshots → shutdown → report.

Artifacts land in the run directory as they are produced (snapshots before any analysis), and the
report, junit.xml and metadata.json are written whatever happens: a crash (exit 3) or an
infrastructure failure (exit 4) still leaves everything gathered so far, with the reason in the report.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text

from pagelab.cache import mark_build_in_use
from pagelab.collect.collector import READER_GUEST_PATH, Collector, SnapshotFile, build_reader, crash_of
from pagelab.errors import GuestCrash, InfraError, InputError, PagelabError, UsageError
from pagelab.guest.image import build_image
from pagelab.guest.session import Guest, GuestOptions
from pagelab.html.run import last_blockmap, write_run_html
from pagelab.kernel import kconfig
from pagelab.kernel import modules as kmodules
from pagelab.kernel.build import BuildOptions, BuildResult, build_kernel
from pagelab.kernel.fragments import resolve as resolve_fragment
from pagelab.kernel.source import debian_tarball, is_version_name
from pagelab.pageowner import diff as pdiff
from pagelab.pageowner.export import open_output
from pagelab.pageowner.render import as_text, mib, render_suspects, table, top_stacks_table
from pagelab.procs import defer_interrupts, pending_interrupt, signal_of, signals_interrupt
from pagelab.run import workloads as wl
from pagelab.run.artifacts import RunDir, default_out_dir, metadata
from pagelab.run.junit import Case, write_junit
from pagelab.settings import BASES, Settings, parse_upload
from pagelab.ui import UI

SUITE = "pagelab run"


@dataclass
class WorkloadRun:
    """One workload in one iteration."""

    workload: wl.Workload
    iteration: int
    seconds: float = 0.0
    status: int | None = None  # None: never ran, or did not finish (see error)
    output: str = ""
    error: str | None = None  # why it did not finish: a timeout, a crash, SSH lost


@dataclass
class RunState:
    """Everything gathered so far; the report is rendered from it whatever stopped the run."""

    settings: Settings
    out: RunDir
    started: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    build: dict[str, Any] | None = None
    config_path: str | None = None
    kernel_version: str | None = None
    guest_info: dict[str, Any] = field(default_factory=dict)
    booted: bool | None = None
    boot_error: str = ""
    snapshots: list[SnapshotFile] = field(default_factory=list)
    runs: list[WorkloadRun] = field(default_factory=list)
    crashes: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    error_code: int = 4  # the exit code of the error that stopped the run (2 for a UsageError)
    phase: str = "start"  # what the run was doing: a signal's report names it
    signal: int | None = None  # the signal that stopped the run (exit 128 + N)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


# -- the pipeline -------------------------------------------------------------------------------------
def _kernel(state: RunState, ui: UI) -> tuple[Path, BuildResult | None]:
    """The bzImage to boot and the build result (None with ``--kernel``)."""
    s = state.settings
    if s.kernel:
        state.build = {"bzimage": s.kernel, "prebuilt": True}
        return Path(s.kernel), None
    state.phase = "build"
    with state.timed("build"):
        result = build_kernel(BuildOptions.from_settings(s), ui)
    state.build = result.to_json()
    state.config_path = str(result.config)
    state.kernel_version = result.kernel_version
    return Path(result.bzimage), result


def _modules(state: RunState, workloads: list[wl.Workload], build: BuildResult | None, ui: UI) -> dict[str, Path]:
    names = sorted({m for w in workloads for m in w.modules})
    if not names or build is None:  # run() refuses modules with --kernel
        return {}
    if build.modules_dir is None:
        raise UsageError(f"module {names[0]!r}: the kernel was built without CONFIG_MODULES")
    with state.timed("modules"):
        return {
            n: kmodules.build_module(n, Path(build.build_dir), f"{build.config_sha256}:{build.kernel_version}", ui)
            for n in names
        }


def _uploads(settings: Settings) -> list[tuple[Path, str]]:
    return [parse_upload(spec) for spec in settings.upload]


def _drop_caches(guest: Any) -> None:
    guest.run("sync; echo 3 > /proc/sys/vm/drop_caches", timeout=120)


def _settle(state: RunState, guest: Any) -> None:
    s = state.settings
    state.phase = "settle"
    with state.timed("settle"):
        if s.drop_caches:
            _drop_caches(guest)
        if s.settle > 0:
            time.sleep(s.settle)


def _snapshot(state: RunState, ui: UI, collector: Collector, label: str) -> None:
    state.phase = f"snapshot {len(collector.taken):02d}-{label}"
    with state.timed("snapshots"):
        try:
            taken = collector.take(label)
            for warning in taken.snapshot.warnings:
                ui.warn(warning)
        finally:
            # What the collector took, even when reading show_stacks/allocinfo after the dump failed:
            # a complete dump on disk is listed in report.json.
            state.snapshots[:] = collector.taken


def _guest_phase(
    state: RunState, ui: UI, kernel: Path, image: Path, modules: dict[str, Path], workloads: list[wl.Workload]
) -> None:
    """Boot, baseline, iterations, clean shutdown. GuestCrash/InfraError propagate; state keeps the progress."""
    s = state.settings
    options = _guest_options(s, state.out.console_log)
    guest = Guest(kernel, image, options, ui)
    state.booted = False
    state.phase = "boot"
    try:
        with state.timed("boot"):
            try:
                guest.start()
            except BaseException as err:  # a signal too: junit.xml's boot case says what stopped it
                state.boot_error = str(err) or type(err).__name__
                raise
        state.booted = True
        state.kernel_version = guest.kernel_version or state.kernel_version
        state.guest_info.update(
            accel=guest.accel,
            accel_reason=guest.accel_reason,
            memory=options.memory,
            cpus=options.cpus,
            append=list(options.append),
            boot_timings={k: round(v, 3) for k, v in guest.timings.items()},
        )
        state.phase = "upload"
        for src, dst in _uploads(s):
            guest.upload(src, dst)
        state.phase = "insmod"
        for name, ko in modules.items():
            path = guest.upload(ko, f"/root/modules/{ko.name}")
            res = guest.run(f"insmod {path}", timeout=60)
            if res.status != 0:
                raise InfraError(f"insmod {name} in the guest failed: {(res.stderr or res.stdout).strip()}")
        with Collector(guest, state.out.snapshots, ui, readers=s.readers) as collector:
            _iterations(state, ui, guest, collector, workloads)
        state.phase = "shutdown"  # set on the way out only: an interrupt names the phase it stopped
        guest.check_crash()
    finally:
        with state.timed("shutdown"):
            guest.close()


def _iterations(state: RunState, ui: UI, guest: Any, collector: Collector, workloads: list[wl.Workload]) -> None:
    """Baseline, then each iteration's workloads and snapshot."""
    s = state.settings
    _settle(state, guest)
    _snapshot(state, ui, collector, "baseline")
    for i in range(1, s.iterations + 1):
        for w in workloads:
            r = WorkloadRun(w, i)
            state.runs.append(r)
            ui.step(f"iteration {i}/{s.iterations}: {w.spec}")
            state.phase = f"workload {w.spec!r} iteration {i}"
            t1 = time.perf_counter()
            try:
                res = guest.run(w.command, timeout=s.workload_timeout)
            except BaseException as err:
                # The workload that hung, crashed the kernel or lost SSH must show as such in junit.xml.
                r.seconds = time.perf_counter() - t1
                r.error = str(err) or type(err).__name__
                raise
            r.seconds = time.perf_counter() - t1
            r.status = res.status
            r.output = (res.stdout + res.stderr)[-4000:]
            state.timings["workloads"] = state.timings.get("workloads", 0.0) + r.seconds
            if res.status != 0:
                ui.warn(f"workload {w.spec!r} exited {res.status}: {(res.stderr or res.stdout).strip()[-300:]}")
        _settle(state, guest)
        _snapshot(state, ui, collector, f"iter{i}")


def _guest_options(s: Settings, console_log: Path) -> GuestOptions:
    options = GuestOptions.from_settings(s)
    options.console_log = console_log
    return options


# -- report -------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    report: dict[str, Any]
    found: list[pdiff.Suspect]
    exit_code: int
    over_threshold: bool = False  # a leak (or growth) grew more than --fail-on-growth (whatever else happened)
    notes: dict[tuple[str, ...], list[str]] = field(default_factory=dict)  # under each suspect: source, allocinfo


def _analyse(state: RunState, ui: UI) -> Outcome:
    s = state.settings
    snaps = [t.snapshot for t in state.snapshots]
    with state.timed("analysis"):
        found = pdiff.suspects(snaps) if len(snaps) >= 2 else []
    failed_workloads = [r for r in state.runs if r.status not in (None, 0)]
    threshold = s.fail_on_growth if s.fail_on_growth is not None else 0
    # Exit 1 when a suspect whose verdict is `leak` (or `growth`, where identities are unavailable) grew
    # more than --fail-on-growth: a bounded cache never fails a run (verdicts.py). Status "leak" follows.
    over = s.fail_on_growth is not None and bool(pdiff.over_threshold(found, s.fail_on_growth))
    if state.crashes:
        status, code = "crash", 3
    elif state.signal is not None:
        status, code = "error", 128 + state.signal
    elif state.error is not None:
        status, code = "error", state.error_code
    elif failed_workloads:
        status, code = "error", 4
        state.error = f"{len(failed_workloads)} workload run(s) failed, first: {failed_workloads[0].workload.spec!r}"
    else:
        status = "leak" if over else pdiff.status_of(found, threshold=threshold)
        code = 1 if over else 0
    state.timings["total"] = time.time() - state.started
    report = pdiff.to_json(
        snaps,
        found,
        kernel=state.kernel_version,
        crashes=state.crashes,
        timings={k: round(v, 3) for k, v in state.timings.items()},
        status=status,
        threshold=threshold,
        top=max(s.top, 50),
        paths=[str(t.path) for t in state.snapshots],
    )
    for entry, taken in zip(report["snapshots"], state.snapshots, strict=True):
        entry.update(
            show_stacks=str(taken.stacks_path) if taken.stacks_path else None,
            bytes=taken.bytes,
            seconds=round(taken.seconds, 3),
            readers=taken.readers,
            read_mode=taken.read_mode,
            clock_s=None if taken.snapshot.clock_ns is None else round(taken.snapshot.clock_ns / 1e9, 6),
        )
        if taken.read_mode == "handle":
            entry["unresolved_records"] = taken.unresolved_records
        if taken.snapshot.warnings:
            entry["warnings"] = list(taken.snapshot.warnings)
    report["error"] = state.error
    report["interrupted"] = (
        {"signal": signal.Signals(state.signal).name, "phase": state.phase} if state.signal is not None else None
    )
    report["accel"] = state.guest_info.get("accel")
    report["workloads"] = [
        {
            "spec": r.workload.spec,
            "iteration": r.iteration,
            "status": r.status,
            "seconds": round(r.seconds, 3),
        }
        for r in state.runs
    ]
    report["fail_on_growth"] = s.fail_on_growth
    report["out"] = str(state.out.path)
    notes = _source_lens(state, ui, report, found, snaps)
    return Outcome(report, found, code, over, notes)


def _source_lens(
    state: RunState, ui: UI, report: dict[str, Any], found: list[pdiff.Suspect], snaps: list[Any]
) -> dict[tuple[str, ...], list[str]]:
    """Suspects gain source/subsystem (the build's debug info) and their allocinfo row (alloc-profiling)."""
    from pagelab.source import report as src

    build_dir = (state.build or {}).get("build_dir")
    kos = [str(p) for p, _ in _uploads(state.settings) if p.suffix == ".ko"]  # test modules: found by src
    with state.timed("analysis"):
        try:
            lens = src.run_lens(build_dir, kos, ui)
            stacks = [sp.frames for sp in found]
            stacks += [st.stack for st in snaps[-1].stacks.values()] if snaps else []
            where = src.where_for(lens, stacks, ui)
            alloc = src.sibling_allocinfo([str(t.path) for t in state.snapshots])
        except PagelabError as err:
            # Every exit path writes report.json: a broken .ko or allocinfo file costs its fields, not the report.
            ui.warn(f"source lines and allocinfo unavailable: {err}")
            where, alloc = {}, None
        src.annotate_diff(report, where, alloc)
    return src.suspect_notes(found[: state.settings.top], where, src.allocinfo_growth(alloc))


def render_run(ui: UI, state: RunState, outcome: Outcome) -> None:
    """The terminal report: run summary, snapshots, suspects with trend, top owners, crashes, verdict."""
    s = state.settings
    t = table(ui, "Run")
    t.show_header = False
    t.add_column("", style=None if ui.plain else "bold")
    t.add_column("")
    t.add_row(
        "kernel", f"{state.kernel_version or '?'}" + (" (cached build)" if (state.build or {}).get("cached") else "")
    )
    g = state.guest_info
    t.add_row(
        "guest", f"{g.get('accel') or '?'} · {g.get('memory') or s.memory} memory · {g.get('cpus') or s.cpus} vCPUs"
    )
    t.add_row("workloads", ", ".join(s.workloads) + f"  × {s.iterations} iterations")
    order = ("build", "modules", "image", "boot", "snapshots", "workloads", "settle", "shutdown", "analysis", "total")
    t.add_row("timings", "  ".join(f"{k} {state.timings[k]:.1f}s" for k in order if k in state.timings))
    t.add_row("artifacts", str(state.out.path))
    ui.print(t)

    if state.snapshots:
        st = table(ui, "Snapshots")
        for col, just in (("#", "right"), ("label", "left"), ("records", "right"), ("pages", "right")):
            # arg-type: rich wants a JustifyMethod literal; the tuple above widens it to str.
            st.add_column(col, justify=just)  # type: ignore[arg-type]
        for col in ("MiB", "dump MiB", "seconds", "readers"):
            st.add_column(col, justify="right")
        for taken in state.snapshots:
            snap = taken.snapshot
            st.add_row(
                str(taken.index),
                taken.label,
                f"{snap.records or 0:,}",
                f"{snap.total_pages:,}",
                mib(snap.total_pages),
                f"{taken.bytes / (1 << 20):.1f}",
                f"{taken.seconds:.1f}",
                str(taken.readers),
            )
        ui.print(st)

    snaps = [t.snapshot for t in state.snapshots]
    if len(snaps) >= 2:
        if outcome.found:
            render_suspects(ui, snaps, outcome.found, top=s.top, notes=outcome.notes)
        else:
            ui.print(Text("No stack grew from the baseline to the last snapshot."))
    if snaps:
        last = snaps[-1]
        ui.print(top_stacks_table(ui, last, top=s.top, title=f"Top owners in the last snapshot ({last.label})"))

    for crash in state.crashes:
        text = Text(f"guest kernel crash ({crash['kind']}): {crash['title']}\n", style="" if ui.plain else "bold red")
        if crash.get("excerpt"):
            text.append(crash["excerpt"].rstrip() + "\n")
        ui.print(text)
    ui.print(Text(_verdict(state, outcome), style="" if ui.plain else "bold"))


def _verdict(state: RunState, outcome: Outcome) -> str:
    rep = outcome.report
    s = state.settings
    if rep["status"] == "crash":
        return "verdict: the guest kernel crashed (exit 3)"
    if rep["status"] == "error":
        return f"verdict: the run did not complete: {state.error} (exit {outcome.exit_code})"
    top = outcome.found[0] if outcome.found else None
    head = f"top suspect {top.callsite} grew {top.growth_pages:,} pages ({top.verdict})" if top else "nothing grew"
    if outcome.over_threshold and s.fail_on_growth is not None:
        worst = pdiff.over_threshold(outcome.found, s.fail_on_growth)[0]
        head = f"{worst.callsite} grew {worst.growth_pages:,} pages ({worst.verdict})"
        return f"verdict: {head}, over --fail-on-growth {s.fail_on_growth} (exit 1)"
    if s.fail_on_growth is not None:
        return f"verdict: {head}, within --fail-on-growth {s.fail_on_growth}"
    return f"verdict: {head} (status {rep['status']})"


def _junit_cases(state: RunState, outcome: Outcome) -> list[Case]:
    s = state.settings
    cases: list[Case] = []
    build = Case("pagelab.run", "build", state.timings.get("build", 0.0) + state.timings.get("image", 0.0))
    if state.booted is None:
        # Nothing booted: the kernel, module or image build (or a host tool) failed first.
        build.outcome, build.message = "error", state.error or "the run stopped before booting"
    cases.append(build)
    boot = Case("pagelab.run", "boot", state.timings.get("boot", 0.0))
    if state.booted is None:
        boot.outcome, boot.message = "skipped", "nothing to boot"
    elif not state.booted:
        boot.outcome, boot.message = "error", state.boot_error or "boot failed"
    cases.append(boot)
    for r in state.runs:
        c = Case("pagelab.run.workloads", f"{r.workload.label} iteration {r.iteration}", r.seconds, output=r.output)
        if r.error is not None:
            c.outcome, c.message = "error", r.error
        elif r.status is None:
            c.outcome, c.message = "skipped", "the run stopped before this workload finished"
        elif r.status != 0:
            c.outcome, c.message = "failure", f"exited with status {r.status}"
        cases.append(c)
    ran = {(r.workload.label, r.iteration) for r in state.runs}
    for i in range(1, s.iterations + 1):
        for w in wl.resolve_all(s.workloads):
            if (w.label, i) not in ran:
                cases.append(
                    Case(
                        "pagelab.run.workloads",
                        f"{w.label} iteration {i}",
                        outcome="skipped",
                        message="not run",
                    )
                )
    if state.error is not None and not any(c.outcome in ("error", "failure") for c in cases):
        # The run stopped outside the build, the boot and the workloads (a snapshot, an upload, insmod,
        # the settle, the analysis): a case named after that phase carries it, so junit.xml is not green.
        cases.append(Case("pagelab.run", state.phase, outcome="error", message=state.error))
    crash = Case("pagelab.run", "crash-free")
    if state.crashes:
        c0 = state.crashes[0]
        crash.outcome, crash.message, crash.details = "failure", f"{c0['kind']}: {c0['title']}", c0.get("excerpt", "")
    elif state.booted is not True:
        crash.outcome, crash.message = "skipped", "the guest did not run"
    cases.append(crash)
    growth = Case("pagelab.run", "growth")
    if len(state.snapshots) < 2:
        growth.outcome, growth.message = "skipped", "fewer than two snapshots"
    elif outcome.over_threshold and s.fail_on_growth is not None:
        top = pdiff.over_threshold(outcome.found, s.fail_on_growth)[0]
        growth.outcome = "failure"
        growth.message = (
            f"{top.callsite} grew {top.growth_pages} pages, verdict {top.verdict} (> --fail-on-growth "
            f"{s.fail_on_growth}; only leak verdicts count, and growth where identities are unavailable)"
        )
        growth.details = "\n".join(top.frames)
    elif outcome.found:
        top = outcome.found[0]
        growth.output = (
            f"top suspect {top.callsite}: +{top.growth_pages} pages, verdict {top.verdict}"
            " (--fail-on-growth counts leak verdicts, and growth where identities are unavailable)\n"
        )
    cases.append(growth)
    return cases


def _write_artifacts(state: RunState, outcome: Outcome, ui: UI, json_out: str | None) -> None:
    out = state.out
    blocks = last_blockmap(state.snapshots, ui)  # report.json's pollution and report.html's pageblock map
    outcome.report["pollution"] = blocks.to_json() if blocks is not None else None
    # The three files CI reads first, so that a nearly full --out still says what happened.
    out.write_json(out.report_json, outcome.report)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(state.started))
    write_junit(out.junit_xml, SUITE, _junit_cases(state, outcome), timestamp=stamp)
    _write_metadata(state, outcome)
    out.write_text(out.report_txt, as_text(lambda u: render_run(u, state, outcome)))
    write_run_html(out.path, outcome.report, state.snapshots, blocks, ui, exit_code=outcome.exit_code)
    if json_out:
        with open_output(json_out) as fp:
            json.dump(outcome.report, fp, indent=2)
            fp.write("\n")


def _write_metadata(state: RunState, outcome: Outcome) -> None:
    out = state.out
    meta = metadata(
        settings_reproduce=state.settings.reproduce(),
        build=state.build,
        guest=state.guest_info,
        timings=state.timings,
        status=outcome.report["status"],
        exit_code=outcome.exit_code,
        started=state.started,
        config=state.config_path,
    )
    meta["kernel"]["kernel_version"] = state.kernel_version or meta["kernel"].get("kernel_version")
    meta["profile"] = state.settings.profile
    out.write_json(out.metadata_json, meta)


def run(settings: Settings, ui: UI, *, out: str | None = None, json_out: str | None = None) -> int:
    """The whole leak hunt; returns the exit code (0 ok, 1 growth over the threshold).

    Raises UsageError before anything runs for bad settings; GuestCrash (3) and InfraError (4) after the
    report and artifacts are written.
    """
    workloads = wl.resolve_all(settings.workloads)
    wl.check_host_tools(workloads)
    _uploads(settings)  # validated here, before the kernel build; uploaded after boot
    if settings.kernel:
        mark_build_in_use(settings.kernel)  # a bzImage in the build cache: no prune removes it during the run
        if not Path(settings.kernel).is_file():
            raise UsageError(f"--kernel {settings.kernel}: no such file")
        needs = sorted({m for w in workloads for m in w.modules})
        if needs:
            raise UsageError(
                f"test module {needs[0]!r} must be compiled against a kernel build dir: drop --kernel "
                "(pagelab builds and caches the kernel)"
            )
    if not settings.kernel:
        _check_build_inputs(settings)
    state = RunState(settings, RunDir(out or default_out_dir()))
    ui.step(f"run: {len(workloads)} workload(s) × {settings.iterations} iteration(s) → {state.out.path}")
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C: the guest is shut down, partial snapshots are
    # removed, and the report of what was gathered is written before exiting 128 + N.
    with signals_interrupt():
        failure: BaseException | None = None
        try:
            failure = _stages(state, ui, workloads)
        except KeyboardInterrupt as err:  # a signal between _stages' own handlers and the deferral
            if not state.crashes:
                failure = err
                state.signal = signal_of(err)
                state.error = f"interrupted by {signal.Signals(state.signal).name} during {state.phase}"
        finally:
            defer_interrupts()  # a signal from here on must not cut the report short
        outcome, internal = _report(state, ui, json_out)
        late = pending_interrupt()
    if late is not None and failure is None:
        ui.warn(f"{late} after the run: exiting {outcome.exit_code}, as its report says")
    # A signal that came while the report was written is not acted on: the run was over, and the exit
    # code is the one metadata.json and report.json already say.
    if failure is not None:
        raise failure
    if internal is not None:
        raise internal
    return outcome.exit_code


def _report(state: RunState, ui: UI, json_out: str | None) -> tuple[Outcome, PagelabError | None]:
    """Analyse, render and write the artifacts; a bug in any of them is exit 4 (not a traceback, not
    exit 1, which means a finding), with as much of the report written as could be."""
    internal: PagelabError | None = None

    def bug(where: str, err: Exception) -> InfraError:
        return InfraError(f"internal error {where}: {type(err).__name__}: {err} (a pagelab bug: please report it)")

    state.phase = "analysis" if state.error is None else state.phase
    try:
        outcome = _analyse(state, ui)
    except Exception as err:
        internal = bug("analysing the run", err)
        if state.error is None:
            state.error = str(internal)
        outcome = _fallback_outcome(state)
    try:
        render_run(ui, state, outcome)
    except Exception as err:
        internal = internal or bug("rendering the report", err)
    try:
        _write_artifacts(state, outcome, ui, json_out)
    except OSError as err:
        # A full or read-only --out: say so in one line (what was written stays).
        raise InfraError(f"--out {state.out.path}: cannot write the report: {err.strerror or err}") from None
    except Exception as err:
        internal = internal or bug("writing the report", err)
    if internal is not None and outcome.exit_code in (0, 1):
        # metadata.json must say the exit code the process ends with.
        outcome.exit_code = internal.exit_code
        with contextlib.suppress(Exception):
            _write_metadata(state, outcome)
    return outcome, internal


def _fallback_outcome(state: RunState) -> Outcome:
    """The report when the analysis itself failed: the run's facts without suspects."""
    if state.crashes:
        code = 3
    elif state.signal is not None:
        code = 128 + state.signal
    else:
        code = state.error_code  # the stopping error's (2 for a UsageError), else 4 (this analysis failure)
    report: dict[str, Any] = {
        "status": "crash" if state.crashes else "error",
        "error": state.error,
        "kernel": state.kernel_version,
        "crashes": state.crashes,
        "snapshots": [t.to_json() for t in state.snapshots],
        "suspects": [],
        "out": str(state.out.path),
    }
    return Outcome(report, [], code)


def _check_build_inputs(settings: Settings) -> None:
    """The build's cheap input checks, before the run directory exists: bad input (exit 2) writes
    nothing (docs/faults.md). The build repeats them (pagelab/kernel/build.py); this only fails earlier."""
    opts = BuildOptions.from_settings(settings)
    if opts.base and opts.base not in BASES and not Path(opts.base).expanduser().is_file():
        raise InputError(opts.base, "--base: expected tinyconfig, defconfig or an existing .config file")
    fragments = []
    for spec in opts.fragments:
        p = resolve_fragment(spec)
        if not p.is_file():
            raise InputError(spec, "--fragment: no such file" if not p.exists() else "--fragment: not a regular file")
        fragments.append(p)
    kconfig.requested(fragments)  # a malformed fragment names its file and line
    src = opts.kernel_src
    if src is not None:
        if is_version_name(src):
            debian_tarball(src)
        elif not Path(src).expanduser().exists():
            raise InputError(src, "no such file or directory (expected a kernel tree or a .tar.xz/.tar.gz tarball)")


def _stages(state: RunState, ui: UI, workloads: list[wl.Workload]) -> BaseException | None:
    """Build, image, guest phase; returns what stopped them (None: all done). State keeps the progress."""
    try:
        kernel, build = _kernel(state, ui)
        state.phase = "modules"
        modules = _modules(state, workloads, build, ui)
        state.phase = "image"
        with state.timed("image"):
            extra = wl.guest_files()
            extra[READER_GUEST_PATH] = build_reader(ui=ui)
            image = build_image(Path(build.modules_dir) if build and build.modules_dir else None, extra, ui)
        _guest_phase(state, ui, kernel, image, modules, workloads)
    except GuestCrash as err:
        state.crashes.append(crash_of(err))
        return err
    except PagelabError as err:  # UsageError too: e.g. a kernel built without CONFIG_MODULES
        state.error, state.error_code = str(err), err.exit_code
        return err
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM (pagelab.procs.Interrupted)
        state.signal = signal_of(err)
        state.error = f"interrupted by {signal.Signals(state.signal).name} during {state.phase}"
        return err
    except Exception as err:  # an unexpected failure must not lose the report of the snapshots taken
        state.error = f"{type(err).__name__}: {err}"
        return InfraError(f"run failed: {state.error}")
    state.phase = "done"
    return None
