"""kconfig: fragments, .config parsing, expressions, Kconfig lookup and verification (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.errors import InputError
from pagelab.kernel import kconfig
from pagelab.kernel.build import DEFAULT_FRAGMENTS, KCONFIGS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- fragments -----------------------------------------------------------------------------------
def test_fragment_settings_keep_order_values_and_lines(tmp_path: Path) -> None:
    frag = write(
        tmp_path / "f.config", '# comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_D=0x10\n'
    )
    got = [(s.symbol, s.value, s.line) for s in kconfig.parse_fragment(frag)]
    assert got == [("A", "y", 3), ("B", "n", 4), ("C", '"x y"', 5), ("D", "0x10", 6)]


def test_fragment_with_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    frag = write(tmp_path / "f.config", "CONFIG_A=y\nPAGE_OWNER=y\n")
    with pytest.raises(InputError) as err:
        kconfig.parse_fragment(frag)
    assert f"{frag}:2:" in str(err.value)
    assert "PAGE_OWNER=y" in str(err.value)


def test_fragment_with_an_empty_value_is_an_input_error(tmp_path: Path) -> None:
    frag = write(tmp_path / "f.config", "CONFIG_A=\n")
    with pytest.raises(InputError, match=r"f.config:1: CONFIG_A has no value"):
        kconfig.parse_fragment(frag)


def test_missing_fragment_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="fragment not found"):
        kconfig.parse_fragment(tmp_path / "nope.config")


def test_later_fragment_wins_like_merge_config(tmp_path: Path) -> None:
    a = write(tmp_path / "a.config", "CONFIG_X=y\nCONFIG_Y=y\n")
    b = write(tmp_path / "b.config", "# CONFIG_X is not set\n")
    wanted = kconfig.requested([a, b])
    assert wanted["X"].value == "n" and wanted["X"].source == str(b)
    assert wanted["Y"].value == "y"


def test_shipped_fragments_parse_and_cover_the_guest_essentials() -> None:
    wanted = kconfig.requested([KCONFIGS / n for n in DEFAULT_FRAGMENTS])
    for sym in ("PAGE_OWNER", "DEBUG_KERNEL", "MODULES", "MODULE_UNLOAD", "MAGIC_SYSRQ", "VIRTIO_NET", "VIRTIO_BLK"):
        assert wanted[sym].value == "y", sym
    for sym in ("HW_RANDOM_VIRTIO", "PVPANIC_PCI", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD", "RD_GZIP", "PROC_SYSCTL"):
        assert wanted[sym].value == "y", sym
    for extra in sorted((KCONFIGS / "extras").glob("*.config")):
        assert kconfig.parse_fragment(extra), extra


def test_config_parsing_maps_not_set_to_n() -> None:
    cfg = kconfig.parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S="str"\n# comment\n')
    assert cfg == {"A": "y", "B": "n", "S": '"str"'}


# -- expressions ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("A && B", 2),
        ("A && C", 0),
        ("A || C", 2),
        ("!C", 2),
        ("M", 1),
        ("A && M", 1),
        ("!(A && B)", 0),
        ("N = 16", 2),
        ("N != 16", 0),
        ("N >= 0x10", 2),
        ('S = "abc"', 2),
        ("UNKNOWN", 0),
        ("A && (C || M)", 1),
    ],
)
def test_expressions_evaluate_as_tristate(expr: str, want: int) -> None:
    config = {"A": "y", "B": "y", "C": "n", "M": "m", "N": "16", "S": '"abc"'}
    assert kconfig.evaluate(expr, config) == want


def test_symbols_in_an_expression_skip_literals() -> None:
    assert kconfig.symbols_in("DEBUG_KERNEL && (X86 || m) && !Y = y") == ["DEBUG_KERNEL", "X86", "Y"]


# -- a small Kconfig tree ------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(
        tmp_path / "Kconfig",
        'mainmenu "test"\nsource "arch/$(SRCARCH)/Kconfig"\nsource "mm/Kconfig"\n'
        'config EXPERT\n\tbool "expert"\n\tselect DEBUG_KERNEL\n'
        'config DEBUG_KERNEL\n\tbool "debug"\n\thelp\n\t  depends on NOTHING in help text\n\n',
    )
    write(tmp_path / "arch/x86/Kconfig", "config STACKTRACE_SUPPORT\n\tdef_bool y\n")
    write(tmp_path / "arch/arm/Kconfig", 'config ARM_ONLY\n\tbool "never read for x86"\n')
    write(
        tmp_path / "mm/Kconfig",
        'menu "Memory"\n\tdepends on MMU\n\n'
        'config PAGE_OWNER\n\tbool "Track page owner"\n\tdepends on DEBUG_KERNEL && \\\n\t\tSTACKTRACE_SUPPORT\n'
        "endmenu\n"
        'if HAVE_X\nconfig GATED\n\tbool "gated"\nendif\n'
        "config HIDDEN\n\tbool\n",
    )
    return tmp_path


def test_index_follows_source_for_the_arch_and_collects_conditions(tree: Path) -> None:
    index = kconfig.load_index(tree)
    assert index.exists("STACKTRACE_SUPPORT") and not index.exists("ARM_ONLY")
    (po,) = index.defs["PAGE_OWNER"]
    assert po.file == "mm/Kconfig" and po.has_prompt
    assert po.depends == ["MMU", "DEBUG_KERNEL && STACKTRACE_SUPPORT"]
    assert index.defs["GATED"][0].depends == ["HAVE_X"]
    assert index.defs["DEBUG_KERNEL"][0].depends == []  # help text is not parsed
    assert index.selected_by["DEBUG_KERNEL"] == [("EXPERT", "")]


def setting(symbol: str, value: str) -> kconfig.Setting:
    return kconfig.Setting(symbol, value, "frag.config", 1)


def test_verify_names_the_blocking_dependency(tree: Path) -> None:
    final = {"MMU": "y", "STACKTRACE_SUPPORT": "y", "DEBUG_KERNEL": "n"}
    (miss,) = kconfig.verify({"PAGE_OWNER": setting("PAGE_OWNER", "y")}, final, lambda: kconfig.load_index(tree))
    text = miss.explain()
    assert "CONFIG_PAGE_OWNER" in text and "asked y, got not set" in text
    assert "depends on DEBUG_KERNEL && STACKTRACE_SUPPORT [DEBUG_KERNEL=not set, STACKTRACE_SUPPORT=y]" in text
    assert "depends on MMU" not in text  # satisfied conditions are not blamed


def test_verify_names_the_select_that_forces_a_symbol_on(tree: Path) -> None:
    final = {"EXPERT": "y", "DEBUG_KERNEL": "y"}
    wanted = {"DEBUG_KERNEL": setting("DEBUG_KERNEL", "n")}
    (miss,) = kconfig.verify(wanted, final, lambda: kconfig.load_index(tree))
    assert "asked not set, got y" in miss.explain() and "selected by EXPERT=y" in miss.explain()


def test_verify_names_unknown_symbols_as_such(tree: Path) -> None:
    (miss,) = kconfig.verify({"NO_SUCH": setting("NO_SUCH", "y")}, {}, lambda: kconfig.load_index(tree))
    assert not miss.exists and miss.fatal
    assert "CONFIG_NO_SUCH (frag.config:1): no such symbol" in miss.explain()


def test_verify_names_unknown_symbols_asked_to_be_off(tree: Path) -> None:
    wanted = {"NO_SUCH": setting("NO_SUCH", "n"), "GATED": setting("GATED", "n")}
    (miss,) = kconfig.verify(wanted, {}, lambda: kconfig.load_index(tree))
    assert miss.setting.symbol == "NO_SUCH" and "no such symbol" in miss.explain()
    assert not miss.fatal  # "not set" holds for a symbol nobody can set: a warning, not an error


def test_if_exists_marks_only_the_next_setting(tmp_path: Path, tree: Path) -> None:
    frag = tmp_path / "f.config"
    frag.write_text("# pagelab: if-exists (renamed in 7.x)\n# why\nCONFIG_NO_SUCH=y\nCONFIG_OTHER=y\n")
    marked, plain = kconfig.parse_fragment(frag)
    assert marked.if_exists and marked.line == 3 and not plain.if_exists
    # Absent from this tree: a warning naming the mark. The unmarked unknown symbol stays fatal.
    misses = kconfig.verify({"NO_SUCH": marked, "OTHER": plain}, {}, lambda: kconfig.load_index(tree))
    by = {m.setting.symbol: m for m in misses}
    assert not by["NO_SUCH"].fatal and "marked if-exists: ignored" in by["NO_SUCH"].explain()
    assert by["OTHER"].fatal
    # Present in the tree but not landing: marked or not, that is an error with its reason.
    gated = kconfig.Setting("PAGE_OWNER", "y", "f.config", 1, if_exists=True)
    (miss,) = kconfig.verify({"PAGE_OWNER": gated}, {"DEBUG_KERNEL": "n"}, lambda: kconfig.load_index(tree))
    assert miss.fatal and "depends on" in miss.explain()


def test_verify_explains_symbols_without_a_prompt(tree: Path) -> None:
    (miss,) = kconfig.verify({"HIDDEN": setting("HIDDEN", "y")}, {}, lambda: kconfig.load_index(tree))
    assert "no prompt" in miss.explain()


def test_verify_passes_when_everything_landed_without_reading_kconfig() -> None:
    def never() -> kconfig.KconfigIndex:
        raise AssertionError("the Kconfig index is only needed to explain a failure")

    wanted = {"A": setting("A", "y"), "B": setting("B", "n"), "N": setting("N", "0x10")}
    assert kconfig.verify(wanted, {"A": "y", "B": "n", "N": "16"}, never) == []


def test_mismatch_report_lists_every_symbol(tree: Path) -> None:
    wanted = {"NO_SUCH": setting("NO_SUCH", "y"), "HIDDEN": setting("HIDDEN", "y")}
    misses = kconfig.verify(wanted, {}, lambda: kconfig.load_index(tree))
    text = kconfig.format_mismatches(misses, Path("/b/.config"))
    assert text.splitlines()[0] == "2 requested kconfig symbol(s) did not land in /b/.config:"
    assert len(text.splitlines()) == 3
