"""The command line of ``pagelab sort``: page_owner_sort's options, parsed the way glibc getopt_long parses them.

The C tool (tools/mm/page_owner_sort.c, 6.12) calls ``getopt_long(argc, argv, "admnpstP", longopts)``:
options may follow the positionals (glibc permutes argv unless POSIXLY_CORRECT is set), ``--`` ends
the options, long options take ``--name=value`` or ``--name value`` and may be abbreviated to a unique
prefix, short options cluster (``-md``). Everything it accepts is accepted here with the same meaning;
everything it rejects with its usage text is a UsageError (exit 2, one line) here. The deliberate
differences are listed in docs/sort.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pagelab.errors import UsageError

USAGE = """\
Usage: pagelab sort [OPTIONS] <input> <output>
A drop-in for the kernel's tools/mm/page_owner_sort (7.3 and 6.12): same options, same output.
<input> may be '-' (stdin) or gzip/xz/zstd/bzip2-compressed; <output> may be '-' (stdout).

-a\t\t\tSort by memory allocation time.
-m\t\t\tSort by total memory.
-n\t\t\tSort by task command name.
-p\t\t\tSort by pid.
-P\t\t\tSort by tgid.
-s\t\t\tSort by the stacktrace.
-t\t\t\tSort by number of times record is seen (default).
-d\t\t\tPrint debug information (to stderr).

--pid <pidlist>\t\tSelect by pid. This selects the information of
\t\t\tblocks whose process ID numbers appear in <pidlist>.
--tgid <tgidlist>\tSelect by tgid. This selects the information of
\t\t\tblocks whose Thread Group ID numbers appear in <tgidlist>.
--name <cmdlist>\tSelect by command name. This selects the information
\t\t\tof blocks whose command name appears in <cmdlist>.
--cull <rules>\t\tCull by user-defined rules. <rules> is a single
\t\t\targument in the form of a comma-separated list with some
\t\t\tcommon fields predefined (pid, tgid, name, stacktrace, allocator)
--sort <order>\t\tSpecify sort order as: [+|-]key[,[+|-]key[,...]]
\t\t\tkeys: pid tgid name stacktrace txt alloc_ts allocator
\t\t\t(or p tg n st T at ator); honoured unless -a/-m/-n/-p/-P/-s/-t is given.
-h, --help\t\tPrint this help and exit (as page_owner_sort 7.3 does).

pagelab's own options:
--compat <version>\tReproduce page_owner_sort 6.12 or 7.3 where they differ
\t\t\t(default 7.3; docs/sort.md).
--stacks <file>\t\tResolve a handle-mode dump (7.x page_owner mode=handle)
\t\t\tthrough a copy of page_owner_stacks/show_stacks_handles.
"""

_SHORT_HINT = "usage: pagelab sort [OPTIONS] INPUT OUTPUT; 'pagelab sort --help' lists the options"

# Short sort options: (key, sign) as page_owner_sort's set_single_cmp calls in its compare_flag switch.
SHORT_SORTS: dict[str, tuple[str, int]] = {
    "a": ("ts", 1),
    "m": ("pages", -1),
    "n": ("comm", 1),
    "p": ("pid", 1),
    "P": ("tgid", 1),
    "s": ("stacktrace", 1),
    "t": ("num", -1),
}
DEFAULT_SORT: tuple[tuple[str, int], ...] = (("num", -1),)

# get_arg_type(): the names --sort and --cull understand.
_ARG_TYPES: dict[bytes, str] = {
    b"pid": "pid",
    b"p": "pid",
    b"tgid": "tgid",
    b"tg": "tgid",
    b"name": "comm",
    b"n": "comm",
    b"stacktrace": "stacktrace",
    b"st": "stacktrace",
    b"txt": "txt",
    b"T": "txt",
    b"alloc_ts": "ts",
    b"at": "ts",
    b"allocator": "allocator",
    b"ator": "allocator",
}
CULL_KEYS = frozenset({"pid", "tgid", "comm", "stacktrace", "allocator"})
_LONG_OPTIONS = ("pid", "tgid", "name", "cull", "sort")  # all take a required argument
# pagelab's own long options: matched by a prefix only where no option of the C tool matches it, so
# every abbreviation page_owner_sort accepts keeps its meaning (--c is --cull, --s is --sort).
_OWN_OPTIONS = ("compat", "stacks")
COMPAT_VERSIONS = ("6.12", "7.3")
_SHORT_OPTIONS = "admnpstP"

# strtol(s, &end, 10) with *end == '\0': optional C-locale whitespace, a sign, decimal digits.
_C_LONG = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_LONG_MAX = 2**63 - 1


class HelpRequested(Exception):
    """``-h`` or ``--help`` was given: the caller prints USAGE and exits 0."""


@dataclass(frozen=True)
class SortOptions:
    """What one ``pagelab sort`` invocation asked for, with page_owner_sort's meaning."""

    input: str
    output: str
    sort_keys: tuple[tuple[str, int], ...] = DEFAULT_SORT
    """Comparators in order, each (key, +1 ascending | -1 descending); keys: num pages pid tgid comm
    stacktrace ts txt allocator."""
    cull: frozenset[str] = frozenset()
    pids: tuple[int, ...] | None = None
    tgids: tuple[int, ...] | None = None
    comms: tuple[bytes, ...] | None = None
    debug: bool = False
    compat: str = "7.3"
    """The C tool version reproduced where 6.12 and 7.3 differ (``--compat``; docs/sort.md)."""
    stacks: str | None = None
    """A show_stacks_handles file resolving a handle-mode dump (``--stacks``; pageowner/handles.py)."""
    notes: tuple[str, ...] = ()
    """Arguments accepted but without effect, for a warning (the C tool ignores them silently)."""

    @property
    def strip_ts(self) -> bool:
        """page_owner_sort removes the ``ts`` digits unless the first comparator is the allocation time."""
        return self.sort_keys[0][0] != "ts"


def wrap_int32(value: int) -> int:
    """``value`` converted to a C ``int`` the way gcc on x86-64 truncates a long."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _c_int_list(text: bytes) -> tuple[int, ...] | None:
    """parse_nums_list(): comma-separated strtol() values as ints, or None where the C tool rejects the list."""
    values = []
    for item in text.split(b","):
        m = _C_LONG.fullmatch(item)
        if m is None:
            return None
        value = int(m[1])
        if not -_LONG_MAX - 1 <= value <= _LONG_MAX:  # strtol sets ERANGE
            return None
        values.append(wrap_int32(value))
    return tuple(values)


def _parse_sort_list(text: bytes) -> tuple[tuple[str, int], ...] | None:
    """parse_sort_args(): ``[+|-]key[,...]``, or None for an unknown key."""
    keys = []
    for item in text.split(b","):
        sign = 1
        if item[:1] in (b"-", b"+"):
            sign = -1 if item[:1] == b"-" else 1
            item = item[1:]
        key = _ARG_TYPES.get(item)
        if key is None:
            return None
        keys.append((key, sign))
    return tuple(keys)


def _parse_cull_list(text: bytes) -> frozenset[str] | None:
    """parse_cull_args(): culling fields, or None for a key that cannot cull (txt, alloc_ts, unknown)."""
    keys = set()
    for item in text.split(b","):
        key = _ARG_TYPES.get(item)
        if key not in CULL_KEYS:
            return None
        keys.add(key)
    return frozenset(keys)


def _usage_error(message: str) -> UsageError:
    return UsageError(f"pagelab sort: {message} ({_SHORT_HINT})")


def getopt_long(argv: Sequence[str], positionals: list[str]) -> Iterator[tuple[str, str | None]]:
    """Scan ``argv`` like glibc's getopt_long with page_owner_sort's option table.

    Yields options in order as (name, argument) and appends the positionals, in order, to ``positionals``.
    Options are yielded as they are scanned, so an invalid option value is reported before a later bad
    option, as in the C tool. Raises UsageError where getopt_long reports an error (the C tool then
    prints its usage and exits 1), HelpRequested for -h/--help.
    """
    permute = "POSIXLY_CORRECT" not in os.environ
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if arg == "-" or not arg.startswith("-"):
            if not permute:
                positionals.append(arg)
                positionals.extend(argv[i:])
                break
            positionals.append(arg)
            continue
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, value = body.partition("=")
            if arg == "--help":
                raise HelpRequested
            matches = [o for o in _LONG_OPTIONS if o.startswith(name)]
            if name in _LONG_OPTIONS:
                matches = [name]
            if not matches and name:
                matches = [o for o in _OWN_OPTIONS if o.startswith(name)]
            if not matches:
                raise _usage_error(f"unrecognized option '{arg}'")
            if len(matches) > 1:
                possible = " ".join(f"'--{o}'" for o in matches)
                raise _usage_error(f"option '--{name}' is ambiguous; possibilities: {possible}")
            option = matches[0]
            if not eq:
                if i >= len(argv):
                    raise _usage_error(f"option '--{option}' requires an argument")
                value = argv[i]
                i += 1
            yield option, value
            continue
        for ch in arg[1:]:
            if ch == "h":
                raise HelpRequested
            if ch not in _SHORT_OPTIONS:
                raise _usage_error(f"invalid option -- '{ch}'")
            yield ch, None


def parse_argv(argv: Sequence[str]) -> SortOptions:
    """The options of one ``pagelab sort`` command line, checked in page_owner_sort's order.

    Raises UsageError (exit 2, one line) wherever page_owner_sort prints its usage or an option error,
    HelpRequested for -h/--help.
    """
    positionals: list[str] = []
    short_sort: set[str] = set()
    long_sort: tuple[tuple[str, int], ...] | None = None
    cull: set[str] = set()
    pids = tgids = None
    comms = None
    debug = False
    compat = COMPAT_VERSIONS[-1]
    stacks = None
    for name, value in getopt_long(argv, positionals):
        raw = os.fsencode(value) if value is not None else b""
        if name == "d":
            debug = True
        elif name == "compat":
            if value not in COMPAT_VERSIONS:
                raise _usage_error(f"--compat expects one of {', '.join(COMPAT_VERSIONS)}, got {value!r}")
            compat = value
        elif name == "stacks":
            stacks = value
        elif name in SHORT_SORTS:
            short_sort.add(name)
        elif name == "pid":
            pids = _c_int_list(raw)
            if pids is None:
                raise _usage_error(f"--pid expects a comma-separated list of integers, got {value!r}")
        elif name == "tgid":
            tgids = _c_int_list(raw)
            if tgids is None:
                raise _usage_error(f"--tgid expects a comma-separated list of integers, got {value!r}")
        elif name == "name":
            comms = tuple(raw.split(b","))
        elif name == "cull":
            keys = _parse_cull_list(raw)
            if keys is None:
                raise _usage_error(
                    f"--cull expects a comma-separated list of pid, tgid, name, stacktrace, allocator"
                    f" (or p, tg, n, st, ator), got {value!r}"
                )
            cull |= keys  # repeated --cull options accumulate, as in the C tool
        elif name == "sort":
            long_sort = _parse_sort_list(raw)
            if long_sort is None:
                raise _usage_error(
                    f"--sort expects [+|-]key[,[+|-]key...] with keys pid, tgid, name, stacktrace, txt, alloc_ts,"
                    f" allocator (or p, tg, n, st, T, at, ator), got {value!r}"
                )
    if len(positionals) < 2:
        got = "no arguments" if not positionals else f"only {positionals[0]!r}"
        raise _usage_error(f"expected INPUT and OUTPUT, got {got}")
    if len(short_sort) > 1:
        given = " ".join(f"-{c}" for c in sorted(short_sort))
        raise _usage_error(f"{given}: choose one sort option (--sort takes several keys)")
    notes = []
    if short_sort:
        letter = next(iter(short_sort))
        sort_keys: tuple[tuple[str, int], ...] = (SHORT_SORTS[letter],)
        if long_sort is not None:
            notes.append(f"--sort is ignored because -{letter} is given (as page_owner_sort does)")
    elif long_sort is not None:
        sort_keys = long_sort
    else:
        sort_keys = DEFAULT_SORT
    if len(positionals) > 2:
        notes.append(f"extra arguments ignored: {' '.join(positionals[2:])}")
    return SortOptions(
        input=positionals[0],
        output=positionals[1],
        sort_keys=sort_keys,
        cull=frozenset(cull),
        pids=pids,
        tgids=tgids,
        comms=comms,
        debug=debug,
        compat=compat,
        stacks=stacks,
        notes=tuple(notes),
    )
