"""Session fixtures for end-to-end tests: the default kernel build and the guest image (both cached).

``kernel_build`` is the cached default build (BuildOptions()), built once if the cache is cold;
``guest_image`` the matching initramfs (with the build's modules). Tests that need extra guest
files build their own image with ``build_image(modules_dir=kernel_build.modules_dir, extra_files=…)``.
Both are in tests/conftest.py's HEAVY_FIXTURES: a test using either is marked ``slow`` (as well as ``vm``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.guest.image import build_image
from pagelab.kernel.build import BuildOptions, BuildResult, build_kernel
from pagelab.ui import UI


@pytest.fixture(scope="session")
def kernel_build() -> BuildResult:
    return build_kernel(BuildOptions(), UI(plain=True))


@pytest.fixture(scope="session")
def guest_image(kernel_build: BuildResult) -> Path:
    return build_image(modules_dir=kernel_build.modules_dir, ui=UI(plain=True))
