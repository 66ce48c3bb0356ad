"""One exception hierarchy; cli.py maps each class to its exit code (docs/formats.md, "Exit codes")."""

from __future__ import annotations


class PagelabError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; str(err) is the one-line message."""

    exit_code = 4


class UsageError(PagelabError):
    """A bad command line or option value (exit 2)."""

    exit_code = 2


class InputError(PagelabError):
    """Input that is not what was expected: names the file, the line and what was expected (exit 2)."""

    exit_code = 2

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.detail = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class GuestCrash(PagelabError):
    """The guest kernel crashed: panic, oops, BUG, WARNING with panic_on_warn (exit 3)."""

    exit_code = 3

    def __init__(self, kind: str, title: str, excerpt: str = "") -> None:
        self.kind = kind
        self.title = title
        self.excerpt = excerpt
        super().__init__(f"guest kernel crashed ({kind}): {title}")


class InfraError(PagelabError):
    """Infrastructure failure: QEMU would not start, boot timeout, SSH lost (exit 4)."""

    exit_code = 4


class BuildError(InfraError):
    """The kernel (or module, or image) build failed, or its config did not verify (exit 4)."""
