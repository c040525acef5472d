"""The task guides and the troubleshooting table quote the tools; these tests keep them true.

A message reworded in the code, a status finding added without a line in the maintenance guide,
or an exit status renumbered breaks a test here, not a technician's night in front of a cabinet.
Messages are compared as templates: every value a message interpolates at run time is written
``…`` in the docs and in the templates read from the source (so ``camera {cid} delivers`` and
``camera … delivers`` are the same text).
"""

from __future__ import annotations

import argparse
import ast
import re
import textwrap
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = ("guide-installer.md", "guide-maintenance.md", "guide-csu-operator.md")
TROUBLESHOOTING = DOCS / "TROUBLESHOOTING.md"


def render(node: ast.expr) -> str:
    """The text of a string expression, with every run-time value written ``…``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "…"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return render(node.left) + render(node.right)
    if isinstance(node, ast.IfExp):  # `text if level else ""`: the text is what is shown
        return render(node.body)
    return "…"


def _is_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, ast.Add) and (_is_text(node.left) or _is_text(node.right))
    return isinstance(node, ast.JoinedStr)


@cache
def templates() -> tuple[str, ...]:
    """Every string the product's code can print, as a template."""
    out: set[str] = set()
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.expr) and _is_text(node):
                # Logging's %-placeholders are run-time values as well.
                out.add(re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdfrx]", "…", render(node)))
    return tuple(out)


def _pieces(message: str) -> list[str]:
    return [p for p in (part.strip() for part in message.split("…")) if p]


def in_code(message: str) -> bool:
    """True when one string of the code holds every literal piece of ``message``, in order."""
    pieces = _pieces(message)
    for text in templates():
        at = 0
        for piece in pieces:
            at = text.find(piece, at)
            if at < 0:
                break
            at += len(piece)
        else:
            return True
    return False


def _table_messages() -> list[str]:
    """The messages quoted in the first column of the troubleshooting tables."""
    found: list[str] = []
    for line in TROUBLESHOOTING.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ", 1)[0]
        found.extend(re.findall(r"`([^`]+)`", first_cell))
    return found


def test_troubleshooting_table_quotes_messages() -> None:
    messages = _table_messages()
    assert len(messages) >= 40, "the table lost its rows"


@pytest.mark.parametrize("message", _table_messages())
def test_each_quoted_message_is_still_printed_by_the_code(message: str) -> None:
    # A reworded message must be reworded in the table too, where technicians look it up.
    assert sum(len(p) for p in _pieces(message)) >= 12, f"too little to look up: {message!r}"
    assert in_code(message), f"the code no longer prints: {message!r}"


def test_exit_statuses_in_the_table_are_the_codes() -> None:
    from edge.app import daemon
    from edge.cli import entry
    from edge.cli import vault_cmd as edgectl_vault
    from edge.csu import vault_cmd as csu_vault

    codes = {
        "2": 2,
        "3": edgectl_vault.EXIT_PARTIAL,
        "70": daemon.EX_SOFTWARE,
        "73": daemon.EX_CANTCREAT,
        "78": daemon.EX_CONFIG,
        "130": entry.EXIT_INTERRUPTED,
        "141": entry.EXIT_BROKEN_PIPE,
    }
    assert csu_vault.EXIT_PARTIAL == edgectl_vault.EXIT_PARTIAL
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    for shown, value in codes.items():
        assert shown == str(value)
        assert re.search(rf"^\| \*\*{shown}\*\* \|", text, re.M), f"exit status {shown} missing"


def _diagnostic_problems() -> list[tuple[str, str]]:
    """(what the guide must quote, where) for every finding of edgectl status/diag that is a
    problem: its cause as a template (each value a variable cause may take), or its status
    line when the cause is all run-time text."""
    path = ROOT / "edge" / "app" / "diagnostics.py"
    out: list[tuple[str, str]] = []
    for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(func, ast.FunctionDef):
            continue
        assigned: dict[str, list[str]] = {}
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and _is_text(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(render(node.value))
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Finding"):
                continue
            level = node.args[1]
            if isinstance(level, ast.Attribute) and level.attr in ("OK", "NA"):
                continue
            summary, cause = node.args[2], node.args[3]
            causes = (
                assigned.get(cause.id, ["…"]) if isinstance(cause, ast.Name) else [render(cause)]
            )
            for text in causes:
                quote = text if sum(len(p) for p in _pieces(text)) >= 12 else render(summary)
                out.append((quote, f"diagnostics.py:{node.lineno}"))
    return out


def test_every_status_problem_is_explained_in_the_maintenance_guide() -> None:
    problems = _diagnostic_problems()
    assert len(problems) >= 20
    guide = (DOCS / "guide-maintenance.md").read_text(encoding="utf-8")
    missing = [f"{where}: {quote!r}" for quote, where in problems if f"`{quote}`" not in guide]
    assert not missing, "docs/guide-maintenance.md lacks these status findings:\n" + "\n".join(
        missing
    )


def test_the_readme_and_operations_link_the_guides() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    operations = (DOCS / "OPERATIONS.md").read_text(encoding="utf-8")
    for name in (*GUIDES, "TROUBLESHOOTING.md"):
        assert (DOCS / name).is_file()
        assert f"(docs/{name})" in readme, name
        assert f"({name})" in operations, name


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", text, re.M)
    }


def test_the_guides_link_only_to_what_exists() -> None:
    for name in (*GUIDES, "TROUBLESHOOTING.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", text):
            page = DOCS / (target or name)
            assert page.exists(), f"{name} links to {target}, which does not exist"
            if anchor:
                found = _anchors(page.read_text(encoding="utf-8"))
                assert anchor in found, f"{name} links to {target}#{anchor}: no such heading"


def _parser(tool: str) -> argparse.ArgumentParser:
    if tool == "edgectl":
        from edge.cli.main import build_parser as edgectl_parser

        return edgectl_parser()
    from edge.csu.main import build_parser as csu_parser

    return csu_parser()


def _subparser(
    parser: argparse.ArgumentParser, words: list[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """Follow the sub-command words of a command line; return the last parser and the rest."""
    while words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or words[0] not in actions[0].choices:
            break
        parser = actions[0].choices[words[0]]
        words = words[1:]
    return parser, words


def _documented_commands() -> list[tuple[str, str]]:
    """(guide, command line) for every edgectl / edge-csu command in the guides: the lines of
    their shell blocks and the commands quoted in the text."""
    out: list[tuple[str, str]] = []
    for name in (*GUIDES, "TROUBLESHOOTING.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        lines: list[str] = []
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            lines.extend(block.replace("\\\n", " ").splitlines())
        lines.extend(re.findall(r"`((?:edgectl|edge-csu) [^`]+)`", text))
        for line in lines:
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith(("edgectl ", "edge-csu ")):
                    out.append((name, part))
    return out


def test_the_guides_run_real_commands() -> None:
    commands = _documented_commands()
    assert len(commands) >= 30
    for guide, line in commands:
        tool, *words = line.split()
        parser, rest = _subparser(_parser(tool), words)
        nested = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        assert not nested, f"{guide}: unknown or missing sub-command in {line!r}"
        known = {s for action in parser._actions for s in action.option_strings}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=", 1)[0] in known, f"{guide}: {line!r}: no option {word}"


def test_the_csu_guide_example_configuration_is_valid(tmp_path: Path) -> None:
    from edge.csu.receiver import settings as serve_config

    text = (DOCS / "guide-csu-operator.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(\s*storage_dir.*?)```", text, re.S)
    assert block is not None
    path = tmp_path / "csu.toml"
    path.write_text(textwrap.dedent(block.group(1)), encoding="utf-8")
    cfg = serve_config.load(path)
    assert cfg.mqtt.enabled and cfg.tls.crl_file == tmp_path / "crl.pem"
