"""source: trees, tarballs unpacked once, the Debian default, and source fingerprints."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pagelab.errors import BuildError, InputError
from pagelab.kernel import source
from pagelab.ui import UI


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def quiet() -> UI:
    return UI(plain=True, quiet=True)


def make_tree(root: Path, extraversion: str = "") -> Path:
    """The few files a kernel tree needs to be recognised (a real tree's layout, not its content)."""
    (root / "scripts" / "kconfig").mkdir(parents=True)
    (root / "Makefile").write_text(
        f"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 7\nEXTRAVERSION = {extraversion}\nNAME = Baby Opossum Posse\n"
    )
    (root / "Kconfig").write_text('mainmenu "Linux"\n')
    (root / "scripts" / "kconfig" / "merge_config.sh").write_text("#!/bin/sh\n")
    return root


def make_tarball(tmp_path: Path, name: str = "linux-source-6.12", suffix: str = ".tar.xz") -> Path:
    tree = make_tree(tmp_path / "staging" / name)
    out = tmp_path / f"{name}{suffix}"
    mode = "w:xz" if suffix == ".tar.xz" else "w:gz"
    with tarfile.open(out, mode) as tar:
        tar.add(tree, arcname=name)
    return out


def test_version_comes_from_the_top_makefile(tmp_path: Path) -> None:
    assert source.kernel_version(make_tree(tmp_path / "t", "-rc3")) == "6.12.7-rc3"


@pytest.mark.parametrize("suffix", [".tar.xz", ".tar.gz"])
def test_tarball_is_unpacked_once_into_the_cache(tmp_path: Path, private_cache: Path, suffix: str) -> None:
    tarball = make_tarball(tmp_path, suffix=suffix)
    first = source.resolve_source(str(tarball), quiet())
    assert first.kind == "tarball" and first.version == "6.12.7"
    assert first.tree.name == "linux-source-6.12" and private_cache in first.tree.parents
    marker = first.tree / "marker"
    marker.write_text("still here")
    second = source.resolve_source(str(tarball), quiet())
    assert second.tree == first.tree and marker.read_text() == "still here"  # not unpacked again
    assert second.identity == first.identity == second.state


def test_leftovers_of_an_interrupted_unpack_are_not_a_tree(tmp_path: Path, private_cache: Path) -> None:
    tarball = make_tarball(tmp_path)
    digest = source.tarball_digest(tarball)[:16]
    stale = private_cache / "pagelab" / "kernel" / "src" / f"{digest}.tmp.99999"
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("")
    src = source.resolve_source(str(tarball), quiet())
    assert src.tree.parent.name == digest
    assert not stale.exists()


def test_a_corrupt_tarball_is_a_build_error_and_leaves_nothing(tmp_path: Path, private_cache: Path) -> None:
    bad = tmp_path / "broken.tar.xz"
    bad.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 64)
    with pytest.raises(BuildError, match=r"unpacking .* failed"):
        source.resolve_source(str(bad), quiet())
    assert not any(p.is_dir() for p in (private_cache / "pagelab" / "kernel" / "src").iterdir() if p.name != "digests")


def test_missing_source_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        source.resolve_source(str(tmp_path / "nope"), quiet())


def test_a_file_that_is_not_a_tarball_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(InputError, match=r"not a kernel tree or a \.tar\.xz/\.tar\.gz tarball"):
        source.resolve_source(str(f), quiet())


def test_a_directory_that_is_not_a_kernel_tree_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a kernel tree"):
        source.resolve_source(str(tmp_path), quiet())


def test_a_tree_built_in_place_is_refused_before_make_does(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    (tree / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(InputError, match="make mrproper"):
        source.resolve_source(str(tree), quiet())


def test_missing_default_says_how_to_get_a_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(source, "DEFAULT_TARBALL_GLOB", str(tmp_path / "linux-source-6.12.tar.*"))
    with pytest.raises(InputError) as err:
        source.resolve_source(None, quiet())
    assert "apt-get install linux-source-6.12" in str(err.value) and "--kernel-src" in str(err.value)


def test_plain_tree_state_changes_when_a_file_changes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    before = source.resolve_source(str(tree), quiet())
    assert before.kind == "tree" and before.tree == tree.resolve()
    (tree / "new.c").write_text("int x;\n")
    after = source.resolve_source(str(tree), quiet())
    assert after.identity == before.identity  # same place: build trees are shared
    assert after.state != before.state  # different content: results are not


def test_plain_tree_state_changes_when_a_file_is_renamed_or_replaced_with_an_old_mtime(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    (tree / "a.c").write_text("int a;\n")
    states = [source.resolve_source(str(tree), quiet()).state]
    (tree / "a.c").rename(tree / "b.c")  # same count, same mtimes
    states.append(source.resolve_source(str(tree), quiet()).state)
    (tree / "b.c").write_text("int b; /* longer */\n")
    os.utime(tree / "b.c", ns=(1, 1))  # like cp -p / rsync -a / tar x: an older mtime
    states.append(source.resolve_source(str(tree), quiet()).state)
    assert len(set(states)) == 3


def git(tree: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True)


def test_git_tree_state_follows_head_and_uncommitted_edits(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    git(tree, "init", "-q")
    git(tree, "add", ".")
    git(tree, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    clean = source.resolve_source(str(tree), quiet())
    assert clean.kind == "git"
    assert source.resolve_source(str(tree), quiet()).state == clean.state
    (tree / "Kconfig").write_text('mainmenu "Linux edited"\n')
    edited = source.resolve_source(str(tree), quiet())
    assert edited.state != clean.state
    (tree / "Kconfig").write_text('mainmenu "Linux edited again"\n')
    assert source.resolve_source(str(tree), quiet()).state != edited.state


def test_a_short_version_finds_debian_tarballs_in_the_sources_dirs(tmp_path: Path, monkeypatch) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    monkeypatch.setenv("PAGELAB_SOURCES", str(sources))
    with pytest.raises(
        InputError, match=r"9\.7: --kernel-src 9\.7: no linux-source-9\.7\.tar\.\* in .*get-kernel-source"
    ):
        source.resolve_source("9.7", quiet())
    tree = make_tree(tmp_path / "t" / "linux-source-9.7")
    with tarfile.open(sources / "linux-source-9.7.tar.xz", "w:xz") as tar:
        tar.add(tree, arcname="linux-source-9.7")
    src = source.resolve_source("9.7", quiet())
    assert src.kind == "tarball" and src.origin == str(sources / "linux-source-9.7.tar.xz")
    # The XDG cache's sources/ is where scripts/get-kernel-source.sh puts them by default.
    assert source.sources_dirs()[1] == Path(os.environ["XDG_CACHE_HOME"]) / "pagelab" / "sources"
