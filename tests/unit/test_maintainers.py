"""MAINTAINERS: get_maintainer.pl's matching rules on a small tree (the real file is compared in
tests/e2e/test_source_e2e.py against the tree's own scripts/get_maintainer.pl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.errors import InputError
from pagelab.source.maintainers import Maintainers

MAINTAINERS = """\
List of maintainers
===================

Descriptions of section entries and preferred order
	M: *Mail* patches to: FullName <address@domain>

MEMORY MANAGEMENT
M:	Andrew Morton <akpm@linux-foundation.org>
L:	linux-mm@kvack.org
S:	Maintained
F:	include/linux/mm.h
F:	mm/
N:	include/linux/page[-_]*

TMPFS (SHMEM FILESYSTEM)
M:	Hugh Dickins <hughd@google.com>
S:	Maintained
F:	include/linux/shmem_fs.h
F:	mm/shmem.c

NET TOP
S:	Maintained
F:	net/*
X:	net/bad.c

NET ONE LEVEL
S:	Maintained
F:	net/core

QUESTION
S:	Maintained
F:	drivers/a?c.c

THE REST
M:	Linus Torvalds <torvalds@linux-foundation.org>
S:	Buried alive in reporters
F:	*
F:	*/
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "MAINTAINERS").write_text(MAINTAINERS)
    (tmp_path / "net" / "core").mkdir(parents=True)  # a directory pattern without "/" gets one
    return tmp_path


def titles(m: Maintainers, path: str) -> list[str]:
    return [s.title for s in m.sections_for(path)]


def test_the_most_specific_pattern_ranks_first(tree: Path) -> None:
    m = Maintainers(tree)
    # mm/shmem.c: depth 2 (TMPFS) beats mm/ (depth 1); THE REST's "*" is -1.
    assert titles(m, "mm/shmem.c") == ["TMPFS (SHMEM FILESYSTEM)", "MEMORY MANAGEMENT", "THE REST"]
    assert m.subsystem("mm/shmem.c") == "TMPFS (SHMEM FILESYSTEM)"
    assert titles(m, "mm/page_alloc.c") == ["MEMORY MANAGEMENT", "THE REST"]
    sec = m.sections_for("mm/shmem.c")[0]
    assert sec.maintainers == ("Hugh Dickins <hughd@google.com>",) and sec.status == "Maintained"


def test_a_trailing_slash_reaches_every_level_a_glob_only_its_own(tree: Path) -> None:
    m = Maintainers(tree)
    assert "MEMORY MANAGEMENT" in titles(m, "mm/kasan/common.c")  # mm/ covers subdirectories
    assert titles(m, "net/socket.c")[0] == "NET TOP"
    assert "NET TOP" not in titles(m, "net/ipv4/tcp.c")  # net/* stops at its own level
    # "net/core" names a directory of the tree: it becomes net/core/ and covers what is below.
    assert titles(m, "net/core/dev.c")[0] == "NET ONE LEVEL"


def test_x_excludes_and_n_matches_by_regex(tree: Path) -> None:
    m = Maintainers(tree)
    assert "NET TOP" not in titles(m, "net/bad.c")
    assert titles(m, "include/linux/page-flags.h") == ["MEMORY MANAGEMENT", "THE REST"]  # N: ranks 0
    assert titles(m, "include/linux/mm.h")[0] == "MEMORY MANAGEMENT"


def test_question_mark_is_one_character_and_dots_are_literal(tree: Path) -> None:
    m = Maintainers(tree)
    assert titles(m, "drivers/abc.c")[0] == "QUESTION"
    assert "QUESTION" not in titles(m, "drivers/abbc.c")
    assert "TMPFS (SHMEM FILESYSTEM)" not in titles(m, "mm/shmemXc")


def test_paths_outside_the_tree_have_no_subsystem(tree: Path) -> None:
    m = Maintainers(tree)
    assert m.subsystem("/root/.cache/pagelab/modules/leaky/x/src/leaky.c") is None
    assert m.subsystem("../leaky.c") is None


def test_a_tree_without_maintainers_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="MAINTAINERS"):
        Maintainers(tmp_path)
