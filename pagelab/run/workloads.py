"""The built-in workload catalogue (``guest/workloads/*.sh``) and custom shell commands.

A workload spec on the command line is either ``NAME [ARGS...]`` for a catalogue script or any other
shell command, run as is by the guest's busybox ``sh``. Catalogue scripts document themselves in their
header comments (``# summary:``, ``# usage:``, ``# requires:``), which is what ``pagelab workloads`` lists.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pagelab.errors import UsageError
from pagelab.resources import guest_dir
from pagelab.ui import UI

CATALOGUE_DIR = guest_dir() / "workloads"
GUEST_DIR = "/usr/share/pagelab/workloads"

# The default `pagelab run`: one deliberate growth (files kept on a tmpfs) among churn that must not show.
DEFAULT_WORKLOADS = ("tmpfs-grow", "tmpfs-churn", "fork-storm", "pipe-hog", "file-churn")

_HEADER = re.compile(r"^#\s*(summary|usage|requires):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Entry:
    """One catalogue script: its name, documentation and requirements."""

    name: str
    path: Path
    summary: str
    usage: str
    requires: tuple[str, ...] = ()

    @property
    def guest_path(self) -> str:
        return f"{GUEST_DIR}/{self.path.name}"


@dataclass(frozen=True)
class Workload:
    """A resolved ``--workload``: the command the guest runs and what it needs first."""

    spec: str
    command: str
    label: str
    entry: Entry | None = None
    args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def requires(self) -> tuple[str, ...]:
        return self.entry.requires if self.entry else ()

    @property
    def modules(self) -> tuple[str, ...]:
        """Test modules (``guest/modules/<name>``) that must be loaded before this workload runs."""
        return tuple(r.split()[1] for r in self.requires if r.startswith("module "))

    @property
    def host_tools(self) -> tuple[str, ...]:
        """Host binaries that must be shipped into the guest (``requires: host NAME``)."""
        return tuple(r.split()[1] for r in self.requires if r.startswith("host "))


def parse_header(path: Path) -> Entry:
    """Read a catalogue script's header comments. Raises UsageError when ``summary`` is missing."""
    fields: dict[str, list[str]] = {"summary": [], "usage": [], "requires": []}
    for line in path.read_text().splitlines():
        if line.startswith("#!"):
            continue
        if not line.startswith("#"):
            break
        m = _HEADER.match(line)
        if m:
            fields[m.group(1)].append(m.group(2))
    name = path.name.removesuffix(".sh")
    if not fields["summary"]:
        raise UsageError(f"{path}: workload script has no '# summary:' header line")
    return Entry(
        name=name,
        path=path,
        summary=fields["summary"][0],
        usage=fields["usage"][0] if fields["usage"] else name,
        requires=tuple(fields["requires"]),
    )


def catalogue(directory: Path = CATALOGUE_DIR) -> dict[str, Entry]:
    """The built-in workloads by name, sorted. Raises UsageError on a script without a summary."""
    return {p.name.removesuffix(".sh"): parse_header(p) for p in sorted(directory.glob("*.sh"))}


def _label(words: list[str]) -> str:
    text = "-".join(words) if words else "cmd"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-")[:40] or "cmd"


def resolve(spec: str, entries: dict[str, Entry] | None = None) -> Workload:
    """Turn one ``--workload`` value into a Workload. Raises UsageError on an empty or unparsable spec."""
    entries = catalogue() if entries is None else entries
    try:
        words = shlex.split(spec)
    except ValueError as err:
        raise UsageError(f"--workload {spec!r}: {err}") from None
    if not words:
        raise UsageError("--workload: empty command")
    entry = entries.get(words[0])
    if entry is None:
        return Workload(spec=spec, command=spec, label=_label(words[:2]))
    args = tuple(words[1:])
    command = shlex.join(["sh", entry.guest_path, *args])
    return Workload(spec=spec, command=command, label=_label(words), entry=entry, args=args)


def resolve_all(specs: list[str] | tuple[str, ...]) -> list[Workload]:
    """Resolve several specs; labels are made unique so artifacts never collide. Raises UsageError."""
    entries = catalogue()
    out: list[Workload] = []
    seen: dict[str, int] = {}
    for spec in specs:
        w = resolve(spec, entries)
        n = seen.get(w.label, 0)
        seen[w.label] = n + 1
        if n:
            w = Workload(spec=w.spec, command=w.command, label=f"{w.label}-{n + 1}", entry=w.entry, args=w.args)
        out.append(w)
    return out


def guest_files(entries: dict[str, Entry] | None = None) -> dict[str, Path]:
    """The whole catalogue as image extra files (guest path -> host path): one cached image serves every run."""
    entries = catalogue() if entries is None else entries
    return {e.guest_path: e.path for e in entries.values()}


def check_host_tools(workloads: list[Workload]) -> None:
    """Fail early when a workload needs a host tool the image cannot ship. Raises UsageError."""
    for w in workloads:
        for tool in w.host_tools:
            if not shutil.which(tool):
                raise UsageError(f"--workload {w.spec!r}: needs {tool!r} on the host (apt-get install {tool})")


def render_catalogue(ui: UI, entries: dict[str, Entry] | None = None) -> None:
    """``pagelab workloads``: every built-in workload with its usage, what it does and what it needs."""
    entries = catalogue() if entries is None else entries
    ui.listing(
        "Built-in workloads (--workload NAME [ARGS]; anything else runs as a shell command in the guest)",
        ("usage", "what it does", "needs"),
        ((e.usage, e.summary, ", ".join(e.requires)) for e in entries.values()),
        f"default set (pagelab run with no --workload): {', '.join(DEFAULT_WORKLOADS)}",
    )
