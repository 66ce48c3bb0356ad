"""The guest initramfs: a cpio (newc) writer, binaries with their shared-library closure, a cache.

Built without root: device nodes, owners and modes are written straight into the cpio headers.
The image holds busybox (static) as the userland, dropbear and the libraries ``ldd`` resolves for
it on this host, optional extra tools (stress-ng when installed), the kernel's modules, pagelab's
keys, ``guest/init`` and whatever files a caller adds. It is cached by the hash of all of that.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pagelab.cache import content_key, file_lock, file_sha256, mark_in_use, mark_used, private_dir
from pagelab.errors import BuildError, UsageError
from pagelab.guest.keys import HOST_KEY_NAME, Keys, ensure_keys
from pagelab.procs import step_failed
from pagelab.resources import guest_dir
from pagelab.ui import UI, default_ui

# Bump when the layout below changes, so cached images are rebuilt.
IMAGE_FORMAT = "3"
GUEST_DIR = guest_dir()
INIT_SCRIPT = GUEST_DIR / "init"
# Extra host tools copied in (with their libraries) when installed; workloads may use them.
DEFAULT_TOOLS: tuple[str, ...] = ("stress-ng",)
# Not compressed: the kernel's unpacker copies a plain cpio much faster than it gunzips under TCG.
IMAGE_NAME = "initramfs.cpio"


# -- cpio newc ----------------------------------------------------------------------------------------
class CpioWriter:
    """Write a cpio archive in the kernel's "newc" format (initramfs-buffer-format.rst).

    Entries carry explicit modes, owners and device numbers, so no root is needed. mtime is 0 and
    inode numbers count up, so equal inputs give byte-identical archives.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 300000  # well away from 0/1, which some tools treat specially
        self._closed = False

    def _header(self, name: str, mode: int, size: int, *, nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        name_bytes = name.encode() + b"\0"
        self._ino += 1
        fields = (self._ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name_bytes), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + name_bytes)
        self._pad(len(header) + len(name_bytes))

    def _pad(self, length: int) -> None:
        self._out.write(b"\0" * (-length % 4))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._header(name, stat.S_IFDIR | mode, 0, nlink=2)

    def add_symlink(self, name: str, target: str) -> None:
        data = target.encode()
        self._header(name, stat.S_IFLNK | 0o777, len(data))
        self._out.write(data)
        self._pad(len(data))

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._header(name, stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(name, stat.S_IFREG | mode, len(data))
        self._out.write(data)
        self._pad(len(data))

    def add_host_file(self, name: str, source: Path, mode: int | None = None) -> None:
        """Copy a host file in, streamed (never read whole); ``mode`` defaults to the host file's."""
        st = os.stat(source)
        perm = stat.S_IMODE(st.st_mode) if mode is None else mode
        self._header(name, stat.S_IFREG | perm, st.st_size)
        with open(source, "rb") as f:
            copied = 0
            while chunk := f.read(1 << 20):
                self._out.write(chunk)
                copied += len(chunk)
        if copied != st.st_size:
            raise BuildError(f"{source}: changed size while being copied into the image")
        self._pad(st.st_size)

    def close(self) -> None:
        """Write the trailer; the archive is complete after this."""
        if not self._closed:
            self._header("TRAILER!!!", 0, 0, nlink=1)
            self._closed = True


def read_cpio(data: bytes) -> Iterator[tuple[str, int, bytes, tuple[int, int]]]:
    """Parse a newc archive: yields ``(name, mode, data, (rdevmajor, rdevminor))`` (for tests and checks).

    Raises ValueError on a malformed archive.
    """
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return
        yield name, mode, body, (rmaj, rmin)


# -- shared-library closure ---------------------------------------------------------------------------
_LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)")


def parse_ldd(output: str) -> list[str]:
    """Library paths from ``ldd`` output: resolved ``=>`` targets and the interpreter (absolute lines).

    Raises BuildError for a library ldd could not find ("not found").
    """
    paths: list[str] = []
    for line in output.splitlines():
        if "=> not found" in line:
            raise BuildError(f"shared library missing on this host: {line.strip()}")
        m = _LDD_ARROW.match(line) or _LDD_PLAIN.match(line)
        if m:
            path = m.group(m.lastindex or 1)
            if path.startswith("/"):
                paths.append(path)
    return paths


def library_closure(binary: Path) -> list[Path]:
    """The shared libraries (and ELF interpreter) a host binary loads, as ``ldd`` resolves them.

    Paths are the ones the dynamic loader asks for (symlink names), so the guest layout matches.
    A static binary has none. Raises BuildError if ldd fails or a library is missing.
    """
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "not a dynamic executable" in text or "statically linked" in text:
            return []
        raise step_failed(f"ldd {binary}", proc.returncode, output=text)
    return [Path(p) for p in parse_ldd(proc.stdout)]


# -- the guest layout ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing in the image: a host file, literal bytes, a symlink, a directory or a device node."""

    kind: str  # file | bytes | symlink | dir | char
    mode: int = 0o755
    source: Path | None = None  # kind == file
    data: bytes = b""  # kind == bytes; symlink target for symlinks
    rdev: tuple[int, int] = (0, 0)

    def key_parts(self) -> Iterator[str | bytes]:
        yield f"{self.kind}:{self.mode:o}:{self.rdev}"
        if self.source is not None:
            yield file_sha256(self.source)
        yield self.data


def _which(name: str) -> Path | None:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return Path(found) if found else None


def _etc_files(keys: Keys) -> dict[str, Entry]:
    def text(s: str, mode: int = 0o644) -> Entry:
        return Entry("bytes", mode, data=s.encode())

    return {
        "etc/passwd": text("root:x:0:0:root:/root:/bin/sh\n"),
        "etc/group": text("root:x:0:\n"),
        "etc/shadow": text("root:*:19000:0:99999:7:::\n", 0o600),
        "etc/shells": text("/bin/sh\n/bin/ash\n"),
        "etc/hosts": text("127.0.0.1 localhost\n10.0.2.15 guest\n"),
        "etc/hostname": text("pagelab\n"),
        "etc/profile": text('export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1="pagelab:\\w# "\n'),
        "root/.ssh/authorized_keys": text(keys.client_public + "\n", 0o600),
        f"etc/dropbear/{HOST_KEY_NAME}": Entry("file", 0o600, source=keys.host_key),
    }


def _busybox_applets(busybox: Path) -> list[str]:
    proc = subprocess.run([str(busybox), "--list"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise step_failed(f"{busybox} --list", proc.returncode, output=proc.stderr, hint="is it busybox-static?")
    return sorted({a for a in proc.stdout.split() if a and "/" not in a and a != "busybox"})


def _add_binary(entries: dict[str, Entry], guest_path: str, host: Path) -> None:
    entries[guest_path] = Entry("file", 0o755, source=host.resolve())
    for lib in library_closure(host):
        # The loader asks for e.g. /lib/x86_64-linux-gnu/libz.so.1: place the real file at that name.
        entries.setdefault(lib.as_posix().lstrip("/"), Entry("file", 0o755, source=lib.resolve()))


def guest_layout(
    keys: Keys,
    *,
    modules_dir: Path | None = None,
    extra_files: Mapping[str, Path] | None = None,
    tools: Iterable[str] = DEFAULT_TOOLS,
    init: Path = INIT_SCRIPT,
) -> dict[str, Entry]:
    """Every entry of the image by guest path (no leading slash); pure apart from ldd and busybox --list.

    Raises BuildError if busybox, dropbear or init is missing, UsageError for a bad extra file.
    """
    entries: dict[str, Entry] = {}
    for d in ("bin", "dev", "etc", "etc/dropbear", "lib", "lib64", "mnt", "proc", "sys", "run", "usr", "var"):
        entries[d] = Entry("dir", 0o755)
    entries["root"] = Entry("dir", 0o700)
    entries["root/.ssh"] = Entry("dir", 0o700)
    entries["tmp"] = Entry("dir", 0o1777)
    # One bin directory: every PATH a shell or dropbear might use leads to it.
    for link in ("sbin", "usr/bin", "usr/sbin"):
        entries[link] = Entry("symlink", data=b"/bin")
    entries["usr/lib"] = Entry("symlink", data=b"/lib")
    entries["var/run"] = Entry("symlink", data=b"/run")
    entries["var/log"] = Entry("dir", 0o755)
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    entries["dev/console"] = Entry("char", 0o600, rdev=(5, 1))

    busybox = _which("busybox")
    if busybox is None:
        raise BuildError("busybox not found: install busybox-static (scripts/setup-host.sh)")
    if library_closure(busybox):
        raise BuildError(f"{busybox} is dynamically linked: install busybox-static")
    entries["bin/busybox"] = Entry("file", 0o755, source=busybox.resolve())
    for applet in _busybox_applets(busybox):
        entries.setdefault(f"bin/{applet}", Entry("symlink", data=b"busybox"))

    dropbear = _which("dropbear")
    if dropbear is None:
        raise BuildError("dropbear not found: install dropbear-bin (scripts/setup-host.sh)")
    _add_binary(entries, "bin/dropbear", dropbear)
    for tool in tools:
        host = _which(tool)
        if host is not None:
            _add_binary(entries, f"bin/{tool}", host)

    entries.update(_etc_files(keys))
    if not init.is_file():
        raise BuildError(f"{init}: guest init script missing")
    entries["init"] = Entry("file", 0o755, source=init)
    entries["etc/inittab"] = Entry("file", 0o644, source=GUEST_DIR / "inittab")

    if modules_dir is not None:
        _add_tree(entries, Path(modules_dir) / "lib" / "modules", "lib/modules")

    for guest_path, host_path in (extra_files or {}).items():
        name = PurePosixPath("/", guest_path).as_posix().lstrip("/")
        host = Path(host_path)
        if not name or ".." in PurePosixPath(name).parts:
            raise UsageError(f"extra file {guest_path!r}: expected an absolute guest path")
        if not host.is_file():
            raise UsageError(f"extra file {guest_path!r}: {host} is not a file")
        entries[name] = Entry("file", stat.S_IMODE(host.stat().st_mode), source=host.resolve())
    # The kernel's unpacker does not create missing parents: every directory needs its own entry.
    for name in list(entries):
        for parent in PurePosixPath(name).parents[:-1]:
            entries.setdefault(parent.as_posix(), Entry("dir", 0o755))
    return entries


def _add_tree(entries: dict[str, Entry], root: Path, guest_root: str) -> None:
    if not root.is_dir():
        raise BuildError(f"{root}: modules staging directory has no lib/modules")
    entries.setdefault(guest_root, Entry("dir", 0o755))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        base = guest_root if rel == Path(".") else f"{guest_root}/{rel.as_posix()}"
        entries.setdefault(base, Entry("dir", 0o755))
        for name in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
            path = Path(dirpath) / name
            if path.is_symlink():
                # modules_install leaves build/source links to the build tree: useless in the guest.
                if not path.resolve().exists() or path.is_dir():
                    continue
                entries[f"{base}/{name}"] = Entry("file", 0o644, source=path.resolve())
            else:
                entries[f"{base}/{name}"] = Entry("file", 0o644, source=path)


def write_image(entries: Mapping[str, Entry], out: BinaryIO) -> None:
    """Write the entries as a newc cpio (parents before children)."""
    writer = CpioWriter(out)
    for name in sorted(entries, key=lambda n: (n.count("/"), n)):
        e = entries[name]
        if e.kind == "dir":
            writer.add_dir(name, e.mode)
        elif e.kind == "symlink":
            writer.add_symlink(name, e.data.decode())
        elif e.kind == "char":
            writer.add_char_device(name, *e.rdev, mode=e.mode)
        elif e.kind == "bytes":
            writer.add_bytes(name, e.data, e.mode)
        else:
            assert e.source is not None
            writer.add_host_file(name, e.source, e.mode)
    writer.close()


def image_key(entries: Mapping[str, Entry]) -> str:
    """The cache key: the format version and every entry's name, kind, mode and content hash."""

    def parts() -> Iterator[str | bytes]:
        yield f"pagelab-image-{IMAGE_FORMAT}"
        for name in sorted(entries):
            yield name
            yield from entries[name].key_parts()

    return content_key(parts())


def _complete(image: Path) -> bool:
    """Whether a cached archive still ends with its trailer (a truncated one is rebuilt, not booted)."""
    try:
        with open(image, "rb") as f:
            f.seek(max(0, image.stat().st_size - 512))
            return b"TRAILER!!!\0" in f.read()
    except OSError:
        return False


def build_image(
    modules_dir: Path | None = None,
    extra_files: Mapping[str, Path] | None = None,
    ui: UI | None = None,
    *,
    tools: Iterable[str] = DEFAULT_TOOLS,
    keys: Keys | None = None,
) -> Path:
    """The initramfs for these inputs (cached by their hash; built if any input changed).

    ``modules_dir`` is a staging dir holding ``lib/modules/<version>``; ``extra_files`` maps guest
    paths to host files. Raises BuildError if a host binary or library is missing, UsageError for
    a bad extra file.
    """
    ui = ui or default_ui()
    keys = keys or ensure_keys()
    entries = guest_layout(keys, modules_dir=modules_dir, extra_files=extra_files, tools=tools)
    key = image_key(entries)
    directory = private_dir("images", key)
    image = directory / IMAGE_NAME
    with file_lock(directory / ".lock"):
        if image.exists() and _complete(image):
            mark_used(directory)
            mark_in_use(directory)
            return image
        ui.step(f"building guest image ({len(entries)} entries)")
        tmp = directory / f".{IMAGE_NAME}.{os.getpid()}.tmp"
        try:
            # 0600: the image embeds the guest's private host key.
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                write_image(entries, f)
            os.replace(tmp, image)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        mark_in_use(directory)
    return image
