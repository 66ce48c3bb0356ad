"""``pagelab cache``: listing, JSON, pruning by age and kind, dry runs, busy entries, bad input.

Each test lays out a private ``XDG_CACHE_HOME`` the way the stages do (tests/e2e/test_cache_e2e.py checks
the same against entries the real stages make).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pagelab import cachectl
from pagelab.cache import USED_STAMP, cache_root, content_key, file_lock, in_use_lock, is_in_use, release_in_use
from pagelab.cli import main
from pagelab.kernel.build import LAYOUT
from pagelab.kernel.fragments import DEFAULT_FRAGMENTS
from pagelab.kernel.source import tarball_digest, unpack_once
from pagelab.ui import UI

DAY = 86400
GROUP, CFG, OLD_CFG = "ff53077d0e371a0b", "7969ea344abc14c1", "0123456789abcdef"
SRC_ID = "c93391b6a4884e64"


def _file(path: Path, size: int = 4096, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else os.urandom(size))
    return path


def _age(days: float, *paths: Path) -> None:
    """Make ``paths`` look last touched ``days`` ago."""
    t = time.time() - days * DAY
    for p in paths:
        os.utime(p, (t, t))


def _build(root: Path, cfg: str, extras: list[str], days: float) -> Path:
    entry = root / "kernel" / "builds" / GROUP / cfg
    _file(entry / "obj" / "arch" / "x86" / "boot" / "bzImage", 300_000)
    _file(entry / "obj" / ".config", data=b"CONFIG_PAGE_OWNER=y\n")
    _file(entry / "modules" / "lib" / "modules" / "6.12.117" / "modules.dep", data=b"")
    fragments = [f"/k/kconfigs/{n}" for n in DEFAULT_FRAGMENTS] + [f"/k/kconfigs/extras/{n}.config" for n in extras]
    meta = {
        "layout": LAYOUT,
        "kernel_version": "6.12.117",
        "base": "tinyconfig",
        "fragments": [{"path": p, "sha256": "0" * 64} for p in fragments],
        "make_vars": [],
    }
    (entry / "metadata.json").write_text(json.dumps(meta))
    (entry.parent / f"{cfg}.lock").touch()
    (entry / USED_STAMP).touch()
    _age(days, entry, entry / USED_STAMP)
    return entry


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache holding one entry of every kind, some of them old (days in ``_age`` calls)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "250")
    root = cache_root()
    _build(root, CFG, ["debuginfo"], days=1)
    _build(root, OLD_CFG, [], days=40)
    group = root / "kernel" / "builds" / GROUP
    work = group / "work-0"
    _file(work / "include" / "config" / "kernel.release", data=b"6.12.117\n")
    _file(work / "vmlinux", 100_000)
    _file(work / "pagelab-used", data=b"")
    (group / "work-0.lock").touch()
    _age(30, work, work / "pagelab-used")
    src = root / "kernel" / "src" / SRC_ID
    _file(
        src / "linux-source-6.12" / "Makefile", data=b"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n"
    )
    _file(src / "linux-source-6.12" / "mm" / "page_owner.c", 50_000)
    (root / "kernel" / "src" / f"{SRC_ID}.lock").touch()
    _age(50, src)
    tarball = _file(root / "sources" / "linux-source-7.3.tar.xz", 20_000)
    _age(60, tarball)
    for kind, key, name in (("images", "888d0d52aefc0cb9", "initramfs.cpio"), ("tools", "a1b2c3d4e5f60718", "po-read")):
        d = root / kind / key
        _file(d / name, 8192)
        (d / ".lock").touch()
        _age(45, d)
    mod = root / "modules" / "leaky" / "5f5f5f5f5f5f5f5f"
    _file(mod / "src" / "leaky.ko", data=b"\x7fELF...vermagic=6.12.117 SMP mod_unload \0...")
    (mod / ".lock").touch()
    _age(2, mod)
    sym = _file(root / "symbols" / "vmlinux-00aa11bb22cc33dd44ee.v3.json", data=b'{"x": null}')
    _age(70, sym)
    host = _file(root / "hosts" / "accel-5c418c92c42c92d5.json", data=b'{"accel": "tcg", "reason": "no /dev/kvm"}')
    _age(90, host)
    keys = root / "keys"
    _file(keys / "client_ed25519", 400)
    (keys / ".lock").touch()
    _age(90, keys)
    return root


def _listing(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["cache", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _prune(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["cache", "prune", *argv]) == 0
    return capsys.readouterr().out


def _du(paths: list[str]) -> int:
    out = subprocess.run(["du", "-s", "-B1", "-c", *paths], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def test_the_listing_names_every_kind_with_its_size_and_a_total(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    for kind, name in [
        ("build", "6.12.117 tinyconfig +debuginfo"),
        ("worktree", "6.12.117 build tree work-0"),
        ("source", "6.12.117 linux-source-6.12"),
        ("tarball", "linux-source-7.3.tar.xz"),
        ("image", "guest initramfs 888d0d52aefc0cb9"),
        ("module", "leaky for 6.12.117"),
        ("tool", "po-read"),
        ("symbols", "vmlinux build id 00aa11bb22cc"),
        ("host", "accel tcg: no /dev/kvm"),
        ("keys", "SSH client key"),
    ]:
        assert any(line.split()[:1] == [kind] and name in line for line in out.splitlines()), (kind, name, out)
    assert "40 d ago" in out and "1 d ago" in out
    total = sum(e["bytes"] for e in _listing(capsys)["entries"])
    assert f"total {cachectl.human_bytes(total)} in 11 entries under {cache}" in out


def test_json_gives_each_entry_its_kind_name_path_du_size_and_last_used(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _listing(capsys)
    assert doc["root"] == str(cache)
    by_path = {e["path"]: e for e in doc["entries"]}
    assert set(e["kind"] for e in doc["entries"]) == set(cachectl.KINDS) - {"leftover"}
    for e in doc["entries"]:
        assert set(e) == {"kind", "name", "path", "bytes", "last_used", "age_seconds", "prunable", "in_use"}
        assert e["bytes"] == _du([e["path"]]) > 0, e
        assert e["in_use"] is False, e
    assert doc["total_bytes"] == sum(e["bytes"] for e in doc["entries"])
    old = by_path[str(cache / "kernel" / "builds" / GROUP / OLD_CFG)]
    assert old["kind"] == "build" and old["name"] == "6.12.117 tinyconfig"
    assert 40 * DAY - 60 < old["age_seconds"] < 40 * DAY + 60
    assert old["last_used"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - old["age_seconds"]))
    assert by_path[str(cache / "keys")]["prunable"] is False
    # --kind narrows the listing (after `list` too).
    assert {e["kind"] for e in _listing(capsys, "list", "--kind", "image,tool")["entries"]} == {"image", "tool"}
    assert main(["cache", "--json", "--kind", "keys", "list"]) == 0  # flags before `list` hold too
    assert [e["kind"] for e in json.loads(capsys.readouterr().out)["entries"]] == ["keys"]
    # --kind on both sides of `list` adds up, as for prune.
    assert {e["kind"] for e in _listing(capsys, "--kind", "keys", "list", "--kind", "tool")["entries"]} == {
        "keys",
        "tool",
    }


def test_an_unfinished_build_and_an_interrupted_prune_are_listed(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cache / "kernel" / "builds" / GROUP / CFG / "metadata.json").unlink()
    _file(cache / "images" / f"{cachectl.TRASH}888d.123" / "initramfs.cpio", 8192)
    kinds = {(e["kind"], e["name"]) for e in _listing(capsys)["entries"]}
    assert ("build", f"config {CFG} (no metadata.json: unfinished or interrupted build)") in kinds
    assert ("leftover", "interrupted prune of 888d.123") in kinds
    assert main(["cache", "prune", "--kind", "leftover"]) == 0
    assert "removed leftover interrupted prune of 888d.123" in capsys.readouterr().out
    assert not (cache / "images" / f"{cachectl.TRASH}888d.123").exists()


def test_a_source_counts_and_removes_the_dirs_of_interrupted_unpacks(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = cache / "kernel" / "src"
    _file(src / f"{SRC_ID}.tmp.999" / "linux-source-6.12" / "Makefile", 30_000)
    (source,) = [e for e in _listing(capsys)["entries"] if e["kind"] == "source"]
    assert source["bytes"] == _du([str(src / SRC_ID), str(src / f"{SRC_ID}.tmp.999")])
    assert main(["cache", "prune", "--kind", "source"]) == 0
    assert sorted(p.name for p in src.iterdir()) == [f"{SRC_ID}.inuse", f"{SRC_ID}.lock"]  # the locks stay


def test_prune_older_than_removes_old_entries_of_the_default_kinds_only(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {e["path"]: e for e in _listing(capsys)["entries"]}
    assert main(["cache", "prune", "--older-than", "35d"]) == 0
    out = capsys.readouterr().out
    after = {e["path"] for e in _listing(capsys)["entries"]}
    gone = {p for p in before if p not in after}
    old_default = {p for p, e in before.items() if e["kind"] in cachectl.DEFAULT_PRUNE and e["age_seconds"] > 35 * DAY}
    kinds_gone = {before[p]["kind"] for p in gone}
    assert gone == old_default and kinds_gone == {"build", "source", "image", "tool", "symbols"}
    assert str(cache / "kernel" / "builds" / GROUP / CFG) in after  # 1 day old
    assert str(cache / "kernel" / "builds" / GROUP / "work-0") in after  # 30 days old
    for kept in ("sources/linux-source-7.3.tar.xz", "hosts/accel-5c418c92c42c92d5.json", "keys"):
        assert str(cache / kept) in after  # older, but not a default kind
    assert f"freed {cachectl.human_bytes(sum(before[p]['bytes'] for p in gone))} (5 entries)" in out
    # Lock files stay (a process waiting on one must keep sharing it); keyed dirs keep theirs, and are no entry.
    assert (cache / "kernel" / "builds" / GROUP / f"{OLD_CFG}.lock").exists()
    assert sorted(p.name for p in (cache / "images" / "888d0d52aefc0cb9").iterdir()) == [".lock"]
    assert not list((cache / "images").glob(f"{cachectl.TRASH}*"))


def test_an_entry_reused_after_the_scan_survives_an_age_prune(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old_build = cache / "kernel" / "builds" / GROUP / OLD_CFG
    scan = cachectl.scan

    def scan_then_reuse(root: Path | None = None) -> list[cachectl.Entry]:
        entries = scan(root)
        (old_build / USED_STAMP).touch()  # a build cache hit (lock-free) between the scan and the removal
        return entries

    monkeypatch.setattr(cachectl, "scan", scan_then_reuse)
    out = _prune(capsys, "--older-than", "35d")
    assert (old_build / "metadata.json").is_file() and "removed build" not in out
    assert "removed image" in out  # the others went


def test_prune_by_kind_removes_every_entry_of_those_kinds(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--kind", "build", "--kind", "module"]) == 0
    capsys.readouterr()
    kinds = [e["kind"] for e in _listing(capsys)["entries"]]
    assert "build" not in kinds and "module" not in kinds
    assert {"worktree", "source", "image", "tool", "symbols", "tarball", "host", "keys"} <= set(kinds)
    assert not (cache / "modules" / "leaky" / "5f5f5f5f5f5f5f5f" / "src").exists()


def test_prune_all_keeps_only_the_keys(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--all"]) == 0
    capsys.readouterr()
    assert [e["kind"] for e in _listing(capsys)["entries"]] == ["keys"]
    assert (cache / "keys" / "client_ed25519").is_file()


def test_a_dry_run_removes_nothing_and_says_what_it_would_free(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _listing(capsys)
    assert main(["cache", "prune", "--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would free {cachectl.human_bytes(before['total_bytes'] - before['entries'][-1]['bytes'])}" in out
    assert "would remove build 6.12.117 tinyconfig" in out
    after = _listing(capsys)
    assert [(e["path"], e["bytes"]) for e in after["entries"]] == [(e["path"], e["bytes"]) for e in before["entries"]]


@pytest.fixture
def held(cache: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold the lock file ``request.param`` from another thread (its own open file: flock conflicts)."""
    path = Path(request.param)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with file_lock(cache_root() / path):
            taken.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(10)
    yield
    release.set()
    t.join()


@pytest.mark.parametrize("held", [f"kernel/builds/{GROUP}/{CFG}.lock"], indirect=True)
def test_a_build_another_pagelab_holds_is_skipped(cache: Path, held: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--kind", "build"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped build 6.12.117 tinyconfig +debuginfo: in use" in captured.err
    assert "1 skipped (in use)" in captured.out
    assert (cache / "kernel" / "builds" / GROUP / CFG / "metadata.json").is_file()
    assert not (cache / "kernel" / "builds" / GROUP / OLD_CFG).exists()  # the free one went


@pytest.mark.parametrize("held", [f"kernel/builds/{GROUP}/work-0.lock"], indirect=True)
def test_a_source_is_kept_while_any_kernel_build_runs(
    cache: Path, held: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "prune", "--kind", "source", "--kind", "worktree"]) == 0
    err = capsys.readouterr().err
    assert "skipped source 6.12.117 linux-source-6.12: in use" in err
    assert "skipped worktree 6.12.117 build tree work-0 (group ff53077d): in use" in err
    assert (cache / "kernel" / "src" / SRC_ID / "linux-source-6.12" / "Makefile").is_file()


def test_a_lock_held_by_another_process_keeps_the_image(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = cache / "images" / "888d0d52aefc0cb9" / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys;fd=os.open(sys.argv[1],os.O_RDWR);fcntl.flock(fd,fcntl.LOCK_EX);"
         "print('held',flush=True);sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert main(["cache", "prune", "--kind", "image"]) == 0
        assert "skipped image guest initramfs 888d0d52aefc0cb9" in capsys.readouterr().err
        assert (cache / "images" / "888d0d52aefc0cb9" / "initramfs.cpio").is_file()
    finally:
        holder.communicate("")
    assert main(["cache", "prune", "--kind", "image"]) == 0
    assert not (cache / "images" / "888d0d52aefc0cb9" / "initramfs.cpio").exists()


IN_USE = {
    "build": f"kernel/builds/{GROUP}/{CFG}",
    "source": f"kernel/src/{SRC_ID}",
    "image": "images/888d0d52aefc0cb9",
    "tool": "tools/a1b2c3d4e5f60718",
    "module": "modules/leaky/5f5f5f5f5f5f5f5f",
}


@pytest.fixture
def user(cache: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds IN_USE's entries in use through cache.mark_in_use (what the stages call)."""
    code = (
        "import sys\nfrom pagelab.cache import mark_in_use\n"
        "for p in sys.argv[1:]:\n    mark_in_use(p)\n    mark_in_use(p)  # idempotent\n"
        "print('held', flush=True)\nsys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *(str(cache / p) for p in IN_USE.values())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("argv", [["--all"], ["--kind", "build,source,image,tool,module"]], ids=["all", "kind"])
def test_entries_another_process_uses_are_skipped_until_it_exits(
    cache: Path, user: subprocess.Popen[str], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    in_use = {e["path"] for e in _listing(capsys)["entries"] if e["in_use"]}
    assert in_use == {str(cache / p) for p in IN_USE.values()}
    assert main(["cache"]) == 0
    table = capsys.readouterr().out
    assert any(ln.split()[-2:] == ["in", "use"] for ln in table.splitlines())  # the header's last column
    assert next(ln for ln in table.splitlines() if "po-read" in ln).split()[-1] == "yes"
    assert next(ln for ln in table.splitlines() if "SSH client key" in ln).split()[-1] == "ago"

    assert main(["cache", "prune", *argv]) == 0
    out, err = capsys.readouterr()
    assert f"; {len(IN_USE)} skipped (in use)" in out, out
    for kind, path in IN_USE.items():
        assert f"warning: skipped {kind} " in err, (kind, err)
        assert cache / path in [Path(e["path"]) for e in _listing(capsys)["entries"]], kind
    assert (cache / IN_USE["build"] / "obj" / "arch" / "x86" / "boot" / "bzImage").is_file()
    assert (cache / IN_USE["image"] / "initramfs.cpio").is_file()
    assert (cache / "kernel" / "builds" / GROUP / OLD_CFG).exists() is False  # the unused build went
    # The marks are lock files beside the entries, never inside (prune renames the directories).
    assert all(in_use_lock(cache / p).is_file() for p in IN_USE.values())

    assert user.stdin is not None
    user.stdin.close()
    assert user.wait(10) == 0  # the kernel drops its locks with it
    out = _prune(capsys, *argv)
    assert "skipped" not in out and "freed" in out
    left = {e["kind"] for e in _listing(capsys)["entries"]}
    assert not left & set(IN_USE), left


def _source_tarball(tmp_path: Path) -> Path:
    """A real (tiny) kernel source tarball: a top directory with a Makefile that names a version."""
    tree = tmp_path / "linux-x"
    _file(tree / "Makefile", data=b"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 2\n")
    tarball = tmp_path / "linux-x.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname="linux-x")
    return tarball


def test_the_stages_mark_what_they_hand_out_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """unpack_once and build_image (the fast stages) hold their entry in use; prune in this process skips it too."""
    from pagelab.guest.image import build_image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    tarball = _source_tarball(tmp_path)
    identity = tarball_digest(tarball)[:16]
    final = cache_root() / "kernel" / "src" / identity
    image = None
    try:
        unpack_once(tarball, identity, UI(quiet=True))
        image = build_image(ui=UI(quiet=True), tools=())
        assert is_in_use(final) and is_in_use(image.parent)
        assert {e.kind for e in cachectl.scan() if e.in_use} == {"source", "image"}
        assert main(["cache", "prune", "--kind", "source,image"]) == 0
        assert final.is_dir() and image.is_file()
    finally:
        release_in_use(final)
        if image is not None:
            release_in_use(image.parent)
    assert not is_in_use(final)
    assert main(["cache", "prune", "--kind", "source,image"]) == 0
    assert not final.exists() and image is not None and not image.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "--kind", "frobs"], "--kind 'frobs': unknown kind"),
        (["--kind", "frobs"], "--kind 'frobs': unknown kind"),
        (["prune", "--older-than", "3 weeks"], "--older-than '3 weeks': expected a duration"),
        (["prune", "--kind", "keys"], "--kind keys: the SSH keys are never pruned"),
        (["prune", "--kind", "host"], "--kind host: the KVM probe verdicts are removed only by --all"),
        (["prune", "--all", "--kind", "build"], "--all and --kind exclude each other"),
        (["prune"], "say what to remove"),
        (["prune", "--older-than"], "expected one argument"),
        (["shrink"], "invalid choice: 'shrink'"),
        (["--json", "prune", "--all"], "cache prune: --json is the listing's"),
        (["--kind", "keys", "prune"], "--kind keys: the SSH keys are never pruned"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cache: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = _listing(capsys)
    assert main(["cache", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and message in captured.err
    assert [e["path"] for e in _listing(capsys)["entries"]] == [e["path"] for e in before["entries"]]


def test_reusing_a_source_touches_its_stamp_and_the_tarball_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages' half of "last used": a reuse moves it forward (kernel/source.py)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    tarball = _source_tarball(tmp_path)
    identity = tarball_digest(tarball)[:16]
    unpack_once(tarball, identity, UI(quiet=True))
    final = cache_root() / "kernel" / "src" / identity
    st = tarball.stat()
    memo = (
        cache_root() / "kernel" / "src" / "digests" / content_key([str(tarball), str(st.st_size), str(st.st_mtime_ns)])
    )
    _age(20, final, final / USED_STAMP, memo)
    tarball_digest(tarball)
    unpack_once(tarball, identity, UI(quiet=True))
    assert time.time() - (final / USED_STAMP).stat().st_mtime < 60
    assert time.time() - memo.stat().st_mtime < 60
    entry = next(e for e in cachectl.scan() if e.kind == "source")
    assert entry.name == "6.1.2 linux-x" and time.time() - entry.last_used < 60


# -- flag order ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "tarball", "prune", "--older-than", "1d"],
        ["prune", "--kind", "tarball", "--older-than", "1d"],
    ],
    ids=["before", "after"],
)
def test_kind_before_or_after_prune_selects_the_same(
    cache: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["cache", *argv]) == 0
    out = capsys.readouterr().out
    assert "removed tarball linux-source-7.3.tar.xz" in out
    assert "build" not in out and (cache / "kernel" / "builds" / GROUP / OLD_CFG).is_dir()
    assert not (cache / "sources" / "linux-source-7.3.tar.xz").exists()


def test_kinds_before_and_after_prune_add_up(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "--kind", "image", "prune", "--kind", "tool"]) == 0
    out = capsys.readouterr().out
    assert "removed image" in out and "removed tool" in out and "(2 entries)" in out
    assert (cache / "kernel" / "builds" / GROUP / OLD_CFG).is_dir()


# -- lock files this user cannot write, or cannot open ---------------------------------------------
def _refuse_open(monkeypatch: pytest.MonkeyPatch, refused: Path, *, writes_only: bool) -> None:
    """Make os.open fail with EACCES on ``refused`` (for writing only, or at all): root passes chmod's checks."""
    real = os.open

    def fake(path: object, flags: int, *args: object, **kwargs: object) -> int:
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if os.fspath(path) == str(refused) and (writing or not writes_only):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake)


def test_a_lock_file_this_user_may_only_read_still_locks(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse_open(monkeypatch, cache / "kernel" / "builds" / GROUP / f"{OLD_CFG}.lock", writes_only=True)
    out = _prune(capsys, "--kind", "build", "--older-than", "10d")
    assert "removed build 6.12.117 tinyconfig (" in out
    assert not (cache / "kernel" / "builds" / GROUP / OLD_CFG).exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["prune", "dry-run"])
def test_a_lock_file_that_cannot_be_opened_skips_its_entry_with_a_warning(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dry_run: list[str]
) -> None:
    lock = cache / "kernel" / "builds" / GROUP / f"{OLD_CFG}.lock"
    _refuse_open(monkeypatch, lock, writes_only=False)  # say, root's 0600 lock of a `sudo pagelab build`
    assert main(["cache", "prune", "--kind", "build,image", *dry_run]) == 0
    out, err = capsys.readouterr()
    warning = f"warning: skipped build 6.12.117 tinyconfig: cannot open or create its lock {lock}: Permission denied"
    assert (warning if not dry_run else warning.replace("open or create", "open")) in err
    assert err.count("\n") == 1
    assert "1 not removed" in out and "image" in out
    assert (cache / "kernel" / "builds" / GROUP / OLD_CFG / "metadata.json").is_file()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_dry_run_creates_no_file(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cache / "kernel" / "builds" / GROUP / f"{CFG}.lock").unlink()
    (cache / "images" / "888d0d52aefc0cb9" / ".lock").unlink()
    before = _files(cache)
    assert main(["cache", "prune", "--all", "--dry-run"]) == 0
    assert "would remove build 6.12.117 tinyconfig +debuginfo" in capsys.readouterr().out
    assert _files(cache) == before


# -- the trash name, and deletions that fail -------------------------------------------------------
def test_a_leftover_with_the_old_trash_name_does_not_block_a_prune(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = cache / "kernel" / "builds" / GROUP
    _file(group / f"{cachectl.TRASH}{OLD_CFG}.{os.getpid()}" / "obj" / "vmlinux", 100)  # PIDs repeat
    out = _prune(capsys, "--kind", "build")
    assert "removed build 6.12.117 tinyconfig (" in out and not (group / OLD_CFG).exists()
    assert [e["name"] for e in _listing(capsys, "--kind", "leftover")["entries"]] == [
        f"interrupted prune of {OLD_CFG}.{os.getpid()}"
    ]
    assert "removed leftover" in _prune(capsys, "--kind", "leftover")
    assert not any(p.name.startswith(cachectl.TRASH) for p in group.iterdir())


def test_a_deletion_that_fails_is_a_warning_not_freed_space(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(cachectl.shutil, "rmtree", lambda path, ignore_errors=False: None)  # root-owned files
        assert main(["cache", "prune", "--kind", "build,image", "--older-than", "10d"]) == 0
    out, err = capsys.readouterr()
    assert "removed build" not in out and "removed image" not in out
    assert "freed 0 B (0 entries); 2 not removed" in out
    assert "warning: not removed build 6.12.117 tinyconfig: could not delete all of " in err
    assert "warning: not removed image guest initramfs 888d0d52aefc0cb9: could not delete all of " in err
    names = [e["name"] for e in _listing(capsys, "--kind", "leftover")["entries"]]
    assert sorted(n.split(".")[0] for n in names) == [
        f"interrupted prune of {OLD_CFG}",
        "interrupted prune of 888d0d52aefc0cb9",
    ]
    _prune(capsys, "--kind", "leftover")
    assert _listing(capsys, "--kind", "leftover")["entries"] == []


# -- _locked holds all or nothing ------------------------------------------------------------------
@pytest.mark.parametrize("held", [f"kernel/builds/{GROUP}/{CFG}.inuse"], indirect=True)
def test_a_busy_lock_releases_the_ones_taken_before_it(cache: Path, held: None) -> None:
    first = cache / "kernel" / "builds" / GROUP / f"{CFG}.lock"
    with cachectl._locked([first, in_use_lock(cache / "kernel" / "builds" / GROUP / CFG)]) as busy:
        assert busy
        with cachectl.try_file_lock(first) as free:
            assert free, "a build waits behind the prune's warning"


# -- junk in the cache -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "metadata",
    [b"[]", b"null", b'"x"', b'{"make_vars": null}', b'{"fragments": null, "make_vars": [1, "LLVM=1"]}', b"\xff"],
)
def test_junk_metadata_is_listed_and_pruned(cache: Path, capsys: pytest.CaptureFixture[str], metadata: bytes) -> None:
    (cache / "kernel" / "builds" / GROUP / OLD_CFG / "metadata.json").write_bytes(metadata)
    (cache / "kernel" / "builds" / GROUP / "work-0" / "include" / "config" / "kernel.release").write_bytes(b"\xff\xfe")
    entry = cache / "kernel" / "builds" / GROUP / OLD_CFG
    assert main(["cache"]) == 0
    capsys.readouterr()
    assert str(entry) in [e["path"] for e in _listing(capsys, "--kind", "build")["entries"]]
    assert "removed build " in _prune(capsys, "--kind", "build", "--older-than", "10d")
    assert not entry.exists()


@pytest.mark.parametrize("memo", [b"../../../../evil", b"\xff" * 64, b"[]"], ids=["path", "binary", "json"])
def test_a_junk_tarball_memo_names_no_lock(
    cache: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, memo: bytes
) -> None:
    tarball = cache / "sources" / "linux-source-7.3.tar.xz"
    st = tarball.stat()
    digests = cache / "kernel" / "src" / "digests"
    _file(digests / content_key([str(tarball), str(st.st_size), str(st.st_mtime_ns)]), data=memo)
    _age(60, *digests.iterdir())
    entry = next(e for e in cachectl.scan() if e.kind == "tarball")
    assert entry.locks == []
    assert "removed tarball" in _prune(capsys, "--kind", "tarball")
    assert not list(tmp_path.glob("*.lock"))


# -- symlinks inside an entry ----------------------------------------------------------------------
def test_a_symlink_out_of_the_cache_is_neither_counted_nor_followed(
    cache: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outside = _file(tmp_path / "elsewhere" / "linux" / "big", 2_000_000)
    entry = cache / "kernel" / "builds" / GROUP / OLD_CFG
    (entry / "obj" / "source").symlink_to(outside.parent)
    (entry / "big").symlink_to(outside)
    _age(40, entry)
    listed = next(e for e in _listing(capsys)["entries"] if e["path"] == str(entry))
    assert listed["bytes"] == _du([str(entry)]) < 1_000_000
    _prune(capsys, "--kind", "build", "--older-than", "10d")
    assert not entry.exists() and outside.is_file() and outside.stat().st_size == 2_000_000


# -- the stages' and consumers' in-use marks -------------------------------------------------------
PLAN_STATE = "state-1"


def _cached_build(root: Path, cfg: str = CFG) -> tuple[Path, SimpleNamespace]:
    """A build entry as build.py leaves it, its resolved/ pointer, and the plan that finds it."""
    entry = _build(root, cfg, [], days=0)
    meta = json.loads((entry / "metadata.json").read_text())
    meta.update(config_sha256=cfg * 4, source={"state": PLAN_STATE})
    (entry / "metadata.json").write_text(json.dumps(meta))
    plan = SimpleNamespace(input_key="1" * 32, group=GROUP, src=SimpleNamespace(state=PLAN_STATE))
    pointer = {"entry": cfg, "config_sha256": cfg * 4}
    _file(root / "kernel" / "resolved" / f"{plan.input_key}.json", data=json.dumps(pointer).encode())
    return entry, plan


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty private cache; every in-use mark this process takes is dropped afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yield cache_root()
    release_in_use()


def test_a_build_lookup_racing_a_prune_is_a_miss(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.kernel import build

    entry, plan = _cached_build(private)
    assert build._lookup(plan, time.monotonic()) is not None  # type: ignore[arg-type]
    real = build._result_from

    def then_pruned(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        entry.rename(entry.with_name(f"{cachectl.TRASH}{entry.name}.x"))
        return result

    monkeypatch.setattr(build, "_result_from", then_pruned)
    assert build._lookup(plan, time.monotonic()) is None  # type: ignore[arg-type]


class _Built(Exception):
    """build_kernel went on to build."""


def _no_build(monkeypatch: pytest.MonkeyPatch, plan: SimpleNamespace) -> None:
    from pagelab.kernel import build

    monkeypatch.setattr(build, "_plan", lambda opts, ui: plan)

    def resolve(*args: object) -> str:
        raise _Built

    monkeypatch.setattr(build, "_resolve_config", resolve)


def test_a_build_cache_hit_is_marked_in_use(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.kernel.build import BuildOptions, build_kernel

    entry, plan = _cached_build(private)
    _no_build(monkeypatch, plan)
    assert not is_in_use(entry)
    hit = build_kernel(BuildOptions(), UI(quiet=True))
    assert hit.cached and hit.metadata.parent == entry and is_in_use(entry)


def test_a_build_cache_hit_is_looked_up_again_once_marked(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What changes between the lookup and the mark (here: the source state) counts, not just the entry."""
    from pagelab.kernel import build

    _, plan = _cached_build(private)
    _no_build(monkeypatch, plan)
    real = build.mark_in_use

    def mark(path: Path) -> None:
        real(path)
        plan.src.state = "state-2"  # the source changed meanwhile: the old result is no hit any more

    monkeypatch.setattr(build, "mark_in_use", mark)
    with pytest.raises(_Built):
        build.build_kernel(build.BuildOptions(), UI(quiet=True))


def test_a_fresh_build_is_marked_in_use(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.kernel import build

    config = "CONFIG_PAGE_OWNER=y\n"
    cfg = hashlib.sha256(config.encode()).hexdigest()[:16]
    plan = SimpleNamespace(input_key="2" * 32, group=GROUP, src=SimpleNamespace(state=PLAN_STATE))
    monkeypatch.setattr(build, "_plan", lambda opts, ui: plan)
    monkeypatch.setattr(build, "_resolve_config", lambda plan, group_dir, ui: config)
    monkeypatch.setattr(build, "_choose_work_tree", lambda group_dir, entry, config: (group_dir / "work-0", None))

    def make(plan: object, work: Path, entry: Path, *args: object) -> object:
        made, _ = _cached_build(private, cfg)
        assert made == entry
        return build._result_from(entry, cached=False, seconds=1.0)

    monkeypatch.setattr(build, "_build_entry", make)
    result = build.build_kernel(build.BuildOptions(), UI(quiet=True))
    entry = private / "kernel" / "builds" / GROUP / cfg
    assert result.metadata.parent == entry and not result.cached and is_in_use(entry)


def test_a_test_module_is_marked_in_use_built_or_cached(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.kernel import modules

    name = modules.available()[0]
    runs = []

    def make(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        work = Path(next(a for a in cmd if a.startswith("M="))[2:])
        _file(work / f"{name}.ko", data=b"vermagic=6.12.117 SMP")
        runs.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(modules.subprocess, "run", make)
    ko = modules.build_module(name, private / "obj", "k", UI(quiet=True))
    directory = ko.parent.parent
    assert len(runs) == 1 and is_in_use(directory)
    release_in_use(directory)
    assert not is_in_use(directory)
    assert modules.build_module(name, private / "obj", "k", UI(quiet=True)) == ko
    assert len(runs) == 1 and is_in_use(directory)


def test_mark_build_in_use_marks_only_build_entries(private: Path, tmp_path: Path) -> None:
    from pagelab.cache import mark_build_in_use

    entry, _ = _cached_build(private)
    bzimage = entry / "obj" / "arch" / "x86" / "boot" / "bzImage"
    link = tmp_path / "my-build"
    link.symlink_to(entry / "obj")
    work = _file(private / "kernel" / "builds" / GROUP / "work-0" / "vmlinux", 10)
    for path in (entry, entry / "obj", bzimage, link, str(bzimage)):
        assert mark_build_in_use(path) == entry
        assert is_in_use(entry)
        release_in_use(entry)
    for path in (work, work.parent, private / "kernel" / "builds" / GROUP, tmp_path, tmp_path / "missing"):
        assert mark_build_in_use(path) is None
    assert not list((private / "kernel" / "builds").glob("*/*.inuse"))[1:]  # only the entry's own


def test_report_and_diff_with_a_cached_build_dir_mark_it_in_use(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.source import report

    entry, _ = _cached_build(private)
    monkeypatch.setattr(report, "open_lens", lambda build, modules: None)
    assert report.lens_for(str(entry / "obj"), UI(quiet=True)) is None
    assert is_in_use(entry)


class _Booted(Exception):
    """boot/run went past the kernel."""


def test_boot_with_a_cached_bzimage_marks_its_build_in_use(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagelab.guest import boot
    from pagelab.settings import Settings

    entry, _ = _cached_build(private)
    monkeypatch.setattr(boot, "bzimage_version", lambda path: "6.12.117")

    def stop(*args: object, **kwargs: object) -> None:
        raise _Booted

    monkeypatch.setattr(boot, "build_image", stop)
    monkeypatch.setattr(boot, "Guest", stop)
    bzimage = entry / "obj" / "arch" / "x86" / "boot" / "bzImage"
    with pytest.raises(_Booted):
        boot.boot(Settings(kernel=str(bzimage)), "true", UI(quiet=True), sys.stdout.buffer, sys.stderr.buffer)
    assert is_in_use(entry)


def test_run_with_a_cached_bzimage_marks_its_build_in_use(
    private: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pagelab.run import pipeline
    from pagelab.settings import Settings

    entry, _ = _cached_build(private)

    def stop(*args: object, **kwargs: object) -> None:
        raise _Booted

    monkeypatch.setattr(pipeline, "RunState", stop)
    bzimage = entry / "obj" / "arch" / "x86" / "boot" / "bzImage"
    with pytest.raises(_Booted):
        pipeline.run(Settings(kernel=str(bzimage)), UI(quiet=True), out=str(tmp_path / "out"))
    assert is_in_use(entry)
