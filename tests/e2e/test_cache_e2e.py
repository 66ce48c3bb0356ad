"""``pagelab cache`` against entries the real stages make, in a private ``XDG_CACHE_HOME``.

The keys, the guest image, ``po-read`` and a symbol cache are made by the stages themselves (seconds);
the symbol cache comes from the ``debuginfo`` build in the shared cache (tests/e2e/test_source_e2e.py
uses the same one), which this test only reads. A real ``pagelab boot`` of the shared default build
(``--kernel``, read only) holds its private image in use while a prune runs. Nothing here prunes the
shared cache: every prune checks first that the cache root is the private one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pagelab.cache import cache_root, is_in_use, release_in_use
from pagelab.cachectl import human_bytes
from pagelab.cli import main
from pagelab.collect.collector import build_reader
from pagelab.guest.image import build_image
from pagelab.guest.keys import ensure_keys
from pagelab.kernel.build import BuildOptions, BuildResult, build_kernel
from pagelab.source.elf import Elf
from pagelab.source.symbolize import Symbolizer
from pagelab.ui import UI

pytestmark = [pytest.mark.slow]

DAY = 86400


@pytest.fixture(scope="module")
def debuginfo_build() -> BuildResult:
    """The shared cache's 6.12 build with line tables (built once if the cache is cold)."""
    return build_kernel(BuildOptions(fragments=["debuginfo", "alloc-profiling"]), UI(plain=True))


def _frames(vmlinux: Path, n: int = 40) -> list[str]:
    """``name+0x4/0xSIZE`` frames of functions defined once in ``vmlinux``: what a dump of this build prints."""
    funcs = Elf(vmlinux).functions()
    picked = [defs[0] for name, defs in sorted(funcs.items()) if len(defs) == 1 and defs[0].size > 16]
    return [f"{s.name}+0x4/{s.size:#x}" for s in picked[:: max(len(picked) // n, 1)][:n]]


def _listing(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["cache", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["root"] == str(cache_root())
    return doc["entries"]


def _du(path: str) -> int:
    return int(subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True).stdout.split()[0])


def _prune(private: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cache_root() == private / "pagelab", "refusing to prune a cache that is not the test's own"
    assert main(["cache", "prune", *argv]) == 0
    return capsys.readouterr().out


def test_cache_lists_and_prunes_what_the_stages_made(
    debuginfo_build: BuildResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # after the build fixture: that one is the shared cache's
    ui = UI(plain=True)
    keys = ensure_keys()
    image = build_image(ui=ui, keys=keys)
    reader = build_reader(ui=ui)
    frames = _frames(debuginfo_build.vmlinux)
    first = Symbolizer(debuginfo_build.build_dir).resolve(frames)
    assert sum(v is not None for v in first.values()) > len(frames) // 2
    symbols = next((cache_root() / "symbols").glob("vmlinux-*.json"))

    entries = _listing(capsys)
    by_kind = {e["kind"]: e for e in entries}
    assert sorted(by_kind) == ["image", "keys", "symbols", "tool"] and len(entries) == 4
    assert by_kind["image"]["path"] == str(image.parent) and by_kind["tool"]["path"] == str(reader.parent)
    assert by_kind["keys"]["path"] == str(keys.directory) and by_kind["symbols"]["path"] == str(symbols)
    assert by_kind["tool"]["name"] == "po-read"
    assert str(Elf(debuginfo_build.vmlinux).build_id())[:12] in by_kind["symbols"]["name"]
    for e in entries:
        assert e["bytes"] == _du(e["path"]) > 0, e
        assert e["age_seconds"] < 600, e
    assert by_kind["image"]["bytes"] >= image.stat().st_size

    # Reuse moves "last used": an image made long ago and built again from the cache is used now.
    old = time.time() - 30 * DAY
    for p in (image.parent, image.parent / ".used", symbols):
        if p.exists():
            os.utime(p, (old, old))
    assert build_image(ui=ui, keys=keys) == image
    aged = {e["kind"]: e["age_seconds"] for e in _listing(capsys)}
    assert aged["image"] < 600 and aged["symbols"] > 29 * DAY

    # By age: only the symbol cache is old enough; it goes and the next lookup makes it again.
    out = _prune(tmp_path, capsys, "--older-than", "7d")
    assert f"removed symbols {by_kind['symbols']['name']}" in out
    assert not symbols.exists() and sorted(e["kind"] for e in _listing(capsys)) == ["image", "keys", "tool"]
    assert Symbolizer(debuginfo_build.build_dir).resolve(frames) == first
    assert symbols.is_file()

    # This process holds the image and po-read in use (build_image, build_reader): a prune skips them, this
    # process's own prune too, until the marks go (at exit; here by hand).
    assert {e["kind"] for e in _listing(capsys) if e["in_use"]} == {"image", "tool"}
    out = _prune(tmp_path, capsys, "--kind", "image")
    assert "1 skipped (in use)" in out and image.is_file()
    release_in_use(image.parent)
    assert not is_in_use(image.parent)

    # By kind: the image goes (its directory keeps only its lock), a new build_image makes it again.
    image_bytes = next(e["bytes"] for e in _listing(capsys) if e["kind"] == "image")
    out = _prune(tmp_path, capsys, "--kind", "image")
    assert f"freed {human_bytes(image_bytes)} (1 entries)" in out
    assert not image.exists() and sorted(p.name for p in image.parent.iterdir()) == [".lock"]
    assert "image" not in {e["kind"] for e in _listing(capsys)}
    assert build_image(ui=ui, keys=keys) == image and image.is_file()
    assert "image" in {e["kind"] for e in _listing(capsys)}

    # --all keeps the keys, whatever else goes; the keys the image embeds stay valid.
    release_in_use(image.parent)
    release_in_use(reader.parent)
    _prune(tmp_path, capsys, "--all")
    assert [e["kind"] for e in _listing(capsys)] == ["keys"]
    assert ensure_keys() == keys


@pytest.mark.vm
def test_a_running_boot_keeps_what_it_uses_until_it_exits(
    kernel_build: BuildResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pagelab boot`` in a private cache holds its guest image in use; ``prune --all`` meanwhile skips it.

    The kernel is the shared cache's default build, booted with ``--kernel`` (only read: no private cold
    build); the private cache gets the keys, the image and the KVM verdict.
    """
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    stderr = tmp_path / "boot.stderr"
    with stderr.open("w") as err_file:
        boot = subprocess.Popen(
            [sys.executable, "-m", "pagelab", "boot", "--kernel", str(kernel_build.bzimage), "--",
             "echo in-guest; sleep 15; echo done"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file, text=True, env=env,
        )  # fmt: skip
    try:
        assert boot.stdout is not None
        assert boot.stdout.readline() == "in-guest\n", stderr.read_text()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        entries = _listing(capsys)
        image = next(e for e in entries if e["kind"] == "image")
        assert {e["kind"] for e in entries if e["in_use"]} == {"image"}, entries
        assert cache_root() == tmp_path / "pagelab", "refusing to prune a cache that is not the test's own"
        assert main(["cache", "prune", "--all"]) == 0
        out, err = capsys.readouterr()
        assert f"skipped image {image['name']}: in use" in err and "1 skipped (in use)" in out, (out, err)
        assert (Path(image["path"]) / "initramfs.cpio").is_file()
        assert boot.poll() is None, "the guest command ended before the prune: no overlap was tested"
        rest, _ = boot.communicate(timeout=120)
    finally:
        if boot.poll() is None:
            boot.kill()
            boot.wait()
    assert boot.returncode == 0 and rest == "done\n", stderr.read_text()

    # The boot exited: the kernel dropped its lock and the image goes.
    assert not any(e["in_use"] for e in _listing(capsys))
    out = _prune(tmp_path, capsys, "--all")
    assert f"removed image {image['name']}" in out and "skipped" not in out
    assert [e["kind"] for e in _listing(capsys)] == ["keys"]
