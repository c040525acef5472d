"""Help for the three command lines (``edgectl``, ``edged``, ``edge-csu``) from their own parsers.

Every command and sub-command is built with :func:`add_command`: a one-line ``help`` for its
parent's list, a ``description`` for its own page and at least one example. The manual pages
and the bash completion are generated from the same parsers (:func:`manpage`,
:func:`bash_completion`), on the unit by the ``edge_daemon`` role (``python -m edge.clihelp``),
so they can never describe another version than the one installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .fsutil import write_atomic

__all__ = [
    "EXAMPLES_HEADING",
    "PROGRAMS",
    "HelpFormatter",
    "Program",
    "add_command",
    "bash_completion",
    "examples",
    "install",
    "manpage",
    "walk",
]

#: The first line of every examples epilog; the man-page generator looks for it.
EXAMPLES_HEADING = "examples:"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own layout, except that the examples epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES_HEADING):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*pairs: tuple[str, str]) -> str:
    """An examples epilog: each command line with what it does under it."""
    lines = [EXAMPLES_HEADING]
    for command, what in pairs:
        lines.append(f"  {command}")
        lines.append(f"      {what}")
    return "\n".join(lines)


def add_command(
    sub: Any, name: str, *, help: str, description: str, example: list[tuple[str, str]]
) -> argparse.ArgumentParser:
    """A sub-command parser with its one-line ``help`` (in the parent's list), a ``description``
    for its own page and at least one ``(command line, what it does)`` example."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples(*example),
        formatter_class=HelpFormatter,
    )
    return parser


@dataclass(frozen=True)
class Program:
    """One installed command line: its name, manual section and parser factory."""

    name: str
    section: int
    module: str

    def installed(self) -> bool:
        """Whether this program's package is installed here (a unit has no ``edge.csu``)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def parser(self) -> argparse.ArgumentParser:
        build: Callable[[], argparse.ArgumentParser] = importlib.import_module(
            self.module
        ).build_parser
        return build()


PROGRAMS = (
    Program("edgectl", 1, "edge.cli.main"),
    Program("edge-csu", 1, "edge.csu.main"),
    Program("edged", 8, "edge.app.daemon"),
)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path (``()`` for the program itself)."""
    yield path, parser
    sub = _subparsers(parser)
    if sub is not None:
        for name, child in sub.choices.items():
            yield from walk(child, (*path, name))


def _command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = _subparsers(parser)
    if sub is None:
        return {}
    return {a.dest: a.help or "" for a in sub._choices_actions}


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(invocation, help) of every argument of one parser, as ``--help`` shows them."""
    formatter = parser._get_formatter()
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        invocation = formatter._format_action_invocation(action)
        out.append((invocation, formatter._expand_help(action) if action.help else ""))
    return out


def _example_lines(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    if not epilog.startswith(EXAMPLES_HEADING):
        return []
    return epilog.splitlines()[1:]


# -- manual pages ----------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if c.isascii() else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def manpage(program: Program, parser: argparse.ArgumentParser | None = None) -> str:
    """The roff manual page of one program: its options, then every command with its
    description, usage, options and examples, in the order ``--help`` lists them."""
    parser = parser or program.parser()
    title = program.name.upper()
    lines = [
        f'.TH "{title}" "{program.section}" "" "edge {__version__}" "Edge unit manual"',
        ".SH NAME",
        f"{_roff(program.name)} \\- {_roff(_first_sentence(parser.description or ''))}",
    ]
    for path, node in walk(parser):
        if path:
            lines.append(f'.SH "{_roff(" ".join((program.name, *path)).upper())}"')
        lines.append(".SS SYNOPSIS" if path else ".SH SYNOPSIS")
        # argparse wraps the usage for a terminal; man fills it again to the page's width.
        lines.append(_roff(" ".join(node.format_usage().removeprefix("usage: ").split())))
        lines.append(".SS DESCRIPTION" if path else ".SH DESCRIPTION")
        lines.append(_roff(node.description or ""))
        commands = _command_help(node)
        if commands:
            lines.append(".SS COMMANDS")
            for name, text in commands.items():
                lines += [".TP", f".B {_roff(name)}", _roff(text)]
        options = _options(node)
        if options:
            lines.append(".SS OPTIONS")
            for invocation, text in options:
                lines += [".TP", f".B {_roff(invocation)}", _roff(text)]
        example = _example_lines(node)
        if example:
            lines += [".SS EXAMPLES", ".nf", _roff("\n".join(example)), ".fi"]
    others = [p.name for p in PROGRAMS if p.name != program.name]
    lines += [
        '.SH "SEE ALSO"',
        ", ".join(f"\\fB{_roff(p.name)}\\fR({p.section})" for p in PROGRAMS if p.name in others),
        ".PP",
        "/opt/edge/share/doc/OPERATIONS.md",
    ]
    return "\n".join(lines) + "\n"


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?\.)(\s|$)", " ".join(text.split()))
    return (match.group(1) if match else text).rstrip(".")


# -- bash completion -------------------------------------------------------------------------


def _takes_path(action: argparse.Action) -> bool:
    return action.type is Path or (isinstance(action.type, type) and issubclass(action.type, Path))


def _bash_words(words: Sequence[str]) -> str:
    return " ".join(words).replace("'", "")


def bash_completion(program: Program, parser: argparse.ArgumentParser | None = None) -> str:
    """A bash completion script: sub-command names, the options of the command being typed,
    the choices of an option that has some and file names where a path is expected."""
    parser = parser or program.parser()
    fn = "_" + re.sub(r"\W", "_", program.name)
    commands: dict[str, str] = {}
    options: dict[str, str] = {}
    paths: dict[str, str] = {}
    values: dict[str, str] = {}
    choices: dict[str, str] = {}
    for path, node in walk(parser):
        key = "." + " ".join(path)  # bash refuses an empty key: the program itself is "."
        sub = _subparsers(node)
        if sub is not None:
            commands[key] = _bash_words(list(sub.choices))
        flags: list[str] = []
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
                continue
            flags += action.option_strings
            if action.nargs == 0:
                continue
            for flag in action.option_strings:
                values[f"{key}|{flag}"] = "1"
                if action.choices:
                    choices[f"{key}|{flag}"] = _bash_words([str(c) for c in action.choices])
                elif _takes_path(action):
                    paths[f"{key}|{flag}"] = "1"
        options[key] = _bash_words(flags)

    def table(name: str, data: dict[str, str]) -> str:
        body = "".join(f"\n    ['{k}']='{v}'" for k, v in sorted(data.items()))
        return f"declare -gA {fn}_{name}=({body}\n)"

    return f"""\
# bash completion for {program.name} {__version__}, generated from its parser by edge.clihelp
{table("commands", commands)}
{table("options", options)}
{table("values", values)}
{table("paths", paths)}
{table("choices", choices)}

{fn}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} path="" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ " ${{{fn}_commands[.$path]}} " == *" $word "* ]]; then
            path="${{path:+$path }}$word"
        fi
    done
    COMPREPLY=()
    if [[ -n ${{{fn}_values[.$path|$prev]}} ]]; then
        if [[ -n ${{{fn}_choices[.$path|$prev]}} ]]; then
            mapfile -t COMPREPLY < <(compgen -W "${{{fn}_choices[.$path|$prev]}}" -- "$cur")
        elif [[ -n ${{{fn}_paths[.$path|$prev]}} ]]; then
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "${{{fn}_options[.$path]}}" -- "$cur")
    elif [[ -n ${{{fn}_commands[.$path]}} ]]; then
        mapfile -t COMPREPLY < <(compgen -W "${{{fn}_commands[.$path]}}" -- "$cur")
    else
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
}}
complete -F {fn} {program.name}
"""


# -- installation ----------------------------------------------------------------------------


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_atomic(path, text.encode("utf-8"), mode=0o644, make_parents=True)
    return True


def install(man_dir: Path, completion_dir: Path) -> list[Path]:
    """Write every program's manual page (``man_dir/manN/NAME.N``) and completion script
    (``completion_dir/NAME``); only files whose text changed are rewritten and returned, so
    provisioning stays idempotent."""
    written = []
    for program in PROGRAMS:
        if not program.installed():
            continue  # edge-csu is a separate distribution, never installed on a unit
        parser = program.parser()
        page = man_dir / f"man{program.section}" / f"{program.name}.{program.section}"
        for path, text in (
            (page, manpage(program, parser)),
            (completion_dir / program.name, bash_completion(program, parser)),
        ):
            if _write_if_changed(path, text):
                written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge.clihelp",
        description="Write the manual pages and bash completion of edgectl, edged and "
        "edge-csu, generated from their parsers. Prints each file it changed.",
        epilog=examples(
            (
                "python -m edge.clihelp --man-dir /usr/local/share/man "
                "--completion-dir /usr/share/bash-completion/completions",
                "what the edge_daemon role runs on the unit",
            ),
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--man-dir", type=Path, required=True, help="manual root (pages go in its manN/)"
    )
    parser.add_argument(
        "--completion-dir",
        type=Path,
        required=True,
        help="bash-completion directory (one file per program)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in install(args.man_dir, args.completion_dir):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
