"""The settings model (pagelab/settings.py): one declaration per setting, and everything derived from it agrees.

The round-trip tests iterate over the declared settings, so a new setting is covered by declaring it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pagelab import resources
from pagelab.cli import build_parser, main
from pagelab.errors import InputError, UsageError
from pagelab.guest.qemu import QemuConfig
from pagelab.guest.session import GuestOptions
from pagelab.kernel.build import BuildOptions
from pagelab.kernel.fragments import resolve as resolve_fragment
from pagelab.kernel.fragments import shipped as shipped_fragments
from pagelab.run.profiles import load_profile, settings_from
from pagelab.run.profiles import resolve as resolve_profile
from pagelab.settings import SETTINGS, Setting, Settings, given, parse_upload

# Options of `pagelab run` that are not settings: where the output goes and where the values come from.
COMMAND_OPTIONS = {"--help", "-h", "--profile", "--out", "--json", "--ci"}


def _settings(*argv: str) -> Settings:
    args = build_parser().parse_args(["run", *argv])
    return settings_from(given(args), args.profile)


def _values(s: Settings) -> dict[str, Any]:
    return {setting.name: getattr(s, setting.name) for setting in SETTINGS}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return repr(value)


def _files_for(setting: Setting, example: Any, where: Path) -> None:
    """Create the host files an example names (an upload's source, a fragment file, a kernel path)."""
    for item in example if setting.repeatable else [example]:
        if setting.kind in ("path", "source", "upload") or (setting.kind == "fragment" and item.endswith(".config")):
            (where / item.partition(":")[0]).write_text("x\n")


def _flags(setting: Setting, value: Any) -> list[str]:
    if setting.type is bool:
        return [setting.flag] if value else []
    return [arg for item in (value if setting.repeatable else [value]) for arg in (setting.flag, str(item))]


def _profile(tmp_path: Path, values: dict[str, Any]) -> Path:
    tables: dict[str, list[str]] = {}
    for setting in SETTINGS:
        if setting.name in values:
            tables.setdefault(setting.table, []).append(f"{setting.key} = {_toml(values[setting.name])}")
    path = tmp_path / "p.toml"
    path.write_text("".join(f"[{t}]\n" + "\n".join(lines) + "\n" for t, lines in tables.items()))
    return path


# -- the declarations themselves ------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_example_is_valid_and_not_the_default(setting: Setting, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _files_for(setting, setting.example, tmp_path)
    assert setting.example != setting.default
    assert _values(_settings(*_flags(setting, setting.example)))[setting.name] != setting.default_value()


def test_defaults_pass_their_own_checks() -> None:
    from pagelab.settings import check

    for setting in SETTINGS:
        check(setting.name, setting.default_value())


def test_every_run_flag_is_a_declared_setting_or_a_command_option() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    declared = {flag for s in SETTINGS for flag in s.flags}
    flags = {flag for action in run._actions for flag in action.option_strings}
    assert flags - declared == COMMAND_OPTIONS
    assert declared <= flags


def test_stage_options_take_exactly_their_stages_settings() -> None:
    build = BuildOptions.from_settings(Settings(jobs=3, fragments=["memcg"]))
    assert (build.jobs, build.fragments) == (3, ["memcg"])
    guest = GuestOptions.from_settings(Settings(memory="2G", cpus=3, accel="tcg", timeout=5.0, keep=True))
    assert (guest.memory, guest.cpus, guest.accel, guest.timeout, guest.keep) == ("2G", 3, "tcg", 5.0, True)


def test_memory_and_cpu_defaults_are_the_settings_defaults() -> None:
    defaults = Settings()
    assert (GuestOptions().memory, GuestOptions().cpus) == (defaults.memory, defaults.cpus)
    guest = GuestOptions.from_settings(defaults)
    config = QemuConfig(Path("bz"), Path("initrd"), "tcg", 1, Path("q"))
    assert (config.memory_mib, config.cpus) == (1024, guest.cpus)
    help_text = build_parser()._subparsers._group_actions[0].choices["boot"].format_help()  # type: ignore[union-attr]
    assert f"(default {defaults.memory})" in help_text and f"(default {defaults.cpus})" in help_text


def test_help_shows_the_defaults_the_stages_use_from_their_own_constants() -> None:
    from pagelab.collect.collector import READERS_PER_CPU
    from pagelab.guest.qemu import BOOT_TIMEOUT
    from pagelab.kernel.source import DEFAULT_PACKAGE
    from pagelab.settings import DEFAULT_BASE

    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = " ".join(run.format_help().split())
    assert (
        f"--kernel-src PATH|X.Y kernel tree, tarball or Debian linux-source version X.Y (default: {DEFAULT_PACKAGE})"
        in text
    )
    assert f"--base tinyconfig|defconfig|FILE base config (default {DEFAULT_BASE})" in text
    assert f"--readers N parallel page_owner readers (default: {READERS_PER_CPU} per vCPU)" in text
    for accel, seconds in BOOT_TIMEOUT.items():
        assert f"{seconds:g} s with {accel.upper()}" in text
    # The settings leave these at None for the stage to decide: the help must not claim a value of its own.
    assert all(getattr(Settings(), name) is None for name in ("kernel_src", "base", "readers", "timeout"))


def test_building_the_parser_does_not_import_the_stages_for_their_defaults() -> None:
    # The help reads the stages' constants only when shown: importing the guest (paramiko) and the collector
    # (zstandard) to build the parser would slow every command's start.
    code = "import sys; from pagelab.cli import build_parser; build_parser(); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'pagelab.guest.qemu'" not in out and "'pagelab.collect.collector'" not in out


# -- profiles/default.toml is the run with no arguments ----------------------------------------------------
def test_the_default_profile_resolves_to_exactly_a_run_with_no_arguments() -> None:
    assert _values(_settings("--profile", "default")) == _values(_settings())


def test_the_default_profile_spells_out_every_setting_that_has_a_default() -> None:
    values = load_profile(resources.profiles_dir() / "default.toml")
    with_default = {s.name for s in SETTINGS if s.default_value() not in (None, [])}
    assert with_default <= set(values), sorted(with_default - set(values))


# -- every setting round-trips through a profile and through the reproducer ---------------------------------
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_setting_means_the_same_in_a_profile_and_as_a_flag(setting: Setting, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths: to the working directory as flags, to the profile in a profile
    _files_for(setting, setting.example, tmp_path)
    from_flags = _settings(*_flags(setting, setting.example))
    from_profile = _settings("--profile", str(_profile(tmp_path, {setting.name: setting.example})))
    assert _values(from_profile) == _values(from_flags)
    assert getattr(from_profile, setting.name) != setting.default_value()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_setting_survives_the_reproducer(setting: Setting, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _files_for(setting, setting.example, tmp_path)
    s = _settings(*_flags(setting, setting.example))
    argv = s.reproduce_argv()
    assert argv[:2] == ["pagelab", "run"]
    monkeypatch.chdir("/")  # the reproducer works from anywhere: its paths are absolute
    assert _values(_settings(*argv[2:])) == _values(s)


def test_all_settings_at_once_survive_a_profile_and_the_reproducer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    examples = {s.name: s.example for s in SETTINGS}
    for s in SETTINGS:
        _files_for(s, s.example, tmp_path)
    from_profile = _settings("--profile", str(_profile(tmp_path, examples)))
    assert all(getattr(from_profile, s.name) != s.default_value() for s in SETTINGS)
    assert _values(_settings(*from_profile.reproduce_argv()[2:])) == _values(from_profile)


def test_a_bad_profile_value_names_the_file_the_key_and_the_value(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[guest]\ncpus = 0\n")
    with pytest.raises(UsageError, match=r"p\.toml: \[guest\] cpus 0: expected 1 to 64"):
        load_profile(prof)


def test_a_memory_size_in_a_profile_may_be_a_number_of_mib(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[guest]\nmemory = 2048\n")
    assert load_profile(prof)["memory"] == "2048"


def test_a_kernel_source_version_stays_a_name_unless_such_a_path_exists(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _settings("--kernel-src", "7.3").kernel_src == "7.3"
    assert load_profile(_profile(tmp_path, {"kernel_src": "7.3"}))["kernel_src"] == "7.3"
    (tmp_path / "7.3").mkdir()
    assert _settings("--kernel-src", "7.3").kernel_src == str(tmp_path / "7.3")


def test_a_relative_kernel_source_in_a_profile_is_relative_to_the_profile_even_when_missing(
    tmp_path: Path, monkeypatch
) -> None:
    from pagelab.kernel.source import resolve_source
    from pagelab.ui import UI

    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    prof = profile_dir / "p.toml"
    prof.write_text('[kernel]\nsrc = "linux"\n')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linux").mkdir()  # a tree in the working directory is not the profile's `linux`
    src = load_profile(prof)["kernel_src"]
    assert src == str(profile_dir / "linux")
    with pytest.raises(InputError, match=f"{profile_dir / 'linux'}: no such file or directory"):
        resolve_source(src, UI(plain=True))
    # A version stays a version even when the working directory has a path of that name.
    (tmp_path / "7.3").mkdir()
    prof.write_text('[kernel]\nsrc = "7.3"\n')
    assert load_profile(prof)["kernel_src"] == "7.3"


# -- uploads: one parser for boot, run and profiles ----------------------------------------------------------
@pytest.mark.parametrize("spec", ["nocolon", ":/root/x", "a.sh:"])
def test_a_malformed_upload_is_the_same_usage_error_for_boot_and_run(spec: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.sh").write_text("true\n")
    with pytest.raises(UsageError, match="expected SRC:DST"):
        parse_upload(spec)
    with pytest.raises(UsageError, match="expected SRC:DST"):
        _settings("--upload", spec)
    with pytest.raises(UsageError, match="expected SRC:DST"):
        load_profile(_profile(tmp_path, {"upload": [spec]}))


# -- shipped fragments and profiles by name -----------------------------------------------------------------
def test_a_fragment_name_is_a_shipped_extra_and_a_path_is_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _settings("--fragment", "memcg").fragments == ["memcg"]
    (tmp_path / "memcg").write_text("CONFIG_X=y\n")  # a regular file given as a flag wins over the shipped name
    assert _settings("--fragment", "memcg").fragments == [str(tmp_path / "memcg")]
    (tmp_path / "mine.config").write_text("CONFIG_X=y\n")
    assert _settings("--fragment", "mine.config").fragments == [str(tmp_path / "mine.config")]
    assert resolve_fragment("memcg") == resources.kconfigs_dir() / "extras" / "memcg.config"
    assert resolve_fragment(str(tmp_path / "memcg")) == tmp_path / "memcg"


def test_the_build_stage_never_reinterprets_a_fragment_name_against_the_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    from pagelab.kernel.build import _fragments

    monkeypatch.chdir(tmp_path)
    (tmp_path / "thp").write_text("CONFIG_NOT_THE_SHIPPED_ONE=y\n")
    # thp-stress says fragments = ["thp"]: next to the profile there is no such file, so it is the shipped extra.
    opts = BuildOptions.from_settings(_settings("--profile", "thp-stress"))
    assert opts.fragments == ["thp", "memcg"]
    extras = resources.kconfigs_dir() / "extras"
    assert _fragments(opts)[-2:] == [(extras / "thp.config").resolve(), (extras / "memcg.config").resolve()]


def test_a_directory_named_like_a_shipped_fragment_or_profile_does_not_hide_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()  # `pagelab run --profile smoke --out smoke` leaves this behind
    (tmp_path / "memcg").mkdir()
    assert resolve_profile("smoke") == resources.profiles_dir() / "smoke.toml"
    assert _settings("--profile", "smoke").iterations == 1
    assert _settings("--fragment", "memcg").fragments == ["memcg"]


def test_an_empty_profile_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["run", "--profile", "", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--profile ''" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_unknown_fragment_name_is_a_one_line_usage_error_listing_the_names(capsys) -> None:
    assert main(["build", "--fragment", "no-such-extra"]) == 2
    err = capsys.readouterr().err
    assert "--fragment 'no-such-extra'" in err and "memcg" in err and "thp" in err
    assert len(err.strip().splitlines()) == 1


def test_a_profile_name_is_a_shipped_profile_and_an_unknown_one_lists_the_names(tmp_path: Path, capsys) -> None:
    assert resolve_profile("smoke") == resources.profiles_dir() / "smoke.toml"
    assert _settings("--profile", "smoke").iterations == 1
    assert main(["run", "--profile", "no-such-profile", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--profile no-such-profile" in err and "default" in err and "smoke" in err
    assert not (tmp_path / "o").exists()


def test_pagelab_fragments_lists_every_extra_in_the_directory_with_its_description(capsys) -> None:
    assert main(["fragments"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    extras = sorted((resources.kconfigs_dir() / "extras").glob("*.config"))
    assert extras and set(shipped_fragments()) == {p.stem for p in extras}
    for fragment in shipped_fragments().values():
        assert fragment.name in out and fragment.description and fragment.description in out


def test_pagelab_profiles_lists_every_shipped_profile_with_its_description(capsys) -> None:
    assert main(["profiles"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for path in sorted(resources.profiles_dir().glob("*.toml")):
        assert path.stem in out and load_profile(path)["description"] in out


def test_a_fragment_description_is_its_first_comment_sentence(tmp_path: Path) -> None:
    from pagelab.kernel.fragments import describe

    frag = tmp_path / "x.config"
    frag.write_text(
        "# pagelab: requires Linux >= 6.10\n# Huge pages for\n# everyone. More detail.\n#\n# Other.\nCONFIG_X=y\n"
    )
    assert describe(frag) == "Huge pages for everyone."
