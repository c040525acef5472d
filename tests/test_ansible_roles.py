"""The Ansible tree: ansible-lint and syntax checks, and the conventions of STYLE.md §10.

Role-prefixed variables, each typed and described in meta/argument_specs.yml with the same
default as defaults/main.yml; one task file per concern, each with its own tag and switch;
fully qualified module names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, tool

ANSIBLE = REPO / "ansible"
ROLES = sorted(p for p in (ANSIBLE / "roles").iterdir() if p.is_dir())
BIN = REPO / ".venv" / "bin"


def _env() -> dict[str, str]:
    return dict(
        os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}"
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_ansible_lint_production_profile_is_clean() -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--nocolor"],
        cwd=ANSIBLE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("playbook", ["provision-image.yml", "maintain.yml"])
def test_playbook_syntax(playbook: str) -> None:
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventories/example-city/hosts.yml",
            f"playbooks/{playbook}",
        ],
        cwd=ANSIBLE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_four_roles_exist() -> None:
    assert [r.name for r in ROLES] == ["edge_base", "edge_daemon", "edge_dot1x", "edge_hardening"]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_every_variable_is_prefixed_typed_and_described(role: Path) -> None:
    defaults: dict[str, Any] = _load(role / "defaults" / "main.yml")
    options: dict[str, Any] = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"][
        "options"
    ]
    assert set(defaults) == set(options), "defaults and argument_specs list different variables"
    for name, spec in options.items():
        assert name.startswith(role.name + "_"), f"{name} lacks the role prefix"
        assert spec.get("type") in {"bool", "str", "int", "list", "dict", "path"}, name
        assert spec.get("description"), f"{name} has no description"
        if "default" in spec:
            assert spec["default"] == defaults[name], f"{name}: argument_specs default differs"
        if spec["type"] == "list":
            assert "elements" in spec, f"{name}: list without element type"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_one_task_file_per_concern_with_tag_and_switch(role: Path) -> None:
    main: list[dict[str, Any]] = _load(role / "tasks" / "main.yml")
    files = {p.name for p in (role / "tasks").glob("*.yml")} - {"main.yml"}
    imported = set()
    for entry in main:
        target = entry["ansible.builtin.import_tasks"]
        imported.add(target)
        concern = target.removesuffix(".yml")
        assert f"{role.name}_{concern}" in entry["tags"], f"{target}: no concern tag"
        assert role.name in entry["tags"], f"{target}: no role tag"
        switch = f"{role.name}_{concern}_enabled"
        assert switch in _load(role / "defaults" / "main.yml"), f"{target}: no {switch} variable"
    assert imported == files, "every task file is imported from main.yml"


def _tasks(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            out += _tasks(item)
    elif isinstance(node, dict):
        out.append(node)
        for key in ("block", "rescue", "always", "tasks", "handlers"):
            if key in node:
                out += _tasks(node[key])
    return out


KEYWORDS = {
    "name",
    "when",
    "tags",
    "notify",
    "register",
    "loop",
    "loop_control",
    "vars",
    "block",
    "rescue",
    "always",
    "changed_when",
    "failed_when",
    "become",
    "hosts",
    "gather_facts",
    "roles",
    "tasks",
    "serial",
    "listen",
    "check_mode",
    "ignore_errors",
    "no_log",
}


def test_modules_are_fully_qualified() -> None:
    files = list((ANSIBLE / "roles").glob("*/tasks/*.yml")) + list(
        (ANSIBLE / "roles").glob("*/handlers/*.yml")
    )
    files += list((ANSIBLE / "playbooks").glob("*.yml"))
    for path in files:
        for task in _tasks(_load(path)):
            modules = [k for k in task if k not in KEYWORDS and k != "role"]
            for module in modules:
                assert module.count(".") >= 2, f"{path.name}: {module} is not fully qualified"


def test_the_watchdog_drop_in_renders_to_what_systemd_reads(tmp_path: Path) -> None:
    """edge_base's system.conf.d drop-in, rendered by Ansible with the role's defaults, read
    back by systemd's own tools: the manager's configuration (cat-config: system.conf and its
    drop-ins in their order) and its time-span parser. The built image is checked the same way
    (tests/test_image_amd64.py), and its QEMU boot reads the armed watchdog."""
    role = ANSIBLE / "roles" / "edge_base"
    drop_in = tmp_path / "root" / "etc" / "systemd" / "system.conf.d" / "50-edge-watchdog.conf"
    drop_in.parent.mkdir(parents=True)
    rendered = subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-e",
            f"@{role / 'defaults' / 'main.yml'}",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={role / 'templates' / 'watchdog.conf.j2'} dest={drop_in} mode=0644",
        ],
        cwd=ANSIBLE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    analyze = tool("systemd-analyze")
    shown = subprocess.run(
        [analyze, "cat-config", "systemd/system.conf", f"--root={tmp_path / 'root'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert str(drop_in) in shown.stdout
    section, settings = "", {}
    for line in (ln.strip() for ln in shown.stdout.splitlines()):
        if line.startswith("["):
            section = line
        elif section == "[Manager]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings[key] = value
    for key, micros in {"RuntimeWatchdogSec": 30_000_000, "RebootWatchdogSec": 600_000_000}.items():
        span = subprocess.run(
            [analyze, "timespan", settings[key]], capture_output=True, text=True, timeout=60
        )
        assert span.returncode == 0, span.stderr
        assert f"μs: {micros}\n" in span.stdout, (key, span.stdout)
