"""Every command of edgectl, edged and edge-csu explains itself: ``--help``, man pages, completion.

The parsers are walked as they are built at run time; the manual pages are rendered by the real
``man``/``groff`` and the completion scripts run in a real bash."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edge.clihelp import EXAMPLES_HEADING, PROGRAMS, Program, install, walk

from .conftest import tool


def _name(program: Program) -> str:
    return program.name


def _problems(program: Program) -> list[str]:
    out: list[str] = []
    for path, parser in walk(program.parser()):
        name = " ".join((program.name, *path))
        if not (parser.description or "").strip():
            out.append(f"{name}: no description")
        epilog = parser.epilog or ""
        examples = [
            line.strip()
            for line in epilog.splitlines()[1:]
            if line.strip().startswith(program.name)
        ]
        if not epilog.startswith(EXAMPLES_HEADING) or not examples:
            out.append(f"{name}: no example")
        elif not any(e.split()[: len(path) + 1] == name.split() for e in examples):
            out.append(f"{name}: no example of this command itself: {examples}")
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        out.append(f"{name} {choice.dest}: no one-line help")
            elif not action.help:
                what = "/".join(action.option_strings) or action.dest
                out.append(f"{name}: {what} has no help")
    return out


@pytest.mark.parametrize("program", PROGRAMS, ids=_name)
def test_every_command_has_a_description_an_example_and_help_on_every_argument(
    program: Program,
) -> None:
    assert _problems(program) == []


@pytest.mark.parametrize("program", PROGRAMS, ids=_name)
def test_help_pages_show_the_examples_as_written(program: Program) -> None:
    """``--help`` of a real process keeps the examples one per line (argparse would fold them)."""
    for path, parser in list(walk(program.parser()))[:4]:
        result = subprocess.run(
            [sys.executable, "-m", program.module, *path, "--help"],
            capture_output=True,
            text=True,
            check=False,
            env=os.environ | {"COLUMNS": "80"},
        )
        assert result.returncode == 0, result.stderr
        for line in (parser.epilog or "").splitlines()[1:]:
            assert line in result.stdout.splitlines(), f"{path}: {line!r} folded"
        prose = [line for line in result.stdout.splitlines() if program.name not in line]
        assert all(len(line) <= 80 for line in prose), "help fits an 80-column terminal"


def test_manual_pages_render_without_warnings_and_name_every_command(tmp_path: Path) -> None:
    groff = tool("groff")
    man = tool("man")
    written = install(tmp_path / "man", tmp_path / "completions")
    assert {p.name for p in written} >= {"edgectl.1", "edge-csu.1", "edged.8"}
    for program in PROGRAMS:
        page = tmp_path / "man" / f"man{program.section}" / f"{program.name}.{program.section}"
        check = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0 and check.stderr == "", check.stderr
        shown = subprocess.run(
            [man, "-l", str(page)],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "LANG": "C.UTF-8"},
        ).stdout
        assert shown.startswith(program.name.upper()), shown[:200]
        for path, parser in walk(program.parser()):
            if path:
                assert " ".join((program.name, *path)).upper() in shown, path
            for line in (parser.epilog or "").splitlines()[1:2]:
                assert line.strip() in shown, line
    # Generated again from the same parsers: nothing to rewrite (the role stays idempotent).
    assert install(tmp_path / "man", tmp_path / "completions") == []


def _complete(script: Path, program: str, line: str) -> list[str]:
    """What bash offers after ``line`` (the last word is the one being completed)."""
    words = line.split(" ")
    driver = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(json.dumps(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"_{program.replace('-', '_')}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [tool("bash"), "--norc", "--noprofile", "-c", driver],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completion_offers_commands_options_choices_and_files(tmp_path: Path) -> None:
    install(tmp_path / "man", tmp_path / "completions")
    comp = tmp_path / "completions"
    assert "status" in _complete(comp / "edgectl", "edgectl", "edgectl st")
    assert _complete(comp / "edgectl", "edgectl", "edgectl config ") == ["check", "show", "apply"]
    assert "--watch" in _complete(comp / "edgectl", "edgectl", "edgectl status --w")
    assert "--watch" not in _complete(comp / "edgectl", "edgectl", "edgectl diag --")
    (tmp_path / "edge.toml").write_text("")
    assert _complete(comp / "edgectl", "edgectl", f"edgectl status --config {tmp_path}/edge.t") == [
        f"{tmp_path}/edge.toml"
    ]
    assert "serve" in _complete(comp / "edge-csu", "edge-csu", "edge-csu ")
    reasons = _complete(comp / "edge-csu", "edge-csu", "edge-csu ca revoke /srv/ca 3f --reason k")
    assert reasons == ["key_compromise"]
    assert "--config" in _complete(comp / "edged", "edged", "edged --c")


def test_the_role_command_writes_the_pages_once(tmp_path: Path) -> None:
    """The edge_daemon role's own command line, run twice as provisioning would: the first run
    writes every file (and says so: the task reports "changed"), the second writes nothing."""
    import yaml

    role = Path(__file__).resolve().parent.parent / "ansible" / "roles" / "edge_daemon"
    [task] = yaml.safe_load((role / "tasks" / "help.yml").read_text())
    cmd = task["ansible.builtin.command"]["cmd"]
    values = {
        "edge_daemon_venv": str(Path(sys.executable).parent.parent),
        "edge_daemon_help_man_dir": str(tmp_path / "man"),
        "edge_daemon_help_completion_dir": str(tmp_path / "completions"),
    }
    for name, value in values.items():
        cmd = cmd.replace("{{ " + name + " }}", value)
    assert "{{" not in cmd, cmd
    argv = shlex.split(cmd)
    argv[0] = sys.executable  # the venv's python, as the role runs it
    first = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert len(first.stdout.splitlines()) == 2 * len(PROGRAMS), first.stdout
    assert (tmp_path / "man" / "man8" / "edged.8").is_file()
    assert (tmp_path / "completions" / "edge-csu").is_file()
    again = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert again.stdout == "", "a second provisioning run must change nothing"


def test_json_for_people_keeps_accents(tmp_path: Path, data_dir: Path) -> None:
    """`config show` is read by people: a mask named in French is printed as written."""
    from .daemon_util import write_config

    config = write_config(tmp_path / "edge.toml", data_dir)
    config.write_text(config.read_text().replace('name = "window"', 'name = "fenêtre côté rue"'))
    shown = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "config", "show", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"fenêtre côté rue"' in shown and "\\u00" not in shown
    assert json.loads(shown)["config"]["cameras"][0]["privacy_masks"][0]["name"] == (
        "fenêtre côté rue"
    )


@pytest.mark.parametrize("program", PROGRAMS, ids=_name)
def test_every_example_is_accepted_by_the_parser(program: Program) -> None:
    """A technician copies an example: it must not end in a usage error."""
    parser = program.parser()
    refused = []
    for path, node in walk(parser):
        for line in (node.epilog or "").splitlines()[1:]:
            if not line.strip().startswith(program.name + " "):
                continue  # an explanation line, or another tool (systemctl)
            words = shlex.split(line.strip())
            for stop in ("|", "&&", "<", ">"):
                words = words[: words.index(stop)] if stop in words else words
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                refused.append(f"{' '.join(path)}: {line.strip()}")
    assert refused == []
