"""``edgectl`` imports only the sub-command it runs, and ``edgectl bench startup`` measures it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main as cli_main

#: Modules a run of another command must not pay for: the encoder, the vault, analytics and
#: every other sub-command's module.
HEAVY = ("av", "edge.vault.store", "edge.analytics.bridge", "edge.identity.enrolment")


def _modules_after(*argv: str) -> set[str]:
    """The modules loaded by one real ``edgectl`` run in a fresh interpreter."""
    code = (
        "import sys\n"
        "from edge.cli.main import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.__stderr__.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    line = done.stderr.rsplit("MODULES ", 1)[1]
    return set(line.split())


def test_version_imports_no_sub_command() -> None:
    loaded = _modules_after("--version")
    commands = {f"edge.cli.{m}" for m in cli_main.COMMAND_MODULES}
    assert not loaded & commands, sorted(loaded & commands)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_status_imports_only_its_own_module(tmp_path: Path) -> None:
    loaded = _modules_after("status", "--json", "--demo", "--data-dir", str(tmp_path))
    others = {f"edge.cli.{m}" for m in cli_main.COMMAND_MODULES} - {"edge.cli.status"}
    assert "edge.cli.status" in loaded
    assert not loaded & others, sorted(loaded & others)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_command_table_matches_the_commands_own_parsers() -> None:
    """The list ``edgectl --help`` shows without importing is the one the modules register."""
    full = cli_main.build_parser()
    [sub] = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    real = {c.dest: c.help for c in sub._choices_actions}
    assert real == {name: help_line for name, (_m, help_line) in cli_main.COMMANDS.items()}
    assert list(real) == list(cli_main.COMMANDS), "same order in --help"
    for name, (module, _help) in cli_main.COMMANDS.items():
        lazy = cli_main.build_parser(name)
        [lazy_sub] = [a for a in lazy._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = lazy_sub.choices
        # The chosen command's module registered its real parsers (with their description);
        # the others are one-line entries of the list.
        real_names = {n for n, (m, _h) in cli_main.COMMANDS.items() if m == module}
        for other, parser in parsers.items():
            assert (parser.description is not None) == (other in real_names), (name, other)


def test_bench_startup_prints_one_json_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli_main.main(["bench", "startup", "--json", "--repeat", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "startup"
    assert (
        0 < result["baseline_s"] < result["version_s"] and result["baseline_s"] < result["status_s"]
    )
    assert result["version_over_baseline_s"] == pytest.approx(
        result["version_s"] - result["baseline_s"], abs=1e-3
    )
    assert result["target_s"] == 0.3 and isinstance(result["within_target"], bool)
