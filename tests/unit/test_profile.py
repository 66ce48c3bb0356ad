"""Run profiles (TOML) merged with flags: flags win, paths are relative to the profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagelab.cli import build_parser
from pagelab.errors import UsageError
from pagelab.kernel.fragments import resolve as resolve_fragment
from pagelab.run.profiles import load_profile, settings_from
from pagelab.run.workloads import DEFAULT_WORKLOADS
from pagelab.settings import Settings, given

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def _settings(*argv: str) -> Settings:
    args = build_parser().parse_args(["run", *argv])
    return settings_from(given(args), args.profile)


def test_no_profile_and_no_flags_gives_the_default_run() -> None:
    s = _settings()
    assert s.workloads == list(DEFAULT_WORKLOADS) and s.iterations == 3 and s.fail_on_growth is None


@pytest.mark.parametrize("profile", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_profile_loads(profile: Path) -> None:
    s = _settings("--profile", str(profile))
    assert s.description and s.workloads
    for frag in s.fragments:  # a shipped name or a file
        assert resolve_fragment(frag).is_file(), frag


def test_flags_override_the_profile_and_lists_replace(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text('[run]\nworkloads = ["fork-storm"]\niterations = 5\n[guest]\ncpus = 4\n')
    s = _settings("--profile", str(prof), "--iterations", "2", "--workload", "true")
    assert (s.iterations, s.workloads, s.cpus) == (2, ["true"], 4)


def test_relative_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    prof = tmp_path / "sub" / "p.toml"
    (tmp_path / "sub" / "a.sh").write_text("true\n")
    prof.write_text(
        '[kernel]\nfragments = ["../x.config"]\nbase = "tinyconfig"\n[guest]\nupload = ["a.sh:/root/a.sh"]\n'
    )
    values = load_profile(prof)
    assert values["fragments"] == [str(tmp_path / "x.config")]
    assert values["base"] == "tinyconfig"
    assert values["upload"] == [f"{tmp_path / 'sub' / 'a.sh'}:/root/a.sh"]


def test_an_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[run]\niteration = 3\n")
    with pytest.raises(UsageError, match=r"p\.toml: unknown key \[run\] 'iteration'"):
        load_profile(prof)


def test_a_wrong_type_names_the_key_and_what_was_expected(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text('[run]\niterations = "three"\n')
    with pytest.raises(UsageError, match=r"\[run\] iterations: expected int"):
        load_profile(prof)


def test_a_boolean_is_not_a_count(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[guest]\ncpus = true\n")
    with pytest.raises(UsageError, match="cpus"):
        load_profile(prof)


def test_broken_toml_and_missing_files_are_usage_errors(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[run\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_profile(prof)
    with pytest.raises(UsageError, match="no such file"):
        load_profile(tmp_path / "missing.toml")


def test_out_of_range_values_are_rejected() -> None:
    with pytest.raises(UsageError, match="--iterations"):
        _settings("--iterations", "0")
    with pytest.raises(UsageError, match="SRC:DST"):
        _settings("--upload", "nocolon")


def test_the_reproducer_command_parses_back_to_the_same_settings() -> None:
    s = _settings("--profile", str(PROFILES / "thp-stress.toml"), "--memory", "3G")
    again = _settings(*s.reproduce_argv()[2:])
    s.profile = again.profile = None
    s.description = again.description = ""
    assert again == s


def test_the_reproducer_keeps_top_and_readers(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('[run]\nworkloads = ["true"]\ntop = 20\nreaders = 4\n')
    s = _settings("--profile", str(profile))
    again = _settings(*s.reproduce_argv()[2:])
    assert (again.top, again.readers) == (20, 4)
