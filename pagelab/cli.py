"""Command line: parse arguments, call one function per subcommand, map errors to exit codes.

No logic lives here. Each ``_cmd_*`` hands its parsed arguments to the stage that owns the work.
Exit codes (docs/formats.md): 0 ok, 1 finding, 2 usage/input, 3 guest crash, 4 infrastructure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from pagelab import __version__, settings
from pagelab.errors import PagelabError, UsageError
from pagelab.ui import UI


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pagelab", description="Which code owns the kernel's memory, and what keeps growing.")
    parser.add_argument("--version", action="version", version=f"pagelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("build", help="build a page owner kernel (cached, out of tree)")
    settings.add_arguments(p, "build")
    p.add_argument("--json", action="store_true", help="print only the build result as JSON on stdout")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("boot", help="boot the kernel in QEMU; run CMD or open a shell")
    settings.add_arguments(p, "build", "guest")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="command to run in the guest")
    p.set_defaults(func=_cmd_boot)

    p = sub.add_parser("run", help="the leak hunt: build, boot, workloads, snapshots, report")
    settings.add_arguments(p, "build", "guest", "run")
    p.add_argument("--profile", metavar="NAME|FILE", help="run profile: a shipped NAME (pagelab profiles) or a FILE")
    p.add_argument("--out", metavar="DIR", help="artifact directory (default runs/<timestamp>)")
    p.add_argument("--json", metavar="FILE|-", help="write report JSON here ('-' = stdout)")
    p.add_argument("--ci", action="store_true", help="plain output, junit.xml")
    p.set_defaults(func=_cmd_run)

    # sort mirrors the C tool's getopt_long parsing (options after the positionals, '--', abbreviations),
    # so its argv is handed over verbatim: argparse would reject a leading '-m' and may eat '--'.
    p = sub.add_parser("sort", help="drop-in for the kernel's tools/mm/page_owner_sort", add_help=False)
    p.add_argument("sort_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_sort)
    # method-assign, assignment: replacing the bound (overloaded) method is the point, see above.
    p.parse_known_args = lambda args=None, namespace=None: (  # type: ignore[method-assign,assignment]
        argparse.Namespace(func=_cmd_sort, sort_argv=list(args or [])),
        [],
    )

    p = sub.add_parser("report", help="ranked owner report of a dump or show_stacks file")
    p.add_argument("input", metavar="INPUT", help="dump or show_stacks file; '-' for stdin; .gz/.xz/.zst")
    p.add_argument("--top", metavar="N", type=int, default=10, help="stacks shown (default 10)")
    p.add_argument(
        "--by", metavar="KEY", action="append", default=[], help="group-by view (repeatable; pollution, age)"
    )
    p.add_argument(
        "--older-than", metavar="DURATION", help="only allocations at least this old, e.g. 30s, 5m (dumps with ts)"
    )
    p.add_argument("--filter", metavar="EXPR", action="append", default=[], help="e.g. comm=bash, gfp=__GFP_COMP")
    p.add_argument("--json", metavar="FILE|-", help="write report JSON")
    p.add_argument("--csv", metavar="FILE", help="write per-stack CSV")
    p.add_argument("--folded", metavar="FILE", help="write flame-graph folded stacks (weighted by pages)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (docs/html.md)")
    p.add_argument("--stacks", metavar="FILE", help="same-boot show_stacks_handles file for a handle-mode dump (7.x)")
    p.add_argument("--build", metavar="DIR", help="kernel build dir: file:line and MAINTAINERS section per stack")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("diff", help="per-stack growth between two snapshots")
    p.add_argument("before", metavar="BEFORE")
    p.add_argument("after", metavar="AFTER")
    p.add_argument("--top", metavar="N", type=int, default=20, help="stacks shown (default 20)")
    p.add_argument("--json", metavar="FILE|-", help="write diff JSON")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (docs/html.md)")
    p.add_argument("--stacks", metavar="FILE", help="same-boot show_stacks_handles file for handle-mode dumps (7.x)")
    p.add_argument("--build", metavar="DIR", help="kernel build dir: file:line and MAINTAINERS section per stack")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("workloads", help="list the built-in workloads")
    p.set_defaults(func=_cmd_workloads)

    p = sub.add_parser("fragments", help="list the shipped kconfig fragments (--fragment NAME)")
    p.set_defaults(func=_cmd_fragments)

    p = sub.add_parser("profiles", help="list the shipped run profiles (--profile NAME)")
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser("cache", help="list the cache's entries (builds, sources, images…) or prune them")
    _cache_list_flags(p)
    p.set_defaults(func=_cmd_cache, cache_command="list")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="list|prune", parser_class=_Parser)
    _cache_list_flags(cache_sub.add_parser("list", help="one row per entry: kind, name, size, last used"), after=True)
    q = cache_sub.add_parser("prune", help="remove entries; one another pagelab is building is skipped")
    q.add_argument("--older-than", metavar="DURATION", help="only entries last used at least this long ago: 14d, 12h")
    # Its own dest: a default here would overwrite a --kind given before `prune` (the two are merged).
    q.add_argument(
        "--kind", metavar="KIND", dest="prune_kind", action="append", default=[], help="only this kind (repeatable)"
    )
    q.add_argument("--all", action="store_true", help="every kind but keys (host verdicts, tarballs included)")
    q.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    return parser


def _cache_list_flags(p: argparse.ArgumentParser, *, after: bool = False) -> None:
    """The listing's flags: ``pagelab cache`` alone lists, so they work before ``list`` and after it.

    After it, ``--json`` is set only when given (SUPPRESS: a default would overwrite ``cache --json list``), and
    ``--kind`` has its own dest, merged with the one before ``list`` like prune's.
    """
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if after else False, help="JSON on stdout")
    p.add_argument(
        "--kind",
        metavar="KIND",
        dest="list_kind" if after else "kind",
        action="append",
        default=[],
        help="only this kind",
    )


# -- subcommands (each owned by one stage) ---------------------------------------------------------
def _cmd_build(args: argparse.Namespace, ui: UI) -> int:
    import json

    from pagelab.kernel.build import BuildOptions, build_kernel

    result = build_kernel(BuildOptions.from_settings(settings.merged(settings.given(args))), ui)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        lines = [
            f"bzImage    {result.bzimage}",
            f"build_dir  {result.build_dir}",
            f"kernel     {result.kernel_version}  config sha256 {result.config_sha256[:16]}",
        ]
        if result.modules_dir:
            lines.append(f"modules    {result.modules_dir}")
        lines.append(f"{'cached' if result.cached else 'built'} in {result.seconds:.2f} s")
        for line in lines:
            ui.print(line, soft_wrap=True, markup=False)
    return 0


def _cmd_boot(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.guest.boot import boot, command_line

    # CMD's output is data: its bytes go straight to our stdout/stderr; the UI carries the chatter.
    values = settings.merged(settings.given(args))
    return boot(values, command_line(args.cmd), ui, sys.stdout.buffer, sys.stderr.buffer)


def _cmd_run(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.run.pipeline import run
    from pagelab.run.profiles import settings_from

    return run(settings_from(settings.given(args), args.profile), ui, out=args.out, json_out=args.json)


def _cmd_sort(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.pageowner import sort, sortopts

    try:
        opts = sortopts.parse_argv(args.sort_argv)
    except sortopts.HelpRequested:
        sys.stdout.write(sortopts.USAGE)
        return 0
    sort.run(opts, ui)
    return 0


def _cmd_report(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.pageowner.commands import ReportOptions, report

    opts = ReportOptions(
        input=args.input,
        top=args.top,
        by=args.by,
        filters=args.filter,
        json=args.json,
        csv=args.csv,
        folded=args.folded,
        html=args.html,
        stacks=args.stacks,
        build=args.build,
        older_than=args.older_than,
    )
    return report(opts, ui)


def _cmd_diff(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.pageowner.commands import DiffOptions, diff

    opts = DiffOptions(
        before=args.before, after=args.after, top=args.top, json=args.json, html=args.html, stacks=args.stacks
    )
    opts.build = args.build
    return diff(opts, ui)


def _cmd_workloads(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.run.workloads import render_catalogue

    render_catalogue(ui)
    return 0


def _cmd_fragments(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.kernel.fragments import render_catalogue

    render_catalogue(ui)
    return 0


def _cmd_profiles(args: argparse.Namespace, ui: UI) -> int:
    from pagelab.run.profiles import render_catalogue

    render_catalogue(ui)
    return 0


def _cmd_cache(args: argparse.Namespace, ui: UI) -> int:
    from pagelab import cachectl

    if args.cache_command == "prune":
        if args.json:
            raise UsageError("cache prune: --json is the listing's (prune has no JSON output); drop it")
        # `cache --kind K prune` and `cache prune --kind K` select the same.
        kinds = [*args.kind, *args.prune_kind]
        opts = cachectl.PruneOptions(kinds=kinds, older_than=args.older_than, all=args.all, dry_run=args.dry_run)
        return cachectl.prune(opts, ui)
    return cachectl.list_cache(ui, kinds=[*args.kind, *getattr(args, "list_kind", [])], as_json=args.json)


# -- entry point -----------------------------------------------------------------------------------
def _make_ui(args: argparse.Namespace) -> UI:
    """Human output goes to stderr when stdout carries data (``--json -``, ``--csv -``, ``--folded -``)."""
    to_stdout = [f"--{opt}" for opt in ("json", "csv", "folded") if getattr(args, opt, None) == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"{' and '.join(to_stdout)}: only one output can be '-' (stdout)")
    data_on_stdout = bool(to_stdout) or getattr(args, "json", None) is True
    return UI(plain=bool(getattr(args, "ci", False)), data_on_stdout=data_on_stdout)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ui = UI()
    try:
        args = build_parser().parse_args(argv)
        ui = _make_ui(args)
        return int(args.func(args, ui) or 0)
    except PagelabError as err:
        ui.error(str(err))
        return err.exit_code
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM where a stage made it unwind (pagelab.procs)
        from pagelab.procs import signal_of

        ui.error(str(err) or "interrupted")
        return 128 + signal_of(err)
    except BrokenPipeError:
        # `pagelab report … | head`: the reader left; not an error worth a traceback.
        return 0
    except Exception as err:  # a bug: one line and exit 4 (infrastructure), never exit 1 ("a finding")
        ui.error(f"internal error: {type(err).__name__}: {err} (a pagelab bug: please report it)")
        return 4
