"""The kernel's page_owner_sort (6.12 and 7.3), built from Debian's linux-source tarballs, for the sort tests.

Two binaries, cached under the pagelab cache keyed by the tarball and the compiler:
``page_owner_sort`` exactly as in the tree, and ``page_owner_sort_sortfix`` with 6.12's ``--sort`` bug
fixed (its compare_flag switch replaced the --sort keys by the default), which is what pagelab sort
implements on purpose. Extracting the one file from the 150 MB tarball takes ~20 s, once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pagelab.cache import cache_dir, content_key, file_lock
from pagelab.procs import tool_version

TARBALL = Path(os.environ.get("PAGELAB_LINUX_612_TARBALL", "/usr/src/linux-source-6.12.tar.xz"))
VERSIONS = ("6.12", "7.3")  # pagelab sort --compat values
MEMBER = "*/tools/mm/page_owner_sort.c"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-pthread"]  # tools/mm/Makefile's flags, optimised
# 6.12 always overwrites the --sort keys with the single comparator of its compare_flag switch;
# the fix keeps them when no short sort option was given.
SORT_FIX = (
    "\tcase COMP_NO_FLAG:\n\tcase COMP_NUM:\n",
    "\tcase COMP_NO_FLAG:\n\t\tif (sc.size)\n\t\t\tbreak;\n\t\t/* fall through */\n\tcase COMP_NUM:\n",
)


def _compiler_version() -> str:
    version = tool_version(["gcc", "--version"])
    if version is None:
        raise FileNotFoundError("gcc does not run (scripts/setup-host.sh installs build-essential)")
    return version


def _tarball(version: str) -> Path:
    if version == "6.12":
        return TARBALL
    # 7.3: where scripts/get-kernel-source.sh puts it (pagelab/kernel/source.py finds it the same way).
    from pagelab.errors import InputError
    from pagelab.kernel.source import debian_tarball

    try:
        return debian_tarball(version)
    except InputError as err:
        raise FileNotFoundError(str(err)) from None


def compat_of(tool: Path) -> str:
    """The kernel version a binary from build_c_tools was built from (for pagelab sort --compat)."""
    return (tool.parent / "VERSION").read_text().strip()


def build_c_tools(version: str = "6.12") -> tuple[Path, Path]:
    """(stock, sortfix) page_owner_sort binaries of ``version``. Raises FileNotFoundError without the tarball."""
    tarball = _tarball(version)
    if not tarball.exists():
        raise FileNotFoundError(f"{tarball} not found (scripts/setup-host.sh installs linux-source-6.12)")
    st = tarball.stat()
    key = content_key([str(tarball), str(st.st_size), str(st.st_mtime_ns), _compiler_version(), *CFLAGS])
    out = cache_dir("sort-ctool", key)
    stock, fixed = out / "page_owner_sort", out / "page_owner_sort_sortfix"
    with file_lock(out / ".lock"):
        if stock.exists() and fixed.exists():
            (out / "VERSION").write_text(version + "\n")
            return stock, fixed
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["tar", "-xJf", str(tarball), "-C", tmp, "--wildcards", "--occurrence=1", MEMBER],
                check=True,
                capture_output=True,
            )
            (src,) = Path(tmp).glob(MEMBER)
            text = src.read_text()
            if SORT_FIX[0] not in text:
                raise RuntimeError(f"{src}: the compare_flag switch changed; update SORT_FIX")
            fixed_src = Path(tmp) / "page_owner_sort_sortfix.c"
            fixed_src.write_text(text.replace(SORT_FIX[0], SORT_FIX[1]))
            shutil.copyfile(src, out / "page_owner_sort.c")
            for c_file, binary in ((src, stock), (fixed_src, fixed)):
                tmp_bin = binary.with_suffix(".tmp")
                subprocess.run(["gcc", *CFLAGS, "-o", str(tmp_bin), str(c_file)], check=True, capture_output=True)
                os.replace(tmp_bin, binary)
        (out / "VERSION").write_text(version + "\n")
    return stock, fixed


def run_c(tool: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run a page_owner_sort binary (its progress goes to stdout)."""
    return subprocess.run([str(tool), *args], cwd=cwd, capture_output=True, timeout=300)
