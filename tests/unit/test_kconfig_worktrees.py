"""Choosing a build tree for a config from Kbuild's per-symbol dependencies (no kernel build needed)."""

from __future__ import annotations

import os
from pathlib import Path

from pagelab.kernel.build import _choose_work_tree, rebuild_cost


def make_tree(work: Path, config: dict[str, str], objects: dict[str, list[str]]) -> Path:
    """A build tree as Kbuild leaves it: .config, vmlinux, and one .NAME.o.cmd per object listing its symbols."""
    work.mkdir(parents=True)
    (work / ".config").write_text("".join(f"CONFIG_{k}={v}\n" for k, v in config.items()))
    (work / "vmlinux").write_bytes(b"\x7fELF")
    for obj, symbols in objects.items():
        path = work / Path(obj).parent / f".{Path(obj).name}.cmd"
        path.parent.mkdir(parents=True, exist_ok=True)
        deps = "".join(f"    $(wildcard include/config/{s}) \\\n" for s in symbols)
        path.write_text(f"savedcmd_{obj} := gcc -c\n\ndeps_{obj} := \\\n{deps}\n")
    return work


OBJECTS = {
    "mm/memcontrol.o": ["MEMCG", "SMP"],
    "mm/page_alloc.o": ["MEMCG", "PAGE_OWNER"],
    "kernel/fork.o": ["SMP"],
    "lib/string.o": [],
}


def test_cost_counts_objects_that_depend_on_a_changed_symbol(tmp_path: Path) -> None:
    work = make_tree(tmp_path / "work-0", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    assert rebuild_cost(work, {"SMP": "y", "PAGE_OWNER": "y"}) == (0, 4)
    assert rebuild_cost(work, {"SMP": "y", "PAGE_OWNER": "y", "MEMCG": "y"}) == (2, 4)
    assert rebuild_cost(work, {"PAGE_OWNER": "y"}) == (2, 4)  # SMP turned off
    # A symbol that is only a prefix of a dependency does not count.
    assert rebuild_cost(work, {"SMP": "y", "PAGE_OWNER": "y", "MEM": "y"}) == (0, 4)


def test_a_tree_that_never_finished_a_build_has_no_cost(tmp_path: Path) -> None:
    work = make_tree(tmp_path / "work-0", {"SMP": "y"}, OBJECTS)
    (work / "vmlinux").unlink()
    assert rebuild_cost(work, {"SMP": "y"}) is None
    assert rebuild_cost(tmp_path / "missing", {"SMP": "y"}) is None


def test_small_change_reuses_the_warm_tree_with_a_scaled_estimate(tmp_path: Path) -> None:
    make_tree(tmp_path / "work-0", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "objects").write_text("8")  # a full build printed 8 progress lines for 4 objects
    work, estimate = _choose_work_tree(tmp_path, tmp_path / "new", {"SMP": "y"})
    assert work == tmp_path / "work-0"
    assert estimate == 2  # one object (page_alloc.o) x 2 lines per object


def test_a_change_that_rebuilds_most_objects_goes_to_an_empty_tree(tmp_path: Path) -> None:
    make_tree(tmp_path / "work-0", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    work, _ = _choose_work_tree(tmp_path, tmp_path / "new", {"MEMCG": "y", "PAGE_OWNER": "y"})
    assert work == tmp_path / "work-1"


def test_the_cheapest_of_two_warm_trees_is_chosen(tmp_path: Path) -> None:
    make_tree(tmp_path / "work-0", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    make_tree(tmp_path / "work-1", {"SMP": "y", "PAGE_OWNER": "y", "MEMCG": "y"}, OBJECTS)
    work, _ = _choose_work_tree(tmp_path, tmp_path / "new", {"SMP": "y", "MEMCG": "y"})
    assert work == tmp_path / "work-1"
    work, _ = _choose_work_tree(tmp_path, tmp_path / "new", {"SMP": "y", "PAGE_OWNER": "y"})
    assert work == tmp_path / "work-0"


def test_same_config_uses_the_last_build_of_it_as_the_estimate(tmp_path: Path) -> None:
    make_tree(tmp_path / "work-0", {"SMP": "y"}, OBJECTS)
    entry = tmp_path / "cfg"
    entry.mkdir()
    (entry / "objects").write_text("123")
    assert _choose_work_tree(tmp_path, entry, {"SMP": "y"}) == (tmp_path / "work-0", 123)


def test_a_full_rebuild_with_no_empty_tree_overwrites_the_least_recently_used(tmp_path: Path) -> None:
    make_tree(tmp_path / "work-0", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    make_tree(tmp_path / "work-1", {"SMP": "y", "PAGE_OWNER": "y"}, OBJECTS)
    (tmp_path / "work-1" / "pagelab-used").touch()
    os.utime(tmp_path / "work-1" / "pagelab-used", (1, 1))  # long ago
    (tmp_path / "work-0" / "pagelab-used").touch()
    work, _ = _choose_work_tree(tmp_path, tmp_path / "new", {"MEMCG": "y", "PAGE_OWNER": "y"})
    assert work == tmp_path / "work-1"
