"""The workload catalogue: self-documenting scripts for busybox sh, and custom commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pagelab.errors import UsageError
from pagelab.run import workloads


def test_every_catalogue_script_documents_itself() -> None:
    entries = workloads.catalogue()
    assert {"tmpfs-grow", "tmpfs-churn", "pipe-hog", "socket-churn", "fork-storm", "leaky-leak"} <= set(entries)
    for entry in entries.values():
        assert entry.summary and entry.usage.startswith(entry.name)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox-static not installed")
def test_every_catalogue_script_parses_under_busybox_sh() -> None:
    for entry in workloads.catalogue().values():
        proc = subprocess.run(["busybox", "sh", "-n", str(entry.path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{entry.path}: {proc.stderr}"


def test_default_workloads_are_in_the_catalogue() -> None:
    names = set(workloads.catalogue())
    assert all(spec.split()[0] in names for spec in workloads.DEFAULT_WORKLOADS)


def test_a_catalogue_name_runs_its_script_with_the_arguments() -> None:
    w = workloads.resolve("tmpfs-grow 16")
    assert w.command == "sh /usr/share/pagelab/workloads/tmpfs-grow.sh 16"
    assert w.label == "tmpfs-grow-16" and w.args == ("16",)


def test_anything_else_is_a_shell_command_run_as_given() -> None:
    w = workloads.resolve("echo 3 > /proc/sys/vm/drop_caches; sleep 1")
    assert w.entry is None and w.command == "echo 3 > /proc/sys/vm/drop_caches; sleep 1"
    assert "/" not in w.label and " " not in w.label


def test_requirements_name_modules_and_host_tools() -> None:
    assert workloads.resolve("leaky-leak 64").modules == ("leaky",)
    assert workloads.resolve("stress-ng vm").host_tools == ("stress-ng",)
    assert workloads.resolve("true").modules == ()


def test_repeated_workloads_get_distinct_labels() -> None:
    labels = [w.label for w in workloads.resolve_all(["true", "true", "fork-storm"])]
    assert labels == ["true", "true-2", "fork-storm"]


def test_an_empty_or_unbalanced_spec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty"):
        workloads.resolve("   ")
    with pytest.raises(UsageError, match="--workload"):
        workloads.resolve("echo 'unterminated")


def test_a_script_without_summary_is_rejected_by_name(tmp_path: Path) -> None:
    (tmp_path / "bad.sh").write_text("#!/bin/sh\n# usage: bad\ntrue\n")
    with pytest.raises(UsageError, match=r"bad\.sh.*summary"):
        workloads.catalogue(tmp_path)


def test_the_image_gets_the_whole_catalogue() -> None:
    files = workloads.guest_files()
    assert files["/usr/share/pagelab/workloads/pipe-hog.sh"].is_file()
    assert len(files) == len(workloads.catalogue())
