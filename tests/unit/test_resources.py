"""The shipped data resolves through pagelab.resources (importlib.resources), the same way installed or not."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pagelab import resources
from pagelab.errors import InputError
from pagelab.kernel.source import debian_tarball

ROOT = Path(__file__).resolve().parents[2]


def test_each_data_dir_is_the_top_level_directory_of_the_same_name() -> None:
    for name in ("kconfigs", "guest", "profiles"):
        shipped = resources.data_dir(name)
        assert shipped.is_dir() and shipped.resolve() == (ROOT / name).resolve()
        link = ROOT / "pagelab" / "data" / name
        assert link.is_symlink() and link.readlink() == Path("..", "..", name)  # relative: the wheel copies targets


def test_the_kconfigs_dir_holds_the_default_fragments_and_the_extras() -> None:
    d = resources.kconfigs_dir()
    assert (d / "qemu-x86_64.config").is_file() and (d / "page_owner.config").is_file()
    assert {"memcg", "thp", "kasan"} <= {p.stem for p in (d / "extras").glob("*.config")}


def test_the_guest_dir_holds_init_the_workloads_the_reader_and_the_test_module() -> None:
    d = resources.guest_dir()
    assert (d / "init").is_file() and (d / "init").stat().st_mode & 0o111  # the guest's PID 1 stays executable
    assert (d / "tools" / "po-read.c").is_file() and (d / "modules" / "leaky" / "leaky.c").is_file()
    assert {"tmpfs-grow", "tmpfs-churn", "fork-storm"} <= {p.stem for p in (d / "workloads").glob("*.sh")}


def test_the_profiles_dir_holds_the_default_profile() -> None:
    assert (resources.profiles_dir() / "default.toml").is_file()


def test_the_wheel_takes_everything_under_pagelab_data() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert "data/**/*" in project["tool"]["setuptools"]["package-data"]["pagelab"]


def test_the_kernel_source_script_ships_and_a_missing_version_names_its_installed_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = ROOT / "pagelab" / "data" / "get-kernel-source.sh"
    assert link.is_symlink() and link.readlink() == Path("..", "..", "scripts", "get-kernel-source.sh")
    script = resources.kernel_source_script()
    assert script.is_file() and script.stat().st_mode & 0o111
    monkeypatch.setenv("PAGELAB_SOURCES", str(tmp_path))
    with pytest.raises(InputError) as err:
        debian_tarball("9.9")
    assert f"`bash {script} 9.9 SUITE`" in str(err.value)
