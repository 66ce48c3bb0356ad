"""The wheel carries its data: built from this checkout, installed into a fresh venv outside it, used elsewhere.

Everything pagelab reads at run time (kconfigs/, guest/, profiles/) must come from the installed package: the
commands run from a directory that is not the checkout, with a venv that has no editable install. The
dependencies come from PyPI (pip's ordinary index).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagelab.kernel.build import BuildResult

pytestmark = [pytest.mark.slow, pytest.mark.vm]

ROOT = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The checkout's files as they are now (tracked and new, not ignored), without .git, build/ or .venv."""
    if not (ROOT / ".git").exists():  # an exported tree: take everything but the usual build debris
        junk = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "runs")
        shutil.copytree(ROOT, dest, symlinks=True, ignore=junk)
        return dest
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if not os.path.lexists(src):
            continue  # deleted in the working tree, not yet in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # pagelab/data/* point at the top-level data dirs
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel (and its dependencies) installed; returns its ``pagelab`` script."""
    work = tmp_path_factory.mktemp("wheel")
    # A copy, so setuptools' build/ and egg-info never land in (or go stale in) the shared checkout.
    src = _source_copy(work / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", src],
        check=True,
        timeout=600,
    )
    (wheel,) = (work / "dist").glob("pagelab-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], check=True, timeout=900)
    shutil.rmtree(src)  # nothing can be read from the copy any more
    return venv / "bin" / "pagelab"


def _run(pagelab: Path, cwd: Path, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "200"  # rich tables: one row per line
    return subprocess.run(
        [str(pagelab), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def test_the_installed_package_is_not_the_checkout(installed: Path, elsewhere: Path) -> None:
    python = installed.parent / "python"
    out = subprocess.run(
        [python, "-c", "import pagelab.resources as r; print(r.kconfigs_dir().resolve())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert "site-packages" in out and not Path(out).is_relative_to(ROOT)


def test_workloads_lists_the_shipped_catalogue(installed: Path, elsewhere: Path) -> None:
    res = _run(installed, elsewhere, "workloads")
    assert res.returncode == 0, res.stderr
    for script in (ROOT / "guest" / "workloads").glob("*.sh"):
        assert script.stem in res.stdout


def test_fragments_lists_the_shipped_extras(installed: Path, elsewhere: Path) -> None:
    res = _run(installed, elsewhere, "fragments")
    assert res.returncode == 0, res.stderr
    for frag in (ROOT / "kconfigs" / "extras").glob("*.config"):
        assert frag.stem in res.stdout


def test_profiles_lists_the_shipped_profiles(installed: Path, elsewhere: Path) -> None:
    res = _run(installed, elsewhere, "profiles")
    assert res.returncode == 0, res.stderr
    for profile in (ROOT / "profiles").glob("*.toml"):
        assert profile.stem in res.stdout


def test_a_missing_kernel_version_names_the_fetch_script_the_wheel_ships(installed: Path, elsewhere: Path) -> None:
    res = _run(installed, elsewhere, "build", "--kernel-src", "9.9")
    assert res.returncode == 2, res.stderr
    m = re.search(r"`bash (\S+) 9\.9 SUITE`", res.stderr)
    assert m, res.stderr
    script = Path(m.group(1))
    assert "site-packages" in str(script) and not script.is_relative_to(ROOT) and script.is_file()
    assert subprocess.run(["bash", "-n", script], check=False).returncode == 0


def test_build_from_the_wheel_is_the_checkouts_default_kernel(
    installed: Path, elsewhere: Path, kernel_build: BuildResult
) -> None:
    res = _run(installed, elsewhere, "build", "--json", timeout=3600)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    # Same fragments (read from site-packages) → the same final .config as the checkout's default build.
    assert result["config_sha256"] == kernel_build.config_sha256
    assert result["kernel_version"] == kernel_build.kernel_version
    assert Path(result["bzimage"]).is_file()


def test_boot_from_the_wheel_runs_a_command(installed: Path, elsewhere: Path, kernel_build: BuildResult) -> None:
    res = _run(installed, elsewhere, "boot", "--", "uname", "-r", timeout=900)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == kernel_build.kernel_version
