"""Cached out-of-tree kernel builds: fragments → verified .config → bzImage, vmlinux and staged modules.

Cache layout (under ``cache_root()/kernel``)::

    src/<tarball sha256[:16]>/…            unpacked tarballs (source.py)
    builds/<group>/                        group = source location + compiler + make variables
        kconfig/                           scratch O= dir where configs are resolved (under kconfig.lock)
        work-0/ work-1/                    the group's build trees: make runs here (each under work-N.lock)
        <config sha256[:16]>/              one result per final .config
            obj/                           a copy of work/ after the build: bzImage, vmlinux, .config;
                                           the reported build_dir (`make -C obj M=dir MO=dir modules`)
            modules/lib/modules/<release>/ stripped modules for the guest image
            build.log  metadata.json       metadata.json is written last: it marks the entry valid
    resolved/<input key>.json              (sources, base, fragments, compiler, vars) → config sha256

Why shared build trees plus a copy per config: a changed config is an incremental build (Kbuild's
syncconfig touches only the changed symbols' dependency files), while every cached result keeps a
complete output dir for external modules, unaffected by later builds. Copying is ~1 s for a
tinyconfig-sized tree. Copying a tree to build in it would not do: objtool's build records absolute
paths and every object depends on objtool, so a copied tree rebuilds everything. A build picks the
tree that needs the least recompiling (counted from Kbuild's own per-symbol dependencies), so two
configs can alternate without rebuilding each other.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagelab import __version__
from pagelab.cache import (
    atomic_write,
    cache_dir,
    content_key,
    file_lock,
    file_sha256,
    mark_in_use,
    mark_used,
    try_file_lock,
)
from pagelab.errors import BuildError, InputError
from pagelab.kernel import kconfig
from pagelab.kernel.fragments import DEFAULT_FRAGMENTS
from pagelab.kernel.fragments import resolve as resolve_fragment
from pagelab.kernel.source import DEFAULT_TARBALL_GLOB, KernelSource, resolve_source
from pagelab.procs import popen_tied, signals_interrupt, step_failed, tool_version
from pagelab.resources import kconfigs_dir
from pagelab.settings import BASES, DEFAULT_BASE
from pagelab.settings import check as check_setting
from pagelab.ui import UI

if TYPE_CHECKING:
    from pagelab.settings import Settings

#: kconfigs/ at the top of the project: the fragments every build starts from.
KCONFIGS = kconfigs_dir()
#: Environment variables Kbuild reads that change what gets built: part of the cache key.
KBUILD_ENV = ("ARCH", "CROSS_COMPILE", "LLVM", "KCFLAGS", "KCPPFLAGS", "KAFLAGS", "KRUSTFLAGS", "LOCALVERSION")
#: Bump when the layout or what a result contains changes: old entries are then ignored.
LAYOUT = "1"
#: Build trees per group: two configs (say the default and a memcg one) can alternate without either
#: recompiling the other's objects. Each tree is a full O= dir (~200 MB for the default config).
WORK_TREES = 2
_PROGRESS_LINE = re.compile(r"^\s+(CC \[M\]|LD \[M\]|CC|AS|LD|AR|HOSTCC|HOSTLD|OBJCOPY|GEN)\s+(\S+)")


@dataclass
class BuildOptions:
    """What to build. Defaults: the Debian 6.12 source, tinyconfig, the default fragments, all cores."""

    kernel_src: str | None = None
    base: str | None = None
    fragments: list[str] = field(default_factory=list)  # shipped names (kconfigs/extras) or absolute paths
    jobs: int | None = None
    make_vars: list[str] = field(default_factory=list)  # e.g. ["LLVM=1"]; part of the cache key

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildOptions:
        """The build stage's settings (``pagelab/settings.py``: ``--kernel-src --base --fragment --jobs``)."""
        return cls(**settings.stage_values("build"))


@dataclass
class BuildResult:
    """A built (or cached) kernel. ``build_dir`` is the O= dir: ``make -C build_dir M=dir MO=dir modules``.

    Newer Kbuild writes an external module's objects into the O= dir unless ``MO=`` says where (older trees
    ignore ``MO=``); pagelab/kernel/modules.py builds this way.
    """

    bzimage: Path
    vmlinux: Path
    build_dir: Path
    config: Path
    kernel_version: str
    config_sha256: str
    cached: bool
    seconds: float
    modules_dir: Path | None  # staging dir holding lib/modules/<kernel_version>, or None without modules
    metadata: Path

    def to_json(self) -> dict[str, Any]:
        """The ``build --json`` shape of docs/formats.md (pagelab/schemas/build.schema.json)."""
        return {
            "bzimage": str(self.bzimage),
            "vmlinux": str(self.vmlinux),
            "build_dir": str(self.build_dir),
            "config": str(self.config),
            "kernel_version": self.kernel_version,
            "config_sha256": self.config_sha256,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "modules_dir": str(self.modules_dir) if self.modules_dir else None,
            "metadata": str(self.metadata),
            "line_info": _line_info(self.vmlinux),
        }


# -- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    src: KernelSource
    base: str
    base_digest: str
    fragments: tuple[Path, ...]
    fragment_digests: tuple[str, ...]  # taken with ``wanted``: the key names what was parsed and verified
    wanted: dict[str, kconfig.Setting]
    compiler: str
    make_vars: tuple[str, ...]
    env_vars: tuple[str, ...]
    jobs: int

    @property
    def group(self) -> str:
        return content_key([LAYOUT, self.src.identity, self.compiler, *self.make_vars, "--env--", *self.env_vars])

    @property
    def input_key(self) -> str:
        parts = [self.group, self.src.state, self.base, self.base_digest]
        parts += self.fragment_digests
        return content_key(parts, 32)


def _fragments(opts: BuildOptions) -> list[Path]:
    defaults = [KCONFIGS / name for name in DEFAULT_FRAGMENTS]
    for f in defaults:
        if not f.is_file():
            raise InputError(str(f), "default fragment missing (is the pagelab installation complete?)")
    extra = []
    for spec in opts.fragments:
        p = resolve_fragment(spec)
        if not p.is_file():
            raise InputError(spec, "--fragment: no such file" if not p.exists() else "--fragment: not a regular file")
        extra.append(p.resolve())
    return defaults + extra


def _compiler(make_vars: Sequence[str]) -> str:
    """The compiler's and the linker's first ``--version`` lines (Kbuild records both in .config)."""
    cc = "gcc"
    for v in make_vars:
        if v.startswith("CC="):
            cc = v[3:]
        elif v.startswith("LLVM=") and cc == "gcc":
            cc = "clang"
    if os.environ.get("LLVM") and cc == "gcc":
        cc = "clang"
    cc = os.environ.get("CROSS_COMPILE", "") + cc if cc == "gcc" else cc
    version = tool_version([*shlex.split(cc), "--version"])
    if version is None:
        raise BuildError(f"compiler {cc!r} does not run; install build-essential (scripts/setup-host.sh)")
    # Kbuild also records the linker's version in .config (LD_VERSION): a binutils upgrade is a new build.
    ld = tool_version(["ld", "--version"]) or "ld: unknown"
    return f"{version} | {ld}"


def _plan(opts: BuildOptions, ui: UI) -> _Plan:
    check_setting("jobs", opts.jobs)
    base = opts.base or DEFAULT_BASE
    if base in BASES:
        base_digest = ""
    else:
        p = Path(base).expanduser()
        if not p.is_file():
            raise InputError(base, "--base: expected tinyconfig, defconfig or an existing .config file")
        base = str(p.resolve())
        try:
            base_digest = file_sha256(p)
        except OSError as err:
            raise InputError(base, f"--base: cannot read ({err.strerror})") from None
    fragments = _fragments(opts)
    fragment_digests = tuple(file_sha256(f) for f in fragments)
    wanted = kconfig.requested(fragments)  # parse now: a bad fragment fails before anything slow
    src = resolve_source(opts.kernel_src, ui)
    kconfig.check_versions(fragments, src.version)  # e.g. alloc-profiling on 6.1: a usage error, nothing built
    make_vars = tuple(opts.make_vars)
    env_vars = tuple(f"{k}={os.environ[k]}" for k in KBUILD_ENV if os.environ.get(k))
    return _Plan(
        src=src,
        base=base,
        base_digest=base_digest,
        fragments=tuple(fragments),
        fragment_digests=fragment_digests,
        wanted=wanted,
        compiler=_compiler(make_vars),
        make_vars=make_vars,
        env_vars=env_vars,
        jobs=opts.jobs or os.cpu_count() or 1,
    )


# -- the cache -----------------------------------------------------------------------------------
def _kernel_root() -> Path:
    return cache_dir("kernel")


def _result_from(entry: Path, *, cached: bool, seconds: float) -> BuildResult | None:
    """The result recorded in ``entry`` if it is complete and its outputs still exist, else None.

    Takes no lock: an entry a prune renames meanwhile (OSError) or a junk metadata.json is None, a miss.
    """
    try:
        return _read_result(entry, cached=cached, seconds=seconds)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _read_result(entry: Path, *, cached: bool, seconds: float) -> BuildResult | None:
    meta = json.loads((entry / "metadata.json").read_text())
    obj = entry / "obj"
    bzimage = obj / "arch" / "x86" / "boot" / "bzImage"
    if meta.get("layout") != LAYOUT or not bzimage.is_file() or not (obj / ".config").is_file():
        return None
    if meta.get("bzimage_bytes", bzimage.stat().st_size) != bzimage.stat().st_size:
        return None  # truncated or overwritten since the build: rebuilt, never booted
    modules = entry / "modules" if meta.get("modules") else None
    if modules is not None and not modules.is_dir():
        return None
    return BuildResult(
        bzimage=bzimage,
        vmlinux=obj / "vmlinux",
        build_dir=obj,
        config=obj / ".config",
        kernel_version=meta["kernel_version"],
        config_sha256=meta["config_sha256"],
        cached=cached,
        seconds=seconds,
        modules_dir=modules,
        metadata=entry / "metadata.json",
    )


def _lookup(plan: _Plan, started: float) -> BuildResult | None:
    """A cache hit for these inputs, without running make (the ≤ 2 s path).

    Takes no lock: whatever a prune renames away meanwhile (OSError), or junk in the cache, is a miss (None).
    """
    try:
        return _find(plan, started)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _find(plan: _Plan, started: float) -> BuildResult | None:
    pointer = json.loads((_kernel_root() / "resolved" / f"{plan.input_key}.json").read_text())
    entry = _kernel_root() / "builds" / plan.group / pointer.get("entry", "-")
    hit = _result_from(entry, cached=True, seconds=0.0)
    if hit is None or hit.config_sha256 != pointer.get("config_sha256"):
        return None
    meta = json.loads(hit.metadata.read_text())
    if meta.get("source", {}).get("state") != plan.src.state:
        return None
    hit.seconds = time.monotonic() - started
    return hit


# -- the build -----------------------------------------------------------------------------------
def build_kernel(opts: BuildOptions, ui: UI) -> BuildResult:
    """Build (or find in the cache) the kernel ``opts`` describes.

    Raises UsageError/InputError (exit 2) for bad options, a missing source, fragment or base file;
    BuildError (exit 4) when a requested symbol does not land (before compiling) or make fails.
    """
    started = time.monotonic()
    plan = _plan(opts, ui)
    hit = _lookup(plan, started)
    if hit is not None:
        # In use from here to the end of the process (pagelab cache prune skips it). The hit path takes no
        # lock: a prune may have removed the entry since the lookup, so the whole lookup (pointer, config
        # sha256, source state) runs again once marked.
        mark_in_use(hit.metadata.parent)
        hit = _lookup(plan, started)
        if hit is not None:
            mark_used(hit.metadata.parent)
            ui.step(f"kernel {hit.kernel_version} cached: {hit.bzimage}")
            return hit

    group_dir = cache_dir("kernel", "builds", plan.group)
    config_text = _resolve_config(plan, group_dir, ui)
    config_sha = hashlib.sha256(config_text.encode()).hexdigest()
    entry = group_dir / config_sha[:16]
    # The per-config lock makes a concurrent build of the same config wait and then answer from the cache.
    with _waiting_lock(group_dir / f"{entry.name}.lock", ui, "another pagelab is building this config"):
        done = _result_from(entry, cached=True, seconds=0.0)
        if done is not None and json.loads(done.metadata.read_text()).get("source", {}).get("state") == plan.src.state:
            # Same final config as an existing build (e.g. a fragment that changes nothing), or a
            # concurrent pagelab finished it while we waited for the lock.
            _point(plan, entry.name, config_sha)
            mark_used(entry)
            mark_in_use(entry)
            done.seconds = time.monotonic() - started
            ui.step(f"kernel {done.kernel_version} cached: {done.bzimage}")
            return done
        work, estimate = _choose_work_tree(group_dir, entry, kconfig.parse_config(config_text))
        with _waiting_lock(work.with_name(f"{work.name}.lock"), ui, f"{work} is busy with another build"):
            result = _build_entry(plan, work, entry, config_text, config_sha, estimate, ui, started)
        mark_in_use(entry)  # under the config lock, which prune takes too: nothing removes it in between
        _point(plan, entry.name, config_sha)
        return result


@contextlib.contextmanager
def _waiting_lock(path: Path, ui: UI, busy: str) -> Iterator[None]:
    """file_lock, saying that we wait when someone else holds it."""
    with try_file_lock(path) as free:
        if not free:
            ui.step(f"{busy}; waiting")
    with file_lock(path):
        yield


def configure(opts: BuildOptions, ui: UI) -> str:
    """Only resolve and verify the final ``.config`` (merge + olddefconfig, nothing compiled); returns its text.

    Raises like build_kernel: InputError/UsageError (exit 2), BuildError when a symbol does not land.
    """
    plan = _plan(opts, ui)
    return _resolve_config(plan, cache_dir("kernel", "builds", plan.group), ui)


def _resolve_config(plan: _Plan, group_dir: Path, ui: UI) -> str:
    """Base + fragments → final .config text, verified. Runs in the group's scratch dir under its lock."""
    scratch = group_dir / "kconfig"
    log = group_dir / "kconfig.log"
    with file_lock(group_dir / "kconfig.lock"):
        log.write_text("")
        ui.step(f"configuring {plan.src.describe()}: {Path(plan.base).name} + {len(plan.fragments)} fragment(s)")
        base_file = kconfig.make_base(plan.src.tree, scratch, plan.base, plan.make_vars, log)
        final = kconfig.merge(plan.src.tree, scratch, base_file, plan.fragments, plan.make_vars, log)
        text = final.read_text()
    checked = kconfig.verify(plan.wanted, kconfig.parse_config(text), lambda: kconfig.load_index(plan.src.tree))
    for m in checked:
        if not m.fatal:
            ui.warn(m.explain())
    mismatches = [m for m in checked if m.fatal]
    if mismatches:
        # Keep the evidence: the scratch .config is overwritten by the next resolution.
        rejected = cache_dir("kernel", "rejected") / f"{plan.input_key}.config"
        atomic_write(rejected, text)
        raise BuildError(kconfig.format_mismatches(mismatches, rejected))
    return text


def _point(plan: _Plan, entry_name: str, config_sha: str) -> None:
    resolved = cache_dir("kernel", "resolved")
    atomic_write(resolved / f"{plan.input_key}.json", json.dumps({"entry": entry_name, "config_sha256": config_sha}))


def rebuild_cost(work: Path, config: dict[str, str]) -> tuple[int, int] | None:
    """(objects Kbuild would recompile in build tree ``work`` for ``config``, objects in the tree).

    None for a tree that never finished a build. Counts the objects whose recorded per-symbol
    dependencies (``include/config/SYM`` in their ``.*.o.cmd``, written by fixdep) include a symbol
    whose value differs from the tree's .config. Objects the new config adds are not counted.
    """
    try:
        old = kconfig.parse_config((work / ".config").read_text())
    except OSError:
        return None
    if not (work / "vmlinux").is_file():
        return None
    changed = sorted(s for s in old.keys() | config.keys() if old.get(s, "n") != config.get(s, "n"))
    pattern = re.compile(rb"include/config/(?:" + b"|".join(re.escape(s.encode()) for s in changed) + rb")\)")
    cost = total = 0
    for dirpath, _, files in os.walk(work):
        for name in files:
            if name.startswith(".") and name.endswith(".o.cmd"):
                total += 1
                if changed:
                    with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                        cost += bool(pattern.search(f.read()))
    return cost, total


def _choose_work_tree(group_dir: Path, entry: Path, config: dict[str, str]) -> tuple[Path, int | None]:
    """The build tree that needs the least recompiling for ``config``, and the progress estimate.

    A config that would recompile most of every warm tree goes to an empty tree if there is one,
    else to the tree used least recently: alternating between, say, the default and a memcg config
    then does not rebuild both each time.
    The estimate is in make's progress lines (objects, archives, links) as counted by _run_make.
    """
    trees = [group_dir / f"work-{i}" for i in range(WORK_TREES)]
    costs = [(work, rebuild_cost(work, config)) for work in trees]
    warm = [(c, work) for work, c in costs if c is not None]
    empty = [work for work, c in costs if c is None]
    lines = _last_lines(group_dir)
    if not warm:
        return empty[0], lines
    (cost, total), work = min(warm, key=lambda t: t[0][0])
    if cost > total // 2:
        if empty:
            return empty[0], lines
        # Nearly a full build wherever it goes: overwrite the tree used least recently.
        (cost, total), work = min(warm, key=lambda t: _last_used(t[1]))
    if cost == 0:
        # Same config, changed sources: the last build of this config is the best guess.
        for path in (entry / "objects", work / "pagelab-objects"):
            with contextlib.suppress(OSError, ValueError):
                return work, int(path.read_text())
        return work, lines
    ratio = lines / total if lines and total else 1.5  # progress lines per object in a full build
    return work, int(cost * ratio)


def _last_used(work: Path) -> float:
    try:
        return (work / "pagelab-used").stat().st_mtime
    except OSError:
        return 0.0


def _last_lines(group_dir: Path) -> int | None:
    """Progress lines of the group's largest recorded build (a cold build's count)."""
    counts = []
    for p in group_dir.glob("*/objects"):
        with contextlib.suppress(OSError, ValueError):
            counts.append(int(p.read_text()))
    return max(counts) if counts else None


def _snapshot(work: Path, entry: Path) -> Path:
    """Copy the build tree into ``entry/obj`` (timestamps kept), replacing an older copy atomically."""
    obj = entry / "obj"
    tmp = entry / f"obj.tmp.{os.getpid()}"
    proc = subprocess.run(["cp", "-a", "--reflink=auto", str(work), str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"copying {work} to {tmp} failed: {proc.stderr.strip()[-300:]}")
    if obj.exists():
        old = entry / f"obj.old.{os.getpid()}"
        os.rename(obj, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, obj)
    return obj


def _build_entry(
    plan: _Plan,
    work: Path,
    entry: Path,
    config_text: str,
    config_sha: str,
    estimate: int | None,
    ui: UI,
    started: float,
) -> BuildResult:
    entry.mkdir(parents=True, exist_ok=True)
    # From here until metadata.json is rewritten the entry is not valid: an interrupt leaves it so.
    with contextlib.suppress(FileNotFoundError):
        (entry / "metadata.json").unlink()
    for stale in [*entry.glob("obj.tmp.*"), *entry.glob("obj.old.*"), *entry.glob("modules.tmp.*")]:
        shutil.rmtree(stale, ignore_errors=True)  # leftovers of an interrupted build; we hold the lock
    work.mkdir(exist_ok=True)
    (work / "pagelab-used").touch()
    current = work / ".config"
    if not current.is_file() or current.read_text() != config_text:
        # A newer .config makes Kbuild run syncconfig, which touches only the changed symbols' files:
        # the shared build tree rebuilds incrementally whatever config it held before.
        atomic_write(current, config_text)
    log = entry / "build.log"
    make_cmd = ["make", "-C", str(plan.src.tree), f"O={work}", f"-j{plan.jobs}", *plan.make_vars, "bzImage", "modules"]
    ui.step(f"building {plan.src.version} in {work} (make -j{plan.jobs})")
    t0 = time.monotonic()
    objects = _run_make(make_cmd, plan.src.tree, log, estimate, ui)
    build_seconds = time.monotonic() - t0
    atomic_write(work / "pagelab-objects", str(objects))
    release = (work / "include" / "config" / "kernel.release").read_text().strip()
    obj = _snapshot(work, entry)
    config = kconfig.parse_config(config_text)
    modules = _install_modules(plan, obj, entry, log) if config.get("MODULES") == "y" else None
    atomic_write(entry / "objects", str(objects))
    meta = _metadata(plan, entry, release, config_sha, make_cmd, build_seconds, objects, modules is not None)
    meta["bzimage_bytes"] = (obj / "arch" / "x86" / "boot" / "bzImage").stat().st_size
    meta["line_info"] = _line_info(obj / "vmlinux")
    atomic_write(entry / "metadata.json", json.dumps(meta, indent=2) + "\n")
    result = _result_from(entry, cached=False, seconds=time.monotonic() - started)
    if result is None:
        raise BuildError(f"make succeeded but {obj}/arch/x86/boot/bzImage is missing; full log: {log}")
    ui.step(f"built {release} in {build_seconds:.0f} s ({objects} objects): {result.bzimage}")
    return result


def _run_make(cmd: list[str], cwd: Path, log: Path, estimate: int | None, ui: UI) -> int:
    """Run make with a live progress bar (objects compiled vs. ``estimate``). Raises BuildError on failure."""
    count = 0
    # Line-buffered: `tail -f build.log` (and anyone checking on the build) sees it as it happens.
    with open(log, "w", encoding="utf-8", buffering=1) as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # Own session: Ctrl-C reaches us, and we take the whole make tree down ourselves. If we die
        # without cleaning up (SIGKILL), the kernel sends the shell below SIGTERM and it kills its
        # process group (make, the sub-makes, the compilers): no orphan keeps writing into a build
        # tree whose lock is gone. (The death signal is not inherited, so make itself cannot get it.)
        guarded = ["sh", "-c", 'trap "trap - TERM; kill -TERM 0" TERM; "$@" & wait $!', "sh", *cmd]
        proc = popen_tied(
            guarded,
            death_signal=signal.SIGTERM,
            cwd=cwd,
            env=kconfig.kbuild_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        # SIGTERM unwinds like Ctrl-C, so make is stopped and nothing looks valid.
        with signals_interrupt():
            live = not ui.plain and not ui.quiet and ui.err.is_terminal
            t0 = time.monotonic()
            next_note = t0 + 60
            try:
                with ui.progress("compiling", total=estimate) as task:
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        out.write(line)
                        m = _PROGRESS_LINE.match(line)
                        if m:
                            count += 1
                            if estimate is not None and count >= estimate:
                                estimate = int(count * 1.2) + 5  # the estimate was low: keep the bar moving
                                task.update(total=estimate)
                            task.update(completed=count, description=f"compiling {m.group(2)[-40:]:<40}")
                            if not live and time.monotonic() >= next_note:
                                # No live bar (CI, a log file): a plain line now and then instead.
                                next_note = time.monotonic() + 60
                                of = f"/~{estimate}" if estimate else ""
                                ui.step(f"compiling: {count}{of} objects, {time.monotonic() - t0:.0f} s")
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    if rc != 0:
        raise step_failed("kernel build", rc, log=log)
    return count


def _install_modules(plan: _Plan, obj: Path, entry: Path, log: Path) -> Path:
    """``make modules_install`` (stripped) into ``entry/modules``, replaced atomically."""
    staging = entry / "modules"
    tmp = entry / f"modules.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["make", "-C", str(plan.src.tree), f"O={obj}", *plan.make_vars]
    cmd += [f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1", "modules_install"]
    with open(log, "a", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.run(
            cmd, cwd=plan.src.tree, stdout=out, stderr=subprocess.STDOUT, check=False, env=kconfig.kbuild_env()
        ).returncode
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise step_failed("make modules_install", rc, log=log)
    # The `build` link points into this cache entry; a guest image must not follow it.
    for link in tmp.glob("lib/modules/*/build"):
        if link.is_symlink():
            link.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    os.rename(tmp, staging)
    return staging


def _metadata(
    plan: _Plan,
    entry: Path,
    release: str,
    config_sha: str,
    make_cmd: list[str],
    seconds: float,
    objects: int,
    modules: bool,
) -> dict[str, Any]:
    reproduce = ["pagelab", "build"]
    if plan.src.kind != "tarball" or plan.src.origin != _default_origin():
        reproduce += ["--kernel-src", plan.src.origin]
    if plan.base != DEFAULT_BASE:
        reproduce += ["--base", plan.base]
    defaults = {KCONFIGS / n for n in DEFAULT_FRAGMENTS}
    for frag in plan.fragments:
        if frag not in defaults:
            reproduce += ["--fragment", str(frag)]
    reproduce += [f"--jobs={plan.jobs}"]
    return {
        "layout": LAYOUT,
        "pagelab": __version__,
        "source": {
            "origin": plan.src.origin,
            "kind": plan.src.kind,
            "tree": str(plan.src.tree),
            "identity": plan.src.identity,
            "state": plan.src.state,
            "version": plan.src.version,
        },
        "kernel_version": release,
        "base": plan.base,
        "fragments": [{"path": str(f), "sha256": file_sha256(f)} for f in plan.fragments],
        "config_sha256": config_sha,
        "compiler": plan.compiler,
        "make_vars": list(plan.make_vars),
        "env": list(plan.env_vars),
        "make_command": shlex.join(make_cmd),
        "jobs": plan.jobs,
        "seconds": round(seconds, 1),
        "objects": objects,
        "modules": modules,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reproduce": shlex.join(reproduce),
    }


def _line_info(vmlinux: Path) -> bool:
    """True when vmlinux carries DWARF line tables (``--fragment debuginfo``): frames resolve to file:line."""
    from pagelab.source.elf import Elf, ElfError

    try:
        return Elf(vmlinux).has_line_info()
    except ElfError:
        return False


def _default_origin() -> str:
    found = sorted(glob.glob(DEFAULT_TARBALL_GLOB))
    return found[-1] if found else ""
