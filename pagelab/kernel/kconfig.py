"""Kconfig: read fragments, merge them with the tree's own tools, verify every requested symbol landed.

Merging is ``scripts/kconfig/merge_config.sh -m`` followed by ``make olddefconfig`` (the kernel's
own tools, not a re-implementation). Verification compares the merged request with the final
``.config`` and, for each symbol that did not land, looks up why in the tree's Kconfig files:
the ``depends on`` (including enclosing ``if``/``menu``/``choice`` conditions) that is false, or
the ``select`` that forces a symbol the fragment turned off.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pagelab.errors import InputError, UsageError
from pagelab.procs import step_failed

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set\s*$")
#: A comment line that marks the next setting as wanted only where the tree has the symbol (renamed or
#: removed symbols, e.g. PROC_SYSCTL, which 7.x folded into SYSCTL): its absence is then a warning.
_IF_EXISTS = re.compile(r"^#\s*pagelab:\s*if-exists\b")
#: A comment line naming the oldest kernel a fragment's symbols exist in, e.g. allocation profiling (6.10).
_REQUIRES = re.compile(r"^#\s*pagelab:\s*requires Linux >= (\d+)\.(\d+)\s*$")


@dataclass(frozen=True)
class Setting:
    """One ``CONFIG_X=…`` (or ``# CONFIG_X is not set``, value ``n``) line of a fragment."""

    symbol: str  # without the CONFIG_ prefix
    value: str  # y, m, n, a number or a quoted string, as written
    source: str  # fragment path
    line: int
    if_exists: bool = False  # marked ``# pagelab: if-exists``: a tree without the symbol only warns


def parse_fragment(path: str | os.PathLike[str]) -> list[Setting]:
    """The settings of a fragment file, in order.

    Raises InputError (exit 2) naming the file and line for a missing file or a line that is
    neither a comment, blank, ``CONFIG_X=value`` nor ``# CONFIG_X is not set``.
    """
    name = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError(name, "fragment not found") from None
    except IsADirectoryError:
        raise InputError(name, "is a directory, expected a kconfig fragment file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(name, f"cannot read fragment ({err})") from None
    out: list[Setting] = []
    if_exists = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if _IF_EXISTS.match(line):
            if_exists = True
            continue
        if m := _UNSET.match(line):
            out.append(Setting(m.group(1), "n", name, lineno, if_exists))
            if_exists = False
        elif m := _SET.match(line):
            value = m.group(2).strip()
            if value == "":
                raise InputError(
                    name, f"CONFIG_{m.group(1)} has no value (expected y, m, n, a number or a string)", lineno
                )
            out.append(Setting(m.group(1), value, name, lineno, if_exists))
            if_exists = False
        elif line and not line.startswith("#"):
            raise InputError(name, f"expected `CONFIG_NAME=value` or `# CONFIG_NAME is not set`, got {raw!r}", lineno)
    return out


def check_versions(fragments: Sequence[str | os.PathLike[str]], version: str) -> None:
    """Raise UsageError when a fragment says ``# pagelab: requires Linux >= X.Y`` and the tree is older.

    Checked before configuring: olddefconfig would silently drop the symbols and verification would then
    blame a missing symbol instead of the kernel version.
    """
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        return
    have = (int(m.group(1)), int(m.group(2)))
    for frag in fragments:
        try:
            lines = Path(frag).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue  # parse_fragment reports unreadable fragments
        for lineno, line in enumerate(lines, 1):
            r = _REQUIRES.match(line.strip())
            if r and have < (int(r.group(1)), int(r.group(2))):
                raise UsageError(
                    f"--fragment {frag}:{lineno}: needs Linux >= {r.group(1)}.{r.group(2)}, "
                    f"the kernel source is {version}"
                )


def requested(fragments: Sequence[str | os.PathLike[str]]) -> dict[str, Setting]:
    """What the fragments ask for once merged: the last fragment that sets a symbol wins (as merge_config.sh)."""
    wanted: dict[str, Setting] = {}
    for frag in fragments:
        for s in parse_fragment(frag):
            wanted[s.symbol] = s
    return wanted


def parse_config(text: str) -> dict[str, str]:
    """A ``.config`` as ``{SYMBOL: value}``; ``# CONFIG_X is not set`` becomes ``n``."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        if m := _SET.match(raw):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(raw):
            values[m.group(1)] = "n"
    return values


# -- merging -------------------------------------------------------------------------------------
def make_base(tree: Path, objdir: Path, base: str, make_vars: Sequence[str], log: Path) -> Path:
    """Write the base ``.config`` into ``objdir`` (``tinyconfig``/``defconfig`` target, or a copy of a file).

    Raises InputError for an unreadable base file, BuildError when the kconfig target fails.
    """
    objdir.mkdir(parents=True, exist_ok=True)
    out = objdir / "pagelab-base.config"
    if base in ("tinyconfig", "defconfig"):
        run_make(tree, objdir, [base], make_vars, log)
        os.replace(objdir / ".config", out)
    else:
        try:
            text = Path(base).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(base, f"cannot read base config ({err})") from None
        if not parse_config(text):
            raise InputError(
                base, "not a kernel .config (no CONFIG_ lines); --base takes tinyconfig, defconfig or a file"
            )
        out.write_text(text, encoding="utf-8")
    return out


def merge(
    tree: Path,
    objdir: Path,
    base_file: Path,
    fragments: Sequence[str | os.PathLike[str]],
    make_vars: Sequence[str],
    log: Path,
) -> Path:
    """``merge_config.sh -m`` the fragments onto ``base_file`` in ``objdir``, then ``make olddefconfig``.

    Returns the final ``.config``. Raises BuildError when either step fails (the log has details).
    """
    cmd = [str(tree / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(objdir), str(base_file)]
    cmd += [str(Path(f).resolve()) for f in fragments]
    # merge_config.sh makes its temporary files in the current directory: never the (read-only) source.
    _run_logged(cmd, objdir, log, "merge_config.sh")
    run_make(tree, objdir, ["olddefconfig"], make_vars, log)
    return objdir / ".config"


def run_make(tree: Path, objdir: Path, targets: Sequence[str], make_vars: Sequence[str], log: Path) -> None:
    """Run a quick (kconfig) make target out of tree, output appended to ``log``. Raises BuildError on failure."""
    cmd = ["make", "-C", str(tree), f"O={objdir}", *make_vars, *targets]
    _run_logged(cmd, tree, log, f"make {' '.join(targets)}")


def kbuild_env() -> dict[str, str]:
    """The environment for make and merge_config.sh, without variables that would redirect their output.

    With KCONFIG_CONFIG or KBUILD_OUTPUT set by the user, Kconfig would write another file or directory
    than the one pagelab verifies and caches.
    """
    return {k: v for k, v in os.environ.items() if k not in ("KCONFIG_CONFIG", "KBUILD_OUTPUT")}


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(
            cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False, env=kbuild_env()
        )
    if proc.returncode != 0:
        raise step_failed(what, proc.returncode, log=log)


# -- the tree's Kconfig files --------------------------------------------------------------------
@dataclass
class SymbolDef:
    """One definition of a symbol in a Kconfig file (a symbol may be defined in several places)."""

    file: str
    line: int
    kind: str = ""  # bool, tristate, string, int, hex
    has_prompt: bool = False
    depends: list[str] = field(default_factory=list)  # own `depends on` and enclosing if/menu/choice


@dataclass
class KconfigIndex:
    """Symbols of a tree's Kconfig, with their dependencies and who selects them."""

    defs: dict[str, list[SymbolDef]] = field(default_factory=dict)
    selected_by: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # target -> [(selector, cond)]

    def exists(self, symbol: str) -> bool:
        return symbol in self.defs


_MACROS_RE = re.compile(r"\$\((\w+)\)")


def load_index(tree: Path, srcarch: str = "x86") -> KconfigIndex:
    """Parse the Kconfig files reachable from the top ``Kconfig`` (following ``source``) for ``srcarch``."""
    index = KconfigIndex()
    seen: set[Path] = set()
    _parse_file(tree, Path("Kconfig"), {"SRCARCH": srcarch, "ARCH": srcarch}, index, seen, [])
    return index


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines with backslash continuations joined, numbered by their first physical line."""
    pending = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = n
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        yield start, pending


def _indent(s: str) -> int:
    return len(s.expandtabs(8)) - len(s.expandtabs(8).lstrip())


def _parse_file(
    tree: Path, rel: Path, macros: Mapping[str, str], index: KconfigIndex, seen: set[Path], outer: list[str]
) -> None:
    path = tree / rel
    if path in seen or not path.is_file():
        return
    seen.add(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    conds = list(outer)  # stack of enclosing conditions (if / menu depends / choice depends)
    blocks: list[tuple[str, int]] = []  # (kind, number of conds pushed)
    current: SymbolDef | None = None
    current_sym = ""
    pending_menu_deps: list[str] | None = None  # the `depends on` of the menu/choice being opened
    help_indent: int | None = None
    in_help = False

    def close_entry() -> None:
        nonlocal current, pending_menu_deps
        if pending_menu_deps is not None:
            conds.extend(pending_menu_deps)
            blocks[-1] = (blocks[-1][0], len(pending_menu_deps))
            pending_menu_deps = None
        current = None

    for lineno, raw in _logical_lines(text):
        stripped = raw.strip()
        if in_help:
            if not stripped:
                continue
            if help_indent is None:
                help_indent = _indent(raw)
                continue
            if _indent(raw) >= help_indent:
                continue
            in_help = False
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        rest = rest.strip()
        if word in ("config", "menuconfig"):
            close_entry()
            current_sym = rest
            current = SymbolDef(str(rel), lineno, depends=list(conds))
            index.defs.setdefault(current_sym, []).append(current)
        elif word in ("menu", "choice"):
            close_entry()
            blocks.append((word, 0))
            pending_menu_deps = []
        elif word in ("endmenu", "endchoice", "endif"):
            close_entry()
            if blocks:
                _, pushed = blocks.pop()
                del conds[len(conds) - pushed :]
        elif word == "if":
            close_entry()
            conds.append(" ".join(rest.split()))
            blocks.append(("if", 1))
        elif word in ("source", "osource", "rsource", "orsource"):
            close_entry()
            target = _MACROS_RE.sub(lambda m: macros.get(m.group(1), m.group(0)), rest.strip('"'))
            if "$(" in target:
                continue
            base = rel.parent if word.startswith(("r", "or")) else Path()
            for hit in sorted(glob.glob(str(tree / base / target))) if "*" in target else [str(tree / base / target)]:
                _parse_file(tree, Path(os.path.relpath(hit, tree)), macros, index, seen, list(conds))
        elif word in ("comment", "mainmenu"):
            close_entry()
            pending_menu_deps = None
        elif word in ("help", "---help---"):
            in_help = True
            help_indent = None
        elif stripped.startswith("depends on"):
            expr = " ".join(stripped[len("depends on") :].split())
            if current is not None:
                current.depends.append(expr)
            elif pending_menu_deps is not None:
                pending_menu_deps.append(expr)
        elif current is not None:
            _attribute(current, current_sym, word, rest, index)
    close_entry()


def _attribute(sym: SymbolDef, name: str, word: str, rest: str, index: KconfigIndex) -> None:
    if word in ("bool", "tristate", "string", "int", "hex"):
        sym.kind = word
        sym.has_prompt = sym.has_prompt or rest.startswith('"')
    elif word in ("def_bool", "def_tristate"):
        sym.kind = word[4:]
    elif word == "prompt":
        sym.has_prompt = True
    elif word == "select":
        target, _, cond = rest.partition(" if ")
        index.selected_by.setdefault(target.strip(), []).append((name, cond.strip()))


# -- expressions ---------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(\|\||&&|!=|<=|>=|[!()=<>]|"[^"]*"|\'[^\']*\'|[A-Za-z0-9_.$-]+)')


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def tristate(value: str | None) -> int:
    """y=2, m=1, anything else (n, unset, not a tristate) = 0."""
    return {"y": 2, "m": 1}.get(value or "n", 0)


def evaluate(expr: str, config: Mapping[str, str]) -> int:
    """Evaluate a Kconfig expression against a config (tristate result: 0, 1 or 2). Unknown syntax is 2."""
    toks = _tokens(expr)
    pos = 0

    def atom() -> tuple[str, bool]:  # (value, is_symbol)
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok[0] in "\"'":
            return tok[1:-1], False
        if tok in ("y", "m", "n"):
            return tok, False
        value = config.get(tok, "n" if not tok[0].isdigit() else tok)
        # .config quotes strings; expressions compare the bare value.
        return (value[1:-1] if len(value) >= 2 and value[0] == '"' == value[-1] else value), True

    def primary() -> int:
        nonlocal pos
        if pos >= len(toks):
            return 2
        tok = toks[pos]
        if tok == "!":
            pos += 1
            return 2 - primary()
        if tok == "(":
            pos += 1
            v = disj()
            if pos < len(toks) and toks[pos] == ")":
                pos += 1
            return v
        left, _ = atom()
        if pos < len(toks) and toks[pos] in ("=", "!=", "<", ">", "<=", ">="):
            op = toks[pos]
            pos += 1
            right, _ = atom()
            return 2 if _compare(left, op, right) else 0
        return tristate(left)

    def conj() -> int:
        nonlocal pos
        v = primary()
        while pos < len(toks) and toks[pos] == "&&":
            pos += 1
            v = min(v, primary())
        return v

    def disj() -> int:
        nonlocal pos
        v = conj()
        while pos < len(toks) and toks[pos] == "||":
            pos += 1
            v = max(v, conj())
        return v

    try:
        return disj()
    except IndexError:
        return 2


def _compare(left: str, op: str, right: str) -> bool:
    def num(s: str) -> int | None:
        try:
            return int(s, 0)
        except ValueError:
            return None

    ln, rn = num(left), num(right)
    a: int | str = ln if ln is not None and rn is not None else left
    b: int | str = rn if ln is not None and rn is not None else right
    # operator: a and b are both ints or both strings (see above); mypy cannot relate the two.
    return {
        "=": a == b,
        "!=": a != b,
        "<": a < b,  # type: ignore[operator]  # both ints or both strs (above)
        ">": a > b,  # type: ignore[operator]  # both ints or both strs (above)
        "<=": a <= b,  # type: ignore[operator]  # both ints or both strs (above)
        ">=": a >= b,  # type: ignore[operator]  # both ints or both strs (above)
    }[op]


def symbols_in(expr: str) -> list[str]:
    """The symbols an expression mentions, in order, without literals."""
    out: list[str] = []
    for tok in _tokens(expr):
        if re.fullmatch(r"[A-Z][A-Za-z0-9_]*", tok) and tok not in ("y", "m", "n") and tok not in out:
            out.append(tok)
    return out


# -- verification --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    """A requested symbol whose final value differs from what a fragment asked."""

    setting: Setting
    got: str  # final value, "n" when unset or absent
    exists: bool
    reasons: tuple[str, ...] = ()  # why, from the Kconfig files: unmet depends, forcing selects, no prompt
    # False for "not set" asked of a symbol this tree does not have: the request holds (nothing can set
    # it), so it is only worth a warning; a fragment can then serve older trees too (SLUB_TINY is 6.2+).
    fatal: bool = True

    def explain(self) -> str:
        """One line: symbol, where it was asked, asked vs. got, and why."""
        s = self.setting
        where = f"{s.source}:{s.line}"
        if not self.exists and not self.fatal:
            why = "marked if-exists" if s.if_exists and s.value != "n" else "asked not set"
            return f"CONFIG_{s.symbol} ({where}): no such symbol in this kernel tree's Kconfig ({why}: ignored)"
        if not self.exists:
            return f"CONFIG_{s.symbol} ({where}): no such symbol in this kernel tree's Kconfig"
        why = "; ".join(self.reasons) if self.reasons else "olddefconfig changed it (no unmet dependency found)"
        return f"CONFIG_{s.symbol} ({where}): asked {_show(s.value)}, got {_show(self.got)} — {why}"


def _show(value: str) -> str:
    return "not set" if value == "n" else value


def _same(asked: str, got: str) -> bool:
    if asked == got:
        return True
    # Numbers may be written differently (0x10 vs 16) and still be the same value.
    try:
        return int(asked, 0) == int(got, 0)
    except ValueError:
        return False


def verify(wanted: Mapping[str, Setting], final: Mapping[str, str], index_loader: object = None) -> list[Mismatch]:
    """The requested symbols whose final value differs, each explained from the Kconfig files.

    Also lists (``fatal=False``) symbols asked "not set" that the tree does not have at all, and symbols
    marked ``# pagelab: if-exists`` that it does not have.

    ``index_loader`` is a zero-argument callable returning a KconfigIndex; it is only called when
    something did not land (parsing every Kconfig file takes a moment).
    """
    missed = [s for sym, s in wanted.items() if not _same(s.value, final.get(sym, "n"))]
    # "not set" is also what a misspelt symbol looks like: those absent from .config need the index.
    absent = [s for sym, s in wanted.items() if s.value == "n" and sym not in final]
    if not missed and not absent:
        return []
    index: KconfigIndex = index_loader() if callable(index_loader) else KconfigIndex()
    unknown_off = [s for s in absent if not index.exists(s.symbol)]
    out = []
    for s in sorted(missed + unknown_off, key=lambda s: (s.source, s.line)):
        got = final.get(s.symbol, "n")
        exists = index.exists(s.symbol) or s.symbol in final
        # A setting marked if-exists is for the trees that have the symbol: elsewhere it is a warning.
        fatal = s not in unknown_off and not (s.if_exists and not exists)
        out.append(Mismatch(s, got, exists, tuple(_reasons(s, got, final, index)), fatal=fatal))
    return out


def _reasons(s: Setting, got: str, final: Mapping[str, str], index: KconfigIndex) -> list[str]:
    reasons: list[str] = []
    defs = index.defs.get(s.symbol, [])
    asked_level = tristate(s.value)
    if asked_level > tristate(got) or (s.value not in ("y", "m", "n") and got == "n"):
        # Too low: a dependency is false, or the symbol cannot be set by hand.
        for d in defs:
            for expr in d.depends:
                level = evaluate(expr, final)
                if level < max(asked_level, 1):
                    vals = ", ".join(f"{sym}={_show(final.get(sym, 'n'))}" for sym in symbols_in(expr))
                    reasons.append(f"depends on {expr} [{vals}] ({d.file}:{d.line})")
        if not reasons and defs and not any(d.has_prompt for d in defs):
            reasons.append("it has no prompt: only a `select` or a default can set it")
        if not reasons and asked_level == 1 and final.get("MODULES", "n") != "y":
            reasons.append("m needs CONFIG_MODULES=y")
    if tristate(got) > asked_level:
        # Too high: something enabled selects it.
        for selector, cond in index.selected_by.get(s.symbol, []):
            if tristate(final.get(selector)) and (not cond or evaluate(cond, final)):
                reasons.append(f"selected by {selector}={final.get(selector)}" + (f" if {cond}" if cond else ""))
    return reasons


def format_mismatches(mismatches: Sequence[Mismatch], config: Path) -> str:
    """The message for a config that did not verify: a header line, then one line per symbol."""
    head = f"{len(mismatches)} requested kconfig symbol(s) did not land in {config}:"
    return "\n".join([head, *("  " + m.explain() for m in mismatches)])
