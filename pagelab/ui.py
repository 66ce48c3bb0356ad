"""The one object through which everything below cli.py talks to the user.

Human output (progress, tables, warnings) goes to stderr when stdout carries data
(``--json -``), otherwise to stdout. ``plain`` (``--ci``) means no colour and no live progress.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text


class _Console(Console):
    """A rich Console that lets a closed pipe (``pagelab report … | head``) end the command quietly.

    rich's own handler raises SystemExit(1), which would read as exit 1, "growth found".
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError):
            os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())
        raise BrokenPipeError


class UI:
    """Console wrapper handed down the pipeline. ``out`` is for reports, ``err`` for chatter."""

    def __init__(self, *, plain: bool = False, data_on_stdout: bool = False, quiet: bool = False):
        self.plain = plain
        self.quiet = quiet
        # markup=False: tables and messages carry dump text (comm, symbols, module names) that rich
        # would otherwise parse as markup: a guest process named "[/x]" raised MarkupError, "[red]x"
        # lost its brackets. Styles are given as Text styles, never as markup inside strings.
        kw: dict[str, Any] = {"highlight": False, "markup": False}
        if plain:
            kw.update(no_color=True, force_terminal=False, color_system=None)
        self.err: Console = _Console(stderr=True, **kw)
        # Reports go to stderr when stdout is reserved for JSON.
        self.out: Console = self.err if data_on_stdout else _Console(**kw)

    # -- messages -----------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False, soft_wrap=True)

    def step(self, message: str) -> None:
        """A pipeline step starting ("booting …"): a dim line, timestamped in plain mode."""
        if self.quiet:
            return
        if self.plain:
            self.err.print(f"[{time.strftime('%H:%M:%S')}] {message}", markup=False, soft_wrap=True)
        else:
            self.err.print(Text.assemble(("›", "dim"), " ", message), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", style=None if self.plain else "yellow", markup=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"error: {message}", style=None if self.plain else "bold red", markup=False, soft_wrap=True)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print a report object (rich renderable or text) on the report console."""
        self.out.print(*objects, **kwargs)

    def listing(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], note: str) -> None:
        """A catalogue of what pagelab ships (``workloads``, ``fragments``, ``profiles``): a table, then a note.

        The first column is a name (never wrapped), the second a description (folded); any others as they come.
        """
        table = Table(
            title=title,
            box=box.ASCII if self.plain else box.SIMPLE_HEAD,
            title_justify="left",
            show_edge=not self.plain,
        )
        for i, column in enumerate(columns):
            table.add_column(column, no_wrap=i == 0, overflow="fold" if i == 1 else "ellipsis")
        for row in rows:
            table.add_row(*row)
        self.print(table)
        self.print(note)

    # -- progress ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        """A live progress bar (nothing live in plain/quiet mode): ``task.update(completed=…)``."""
        if self.plain or self.quiet or not self.err.is_terminal:
            task = ProgressTask(None, None)
            yield task
            return
        bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        )
        with bar:
            tid = bar.add_task(description, total=total)
            yield ProgressTask(bar, tid)


class ProgressTask:
    """Handle to one progress bar; a no-op when progress is not shown."""

    def __init__(self, bar: Progress | None, task_id: Any) -> None:
        self._bar = bar
        self._id = task_id

    def update(self, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._id, **kwargs)


def default_ui() -> UI:
    """A UI for library use outside the CLI (tests, scripts)."""
    return UI(plain=not sys.stderr.isatty())
