"""The source lens without a kernel: frame parsing, the alloc-profiling version gate, --build errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.cli import main
from pagelab.errors import UsageError
from pagelab.kernel import kconfig
from pagelab.resources import kconfigs_dir
from pagelab.source.symbolize import parse

ALLOC_PROFILING = kconfigs_dir() / "extras" / "alloc-profiling.config"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_frames_parse_with_module_and_build_id() -> None:
    f = parse("shmem_get_folio_gfp.constprop.0+0x17d/0x418")
    assert f is not None and (f.symbol, f.offset, f.size, f.module) == (
        "shmem_get_folio_gfp.constprop.0",
        0x17D,
        0x418,
        None,
    )
    f = parse("leaky_alloc_page+0x26/0x2d [leaky]")
    assert f is not None and f.module == "leaky" and f.key == "leaky_alloc_page+0x26/0x2d"
    f = parse("hoard+0x1c/0x54 [hoard 5a3c0f00d1]")  # CONFIG_STACKTRACE_BUILD_ID
    assert f is not None and f.module == "hoard"
    assert parse("0xffffffff81234567") is None  # no KALLSYMS: nothing to resolve


def test_alloc_profiling_needs_6_10() -> None:
    kconfig.check_versions([ALLOC_PROFILING], "6.12.117")
    kconfig.check_versions([ALLOC_PROFILING], "6.10")
    with pytest.raises(
        UsageError, match=r"alloc-profiling.config:\d+: needs Linux >= 6.10, the kernel source is 6.1.1"
    ):
        kconfig.check_versions([ALLOC_PROFILING], "6.1.1")


def test_alloc_profiling_on_a_6_1_tree_is_exit_2_before_anything_is_configured(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # The smallest tree resolve_source accepts: configuring it would fail (exit 4), so exit 2 proves the
    # version is checked first.
    tree = tmp_path / "linux-6.1"
    (tree / "scripts" / "kconfig").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 1\nEXTRAVERSION =\n")
    (tree / "Kconfig").write_text("")
    (tree / "scripts" / "kconfig" / "merge_config.sh").write_text("#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["build", "--kernel-src", str(tree), "--fragment", str(ALLOC_PROFILING)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "needs Linux >= 6.10" in err and "6.1.1" in err and "Traceback" not in err


def test_build_must_be_a_build_directory(tmp_path: Path, capsys) -> None:
    dump = str(FIXTURES / "report_po612.txt.xz")
    assert main(["report", dump, "--build", str(tmp_path / "nope")]) == 2
    assert "--build: not a directory" in capsys.readouterr().err
    assert main(["report", dump, "--build", str(tmp_path)]) == 2
    assert "no vmlinux" in capsys.readouterr().err
    assert main(["report", dump, "--by", "file"]) == 2
    assert "--by file: needs --build DIR" in capsys.readouterr().err
