"""pagelab build against the real Debian 6.12 source: the default kernel, the cache, failures, modules.

These use the normal cache (cache_root()), so CI builds the default kernel once and the VM tests
reuse it. Configs made only for a test are removed again afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pagelab.errors import BuildError, InputError
from pagelab.kernel import kconfig
from pagelab.kernel.build import BuildOptions, BuildResult, build_kernel, configure
from pagelab.ui import UI

pytestmark = pytest.mark.slow

PAGELAB = [sys.executable, "-m", "pagelab"]


def quiet() -> UI:
    return UI(plain=True, quiet=True)


@pytest.fixture(scope="module")
def default_kernel() -> BuildResult:
    return build_kernel(BuildOptions(), UI(plain=True))


def fragment(tmp_path: Path, text: str, name: str = "extra.config") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def drop_entry(build_dir: Path) -> None:
    """Remove a test-only cache entry (its obj dir's parent) so test configs do not pile up."""
    entry = build_dir.parent
    assert entry.parent.parent.name == "builds", entry
    shutil.rmtree(entry, ignore_errors=True)
    entry.with_name(f"{entry.name}.lock").unlink(missing_ok=True)


# -- the default kernel --------------------------------------------------------------------------
def test_default_kernel_has_page_owner_modules_sysrq_and_virtio(default_kernel: BuildResult) -> None:
    assert default_kernel.bzimage.is_file() and default_kernel.vmlinux.is_file()
    assert default_kernel.kernel_version.startswith("6.12.")
    config = kconfig.parse_config(default_kernel.config.read_text())
    for sym in ("PAGE_OWNER", "DEBUG_FS", "MODULES", "MODULE_UNLOAD", "MAGIC_SYSRQ", "KALLSYMS", "PROC_SYSCTL"):
        assert config.get(sym) == "y", sym
    for sym in ("VIRTIO_PCI", "VIRTIO_NET", "VIRTIO_BLK", "HW_RANDOM_VIRTIO", "PVPANIC_PCI", "SERIAL_8250_CONSOLE"):
        assert config.get(sym) == "y", sym
    # The console watcher needs the kernel's own crash reports: BUG/WARN, verbose BUG, the lockup detectors.
    for sym in ("BUG", "DEBUG_BUGVERBOSE", "SOFTLOCKUP_DETECTOR", "DETECT_HUNG_TASK"):
        assert config.get(sym) == "y", sym
    assert default_kernel.config_sha256 == hashlib.sha256(default_kernel.config.read_bytes()).hexdigest()


def test_default_kernel_records_metadata_with_a_reproducer(default_kernel: BuildResult) -> None:
    meta = json.loads(default_kernel.metadata.read_text())
    assert meta["kernel_version"] == default_kernel.kernel_version
    assert meta["config_sha256"] == default_kernel.config_sha256
    assert meta["compiler"].startswith(("gcc", "clang"))
    assert "bzImage" in meta["make_command"] and " O=" in meta["make_command"]
    assert meta["reproduce"].startswith("pagelab build")
    assert meta["source"]["version"].startswith("6.12")
    assert meta["seconds"] > 0


def test_default_kernel_stages_stripped_modules_for_the_guest(default_kernel: BuildResult) -> None:
    assert default_kernel.modules_dir is not None
    moddir = default_kernel.modules_dir / "lib" / "modules" / default_kernel.kernel_version
    assert (moddir / "modules.dep").is_file()
    assert not (moddir / "build").exists()  # no link back into the cache inside a guest image


def test_second_build_is_a_cache_hit_with_json_only_on_stdout(default_kernel: BuildResult) -> None:
    proc = subprocess.run([*PAGELAB, "build", "--json"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["cached"] is True
    assert got["bzimage"] == str(default_kernel.bzimage)
    assert got["build_dir"] == str(default_kernel.build_dir)
    assert got["config_sha256"] == default_kernel.config_sha256
    assert set(got) >= {"bzimage", "vmlinux", "build_dir", "config", "kernel_version", "config_sha256", "seconds"}


def test_a_config_file_as_base_that_resolves_to_the_same_config_is_the_same_build(
    default_kernel: BuildResult, tmp_path: Path
) -> None:
    base = tmp_path / "my.config"
    shutil.copy(default_kernel.config, base)
    again = build_kernel(BuildOptions(base=str(base)), quiet())
    assert again.cached is True
    assert again.config_sha256 == default_kernel.config_sha256 and again.bzimage == default_kernel.bzimage


def test_external_module_builds_against_build_dir(default_kernel: BuildResult, tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(
        "#include <linux/module.h>\n"
        "static int __init hello_init(void) { return 0; }\n"
        "static void __exit hello_exit(void) { }\n"
        'module_init(hello_init);\nmodule_exit(hello_exit);\nMODULE_LICENSE("GPL");\n'
    )
    (tmp_path / "Makefile").write_text("obj-m := hello.o\n")
    proc = subprocess.run(
        # The documented command (docs/formats.md): MO= keeps the output in the module's directory on 7.x too.
        ["make", "-C", str(default_kernel.build_dir), f"M={tmp_path}", f"MO={tmp_path}", "modules"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ko = tmp_path / "hello.ko"
    assert ko.is_file()
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True, text=True, check=True)
    assert vermagic.stdout.split()[0] == default_kernel.kernel_version


# -- verification (olddefconfig only, nothing is compiled) ---------------------------------------
class RecordingUI(UI):
    """A quiet UI that remembers the pipeline steps it was told about."""

    def __init__(self) -> None:
        super().__init__(plain=True, quiet=True)
        self.steps: list[str] = []

    def step(self, message: str) -> None:
        self.steps.append(message)


def test_unknown_symbol_fails_before_compiling(tmp_path: Path) -> None:
    ui = RecordingUI()
    frag = fragment(tmp_path, "CONFIG_PAGELAB_NO_SUCH_SYMBOL=y\n")
    with pytest.raises(BuildError) as err:
        build_kernel(BuildOptions(fragments=[frag]), ui)
    assert f"CONFIG_PAGELAB_NO_SUCH_SYMBOL ({frag}:1): no such symbol" in str(err.value)
    assert err.value.exit_code == 4
    assert any(s.startswith("configuring") for s in ui.steps)
    assert not any(s.startswith("building") for s in ui.steps)


def test_debug_kernel_off_names_page_owner_and_its_dependency(tmp_path: Path) -> None:
    # On defconfig nothing selects DEBUG_KERNEL, so turning it off really blocks PAGE_OWNER.
    frag = fragment(tmp_path, "# CONFIG_DEBUG_KERNEL is not set\n")
    with pytest.raises(BuildError) as err:
        build_kernel(BuildOptions(base="defconfig", fragments=[frag]), quiet())
    lines = str(err.value).splitlines()
    (po,) = [line for line in lines if "CONFIG_PAGE_OWNER " in line]
    assert "asked y, got not set" in po
    assert "depends on DEBUG_KERNEL && STACKTRACE_SUPPORT [DEBUG_KERNEL=not set" in po


def test_debug_kernel_off_on_tinyconfig_names_the_select_that_keeps_it(tmp_path: Path) -> None:
    # tinyconfig sets EXPERT, which selects DEBUG_KERNEL: the request cannot land, and we say why.
    frag = fragment(tmp_path, "# CONFIG_DEBUG_KERNEL is not set\n")
    with pytest.raises(BuildError) as err:
        build_kernel(BuildOptions(fragments=[frag]), quiet())
    assert "CONFIG_DEBUG_KERNEL" in str(err.value) and "selected by EXPERT=y" in str(err.value)


def test_configuring_never_writes_into_the_source_tree(default_kernel: BuildResult) -> None:
    tree = Path(json.loads(default_kernel.metadata.read_text())["source"]["tree"])
    before = tree.stat().st_mtime_ns  # a file created and removed there (a temp file) would change it
    configure(BuildOptions(), quiet())
    assert tree.stat().st_mtime_ns == before


@pytest.mark.skipif(not Path("/usr/src/linux-source-6.1.tar.xz").is_file(), reason="linux-source-6.1 not installed")
def test_default_fragments_also_land_on_6_1() -> None:
    # The older dump format needs a 6.1 guest: the same fragments must verify there (config only).
    text = configure(BuildOptions(kernel_src="/usr/src/linux-source-6.1.tar.xz"), quiet())
    config = kconfig.parse_config(text)
    assert config["PAGE_OWNER"] == "y" and config["VIRTIO_NET"] == "y" and config["MODULES"] == "y"


def test_missing_fragment_and_base_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--fragment: no such file"):
        build_kernel(BuildOptions(fragments=[str(tmp_path / "nope.config")]), quiet())
    with pytest.raises(InputError, match="--base: expected tinyconfig, defconfig or an existing"):
        build_kernel(BuildOptions(base=str(tmp_path / "x")), quiet())
    with pytest.raises(InputError, match="--base: cannot read"):
        build_kernel(BuildOptions(base="/proc/self/mem"), quiet())  # a file that exists but cannot be read
    proc = subprocess.run([*PAGELAB, "build", "--jobs", "0"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--jobs" in proc.stderr


# -- failures, interrupts, concurrency -----------------------------------------------------------
def test_failed_build_shows_the_tail_and_the_log_and_exits_4(default_kernel: BuildResult, tmp_path: Path) -> None:
    # A real make failure that costs seconds: the initramfs generator rejects a missing source.
    frag = fragment(tmp_path, 'CONFIG_INITRAMFS_SOURCE="/nonexistent/pagelab-test-initramfs"\n')
    proc = subprocess.run([*PAGELAB, "build", "--fragment", frag], capture_output=True, text=True, check=False)
    assert proc.returncode == 4, proc.stderr
    # pagelab/procs.py step_failed: the status, the log's last lines (at most 40), where the full log is.
    assert re.search(r"kernel build failed \(exit 2\); last \d+ lines:\n", proc.stderr), proc.stderr
    log = Path(proc.stderr.rsplit("full log:", 1)[1].split()[0])
    assert log.is_file() and "pagelab-test-initramfs" in proc.stderr
    assert not (log.parent / "metadata.json").exists()
    drop_entry(log.parent / "obj")


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_interrupted_build_leaves_no_valid_entry_and_no_make(
    default_kernel: BuildResult, tmp_path: Path, signum: int, status: int
) -> None:
    # DEBUG_VM recompiles most of the kernel: the build is still running when the signal comes.
    frag = fragment(tmp_path, f'CONFIG_DEBUG_VM=y\nCONFIG_LOCALVERSION="-pagelab-interrupted-{signum}"\n')
    groups = default_kernel.build_dir.parent.parent
    before = {p.name for p in groups.iterdir()}
    proc = subprocess.Popen([*PAGELAB, "build", "--fragment", frag], stderr=subprocess.DEVNULL)

    def compiling() -> bool:
        new = [p for p in groups.iterdir() if p.name not in before and (p / "build.log").is_file()]
        return any("CC" in (p / "build.log").read_text(errors="replace") for p in new)

    try:
        assert _wait_for(compiling, 300), "make never started"
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status
    (entry,) = [p for p in groups.iterdir() if p.name not in before and p.is_dir() and not p.name.startswith("work-")]
    assert not (entry / "metadata.json").exists()
    # Even after SIGKILL (no cleanup code runs) make and its sub-makes go away with pagelab.
    assert _wait_for(lambda: _make_processes(groups) == [], 20), _make_processes(groups)
    drop_entry(entry / "obj")


def _make_processes(group: Path) -> list[int]:
    """Pids of processes still running make in the group's build trees (none may survive an interrupt)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"{group}/work-".encode() in cmd and cmd.startswith(b"make"):
                out.append(int(pid))
    return out


def test_concurrent_builds_of_one_key_build_once(default_kernel: BuildResult, tmp_path: Path) -> None:
    frag = fragment(tmp_path, 'CONFIG_LOCALVERSION="-pagelab-concurrent"\n')
    cmd = [*PAGELAB, "build", "--json", "--fragment", frag]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=1200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    results = [json.loads(o) for o, _ in outs]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["bzimage"] == results[1]["bzimage"]
    assert results[0]["kernel_version"].endswith("-pagelab-concurrent")
    drop_entry(Path(results[0]["build_dir"]))
