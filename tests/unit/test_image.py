"""The guest image builder: newc cpio (checked with GNU cpio), library closure, layout, cache."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pagelab.errors import BuildError, UsageError
from pagelab.guest import image
from pagelab.guest.image import CpioWriter, build_image, guest_layout, image_key, library_closure, parse_ldd, read_cpio
from pagelab.guest.keys import ensure_keys
from pagelab.ui import UI


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pagelab"


@pytest.fixture
def quiet_ui() -> UI:
    return UI(plain=True, quiet=True)


def test_cpio_archive_extracts_with_gnu_cpio(tmp_path: Path) -> None:
    host_file = tmp_path / "payload"
    host_file.write_bytes(os.urandom(70001))  # not a multiple of 4: exercises padding
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.add_dir("etc", 0o755)
    w.add_bytes("etc/motd", b"hello\n", 0o640)
    w.add_host_file("etc/payload", host_file, 0o600)
    w.add_symlink("etc/link", "motd")
    w.close()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        ["cpio", "-i", "-d", "--no-absolute-filenames", "--quiet"], input=buf.getvalue(), cwd=out, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "etc/motd").read_bytes() == b"hello\n"
    assert stat.S_IMODE((out / "etc/motd").stat().st_mode) == 0o640
    assert (out / "etc/payload").read_bytes() == host_file.read_bytes()
    assert os.readlink(out / "etc/link") == "motd"


def test_cpio_device_node_is_listed_by_gnu_cpio_without_root(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.add_dir("dev")
    w.add_char_device("dev/console", 5, 1)
    w.close()
    listing = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=buf.getvalue(), capture_output=True).stdout
    assert b"crw-------" in listing and b"5,   1" in listing and b"dev/console" in listing


def test_read_cpio_round_trips_what_the_writer_wrote() -> None:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.add_bytes("a", b"xyz", 0o755)
    w.add_char_device("c", 1, 3)
    w.close()
    entries = list(read_cpio(buf.getvalue()))
    assert [(n, stat.S_IMODE(m), d) for n, m, d, _ in entries] == [("a", 0o755, b"xyz"), ("c", 0o600, b"")]
    assert entries[1][3] == (1, 3) and stat.S_ISCHR(entries[1][1])


def test_parse_ldd_takes_resolved_paths_and_the_interpreter() -> None:
    output = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f30)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f31)\n"
    )
    assert parse_ldd(output) == ["/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"]


def test_parse_ldd_missing_library_is_a_build_error() -> None:
    with pytest.raises(BuildError, match=r"libmissing\.so\.1 => not found"):
        parse_ldd("\tlibmissing.so.1 => not found\n")


def test_library_closure_of_dropbear_has_libc_and_the_loader() -> None:
    dropbear = shutil.which("dropbear") or "/usr/sbin/dropbear"
    libs = [p.name for p in library_closure(Path(dropbear))]
    assert "libc.so.6" in libs
    assert any(name.startswith("ld-linux") for name in libs)


def test_library_closure_of_static_busybox_is_empty() -> None:
    assert library_closure(Path(shutil.which("busybox") or "/bin/busybox")) == []


def test_layout_has_init_busybox_dropbear_keys_and_parents_for_every_entry(cache: Path) -> None:
    entries = guest_layout(ensure_keys(), tools=())
    for name in ("init", "bin/busybox", "bin/sh", "bin/ip", "bin/dropbear", "dev/console", "root/.ssh/authorized_keys"):
        assert name in entries, name
    assert entries["root/.ssh/authorized_keys"].mode == 0o600
    assert entries["etc/dropbear/dropbear_ed25519_host_key"].mode == 0o600
    for name in entries:
        parent = name.rpartition("/")[0]
        assert not parent or parent in entries, f"{name} has no parent entry"


def test_extra_files_land_at_their_guest_path_with_their_mode(cache: Path, tmp_path: Path) -> None:
    tool = tmp_path / "po-read"
    tool.write_bytes(b"\x7fELF fake")
    tool.chmod(0o755)
    entries = guest_layout(ensure_keys(), tools=(), extra_files={"/opt/pagelab/po-read": tool})
    assert entries["opt/pagelab/po-read"].mode == 0o755
    assert entries["opt/pagelab"].kind == "dir"


@pytest.mark.parametrize("guest_path", ["", "/", "/a/../etc/passwd"])
def test_extra_file_with_a_bad_guest_path_is_a_usage_error(cache: Path, tmp_path: Path, guest_path: str) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UsageError, match="extra file"):
        guest_layout(ensure_keys(), tools=(), extra_files={guest_path: f})


def test_extra_file_that_does_not_exist_is_a_usage_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a file"):
        guest_layout(ensure_keys(), tools=(), extra_files={"/x": tmp_path / "missing"})


def test_modules_staging_tree_is_copied_under_lib_modules(cache: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    mod = staging / "lib/modules/6.12.0/extra"
    mod.mkdir(parents=True)
    (mod / "hoard.ko").write_bytes(b"ko")
    (staging / "lib/modules/6.12.0/modules.dep").write_text("extra/hoard.ko:\n")
    (staging / "lib/modules/6.12.0/build").symlink_to(tmp_path)  # modules_install's link to the build dir
    entries = guest_layout(ensure_keys(), tools=(), modules_dir=staging)
    assert entries["lib/modules/6.12.0/extra/hoard.ko"].kind == "file"
    assert "lib/modules/6.12.0/modules.dep" in entries
    assert "lib/modules/6.12.0/build" not in entries


def test_image_key_changes_when_an_input_file_changes(cache: Path, tmp_path: Path) -> None:
    f = tmp_path / "script.sh"
    f.write_text("echo one\n")
    keys = ensure_keys()
    first = image_key(guest_layout(keys, tools=(), extra_files={"/w/script.sh": f}))
    assert first == image_key(guest_layout(keys, tools=(), extra_files={"/w/script.sh": f}))
    f.write_text("echo two\n")
    assert first != image_key(guest_layout(keys, tools=(), extra_files={"/w/script.sh": f}))


def test_build_image_is_cached_and_rebuilt_when_inputs_change(cache: Path, tmp_path: Path, quiet_ui: UI) -> None:
    f = tmp_path / "w.sh"
    f.write_text("echo one\n")
    first = build_image(extra_files={"/w.sh": f}, ui=quiet_ui, tools=())
    mtime = first.stat().st_mtime_ns
    assert build_image(extra_files={"/w.sh": f}, ui=quiet_ui, tools=()) == first
    assert first.stat().st_mtime_ns == mtime
    f.write_text("echo two\n")
    second = build_image(extra_files={"/w.sh": f}, ui=quiet_ui, tools=())
    assert second != first
    names = {name: data for name, _mode, data, _rdev in read_cpio(second.read_bytes())}
    assert names["w.sh"] == b"echo two\n"
    assert names["init"] == image.INIT_SCRIPT.read_bytes()


def test_build_image_includes_stress_ng_and_its_libraries_when_installed(cache: Path, quiet_ui: UI) -> None:
    stress = shutil.which("stress-ng")
    if stress is None:
        pytest.skip("stress-ng not installed")
    names = {name for name, *_ in read_cpio(build_image(ui=quiet_ui).read_bytes())}
    assert "bin/stress-ng" in names
    for lib in library_closure(Path(stress)):
        assert lib.as_posix().lstrip("/") in names


def test_guest_init_parses_with_busybox_sh() -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    proc = subprocess.run([busybox, "sh", "-n", str(image.INIT_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_guest_init_prints_the_lines_the_console_watcher_expects() -> None:
    from pagelab.guest.console import INIT_LINE, READY_LINE

    text = image.INIT_SCRIPT.read_text()
    init_echo = 'echo "pagelab: init started uptime=1.25"'
    ready_echo = 'echo "pagelab: ready uptime=1.25 kernel=6.12.0"'
    assert 'echo "pagelab: init started uptime=$up"' in text and INIT_LINE.match(init_echo[6:-1])
    assert 'echo "pagelab: ready uptime=$up kernel=$(uname -r)"' in text and READY_LINE.match(ready_echo[6:-1])
