"""Kernel sources: a tree, a tarball unpacked once into the cache, or Debian's linux-source default.

Sources are never written to: builds happen out of tree (``make O=…``). A source has two
fingerprints: ``identity`` names the location (build trees are shared under it, so a changed
config rebuilds incrementally) and ``state`` changes whenever the sources change (it is part of
the result key, so an edited tree is never answered from the cache).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pagelab import resources
from pagelab.cache import cache_dir, content_key, file_lock, file_sha256, mark_in_use, mark_used
from pagelab.errors import InputError
from pagelab.procs import step_failed
from pagelab.ui import UI

#: The default source: Debian's ``linux-source-6.12`` package (scripts/setup-host.sh installs it).
DEFAULT_TARBALL_GLOB = "/usr/src/linux-source-6.12.tar.*"
DEFAULT_PACKAGE = "linux-source-6.12"

_TARBALL_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz")
#: ``--kernel-src 7.3``: Debian's linux-source-7.3 tarball, from /usr/src (apt-get install) or the sources
#: directory scripts/get-kernel-source.sh fills for suites the machine's apt does not have.
_SHORT_NAME = re.compile(r"\d+\.\d+")
_TARBALL_MAGIC = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gzip"}


@dataclass(frozen=True)
class KernelSource:
    """A resolved kernel source tree, ready for ``make -C tree O=…``."""

    tree: Path  # top of the kernel tree (Makefile, Kconfig, scripts/)
    origin: str  # what was asked for: the tarball or tree path
    kind: str  # "tarball", "git" or "tree"
    identity: str  # stable key of the location; build trees are shared under it
    state: str  # content fingerprint; changes when the sources change
    version: str  # VERSION.PATCHLEVEL.SUBLEVEL[EXTRAVERSION] from the top Makefile

    def describe(self) -> str:
        """One line for messages and metadata: ``6.12.117 (tarball /usr/src/…)``."""
        return f"{self.version} ({self.kind} {self.origin})"


def resolve_source(spec: str | None, ui: UI) -> KernelSource:
    """Resolve ``--kernel-src`` (None = the Debian default) to a tree, unpacking a tarball once.

    Raises InputError (exit 2) when the path is missing, is not a kernel tree or tarball, or the
    tree was built in place; BuildError (exit 4) when unpacking fails.
    """
    if spec is None:
        return _from_tarball(_default_tarball(), ui)
    # Flags and profile values were read already (pagelab/settings.py): a version that names an existing path
    # was made absolute there, so a bare version here is Debian's, whatever the working directory holds.
    if is_version_name(spec):
        return _from_tarball(debian_tarball(spec), ui, shown=spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(spec, "no such file or directory (expected a kernel tree or a .tar.xz/.tar.gz tarball)")
    if path.is_dir():
        return _from_tree(path.resolve(), spec)
    return _from_tarball(path.resolve(), ui, shown=spec)


def is_version_name(value: str) -> bool:
    """Whether ``--kernel-src value`` is spelled as a Debian linux-source version (``7.3``) rather than a path."""
    return _SHORT_NAME.fullmatch(value) is not None


def sources_dirs() -> list[Path]:
    """Where ``--kernel-src X.Y`` looks for ``linux-source-X.Y.tar.*``, in order."""
    dirs = [Path(os.environ["PAGELAB_SOURCES"])] if os.environ.get("PAGELAB_SOURCES") else []
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [*dirs, Path(base) / "pagelab" / "sources", Path("/usr/src")]


def debian_tarball(version: str) -> Path:
    """Debian's ``linux-source-VERSION`` tarball (``7.3``). Raises InputError naming how to get it."""
    for d in sources_dirs():
        found = sorted(p for p in glob.glob(str(d / f"linux-source-{version}.tar.*")) if p.endswith(_TARBALL_SUFFIXES))
        if found:
            return Path(found[-1])
    where = ", ".join(str(d) for d in sources_dirs())
    script = shlex.quote(str(resources.kernel_source_script()))  # the installed copy: a wheel has no scripts/
    raise InputError(
        version,
        f"--kernel-src {version}: no linux-source-{version}.tar.* in {where}; fetch it with "
        f"`bash {script} {version} SUITE` (7.3: trixie-backports) or "
        f"`apt-get install linux-source-{version}`, or pass a kernel tree or tarball path",
    )


def _default_tarball() -> Path:
    found = sorted(p for p in glob.glob(DEFAULT_TARBALL_GLOB) if p.endswith(_TARBALL_SUFFIXES))
    if not found:
        raise InputError(
            "--kernel-src",
            f"no kernel source given and {DEFAULT_TARBALL_GLOB} not found; install it with "
            f"`apt-get install {DEFAULT_PACKAGE}` (scripts/setup-host.sh does) or pass --kernel-src PATH "
            "(a kernel tree or a .tar.xz/.tar.gz tarball)",
        )
    return Path(found[-1])


# -- trees ---------------------------------------------------------------------------------------
def kernel_version(tree: Path) -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL`` plus EXTRAVERSION from the tree's top Makefile (best effort)."""
    fields: dict[str, str] = {}
    try:
        with open(tree / "Makefile", encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(12), f, strict=False):
                m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", line)
                if m:
                    fields[m.group(1)] = m.group(2)
    except OSError:
        return "unknown"
    if "VERSION" not in fields:
        return "unknown"
    return f"{fields['VERSION']}.{fields.get('PATCHLEVEL', '0')}.{fields.get('SUBLEVEL', '0')}" + fields.get(
        "EXTRAVERSION", ""
    )


def check_tree(tree: Path, shown: str) -> None:
    """Raise InputError unless ``tree`` is a clean kernel tree usable for an out-of-tree build."""
    if not ((tree / "Makefile").is_file() and (tree / "Kconfig").is_file()):
        raise InputError(shown, "not a kernel tree (no top-level Makefile and Kconfig)")
    if not (tree / "scripts" / "kconfig" / "merge_config.sh").is_file():
        raise InputError(shown, "kernel tree has no scripts/kconfig/merge_config.sh")
    # Kbuild refuses O= builds from a tree that was configured in place; say so before make does.
    if (tree / ".config").exists() or (tree / "include" / "config").is_dir():
        raise InputError(
            shown, "the tree was configured or built in place; out-of-tree builds need `make mrproper` there first"
        )


def _from_tree(tree: Path, shown: str) -> KernelSource:
    check_tree(tree, shown)
    identity = content_key(["tree", str(tree)])
    if (tree / ".git").exists():
        return KernelSource(tree, str(tree), "git", identity, _git_state(tree), kernel_version(tree))
    return KernelSource(tree, str(tree), "tree", identity, _walk_state(tree), kernel_version(tree))


def _git_state(tree: Path) -> str:
    """HEAD plus the uncommitted diff: an edit changes the state, a checkout of the same commit does not."""
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, check=True, text=True
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "-C", str(tree), "diff", "HEAD", "--no-ext-diff", "--binary"], capture_output=True, check=True
        ).stdout
        untracked = subprocess.run(
            ["git", "-C", str(tree), "ls-files", "--others", "--exclude-standard", "-z"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return _walk_state(tree)
    return content_key(["git", head, diff, untracked, _mtimes(tree, untracked.split(b"\0"))])


def _mtimes(tree: Path, names: list[bytes]) -> str:
    out = []
    for name in names:
        if name:
            with contextlib.suppress(OSError):
                out.append(f"{name.decode(errors='replace')}:{os.stat(tree / os.fsdecode(name)).st_mtime_ns}")
    return "\n".join(out)


def _walk_state(tree: Path) -> str:
    """A digest of every path, size and mtime in the tree (one stat per file): edits, renames, copies."""
    h = hashlib.sha256()
    stack = [str(tree)]
    while stack:
        top = stack.pop()
        with contextlib.suppress(OSError), os.scandir(top) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.name == ".git":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    h.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return content_key(["walk", h.hexdigest()])


# -- tarballs ------------------------------------------------------------------------------------
def tarball_digest(path: Path) -> str:
    """sha256 of a tarball, remembered by (path, size, mtime) so a warm lookup does not re-read 150 MB."""
    st = path.stat()
    memo = cache_dir("kernel", "src", "digests") / content_key([str(path), str(st.st_size), str(st.st_mtime_ns)])
    with contextlib.suppress(OSError):
        digest = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            # The memo's mtime is the tarball's "last used" (pagelab cache): touching the tarball would change the key.
            # Best effort: a memo that cannot be touched still holds the digest.
            with contextlib.suppress(OSError):
                os.utime(memo)
            return digest
    digest = file_sha256(path)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
    tmp.write_text(digest + "\n")
    os.replace(tmp, memo)
    return digest


def _from_tarball(path: Path, ui: UI, shown: str | None = None) -> KernelSource:
    shown = shown or str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise InputError(shown, f"cannot read ({err.strerror})") from None
    if not any(head.startswith(m) for m in _TARBALL_MAGIC):
        raise InputError(shown, "not a kernel tree or a .tar.xz/.tar.gz tarball")
    digest = tarball_digest(path)
    identity = digest[:16]
    tree = unpack_once(path, identity, ui)
    check_tree(tree, f"{shown} (unpacked in {tree})")
    return KernelSource(tree, str(path), "tarball", identity, identity, kernel_version(tree))


def unpack_once(path: Path, identity: str, ui: UI) -> Path:
    """Unpack ``path`` into the cache under ``identity`` (once; concurrent callers wait) and return the tree.

    The tarball is unpacked into a temporary directory that is renamed into place only when ``tar``
    succeeded, so an interrupted unpack never looks complete. Raises BuildError when tar fails.
    """
    root = cache_dir("kernel", "src")
    final = root / identity
    # In use (builds read the tree; a run reads MAINTAINERS through the build's `source` link) before the
    # lock-free check below: a prune that removed it meanwhile is waited for and the tree unpacked again.
    mark_in_use(final)
    if not final.is_dir():
        with file_lock(root / f"{identity}.lock"):
            if not final.is_dir():
                # Leftovers of an unpack that died: we hold the lock, so nobody else is writing them.
                for stale in root.glob(f"{identity}.tmp.*"):
                    shutil.rmtree(stale, ignore_errors=True)
                tmp = root / f"{identity}.tmp.{os.getpid()}"
                tmp.mkdir()
                ui.step(f"unpacking {path} into the cache (once)")
                try:
                    proc = subprocess.run(
                        ["tar", "-xf", str(path), "-C", str(tmp)], capture_output=True, text=True, check=False
                    )
                    if proc.returncode != 0:
                        raise step_failed(f"unpacking {path}", proc.returncode, output=proc.stderr)
                    os.rename(tmp, final)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
    mark_used(final)
    return _tree_in(final)


def _tree_in(unpacked: Path) -> Path:
    """The kernel tree inside an unpacked tarball: its single top-level directory, or the directory itself."""
    if (unpacked / "Makefile").is_file():
        return unpacked
    subdirs = [p for p in unpacked.iterdir() if p.is_dir()]
    for sub in sorted(subdirs):
        if (sub / "Makefile").is_file() and (sub / "Kconfig").is_file():
            return sub
    return subdirs[0] if len(subdirs) == 1 else unpacked
