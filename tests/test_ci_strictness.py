"""Under CI=true a test that lacks a tool, root or a module fails; elsewhere it skips.

Judged by a real pytest run of a small suite that uses tests/conftest.py as every test file
here does, once with CI=true and once without.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PROBE = """\
import pytest

from tests.conftest import not_applicable, require_module, tool


def test_missing_tool():
    tool("edge-no-such-tool")


def test_missing_module():
    require_module("edge_no_such_module")


@pytest.mark.skipif(True, reason="gizmo missing")
def test_skipif_marker():
    pass


def test_plain_skip():
    pytest.skip("no time today")


def test_not_applicable():
    not_applicable("this machine has the gizmo; hw-tests cover it")


def test_passes():
    tool("sh")
"""


def _outcomes(tmp: Path, ci: str | None) -> dict[str, str]:
    suite = tmp / f"suite-{ci}"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    # The same hooks as tests/: importing them into a conftest registers them.
    (suite / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    (suite / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", str(suite)],
        cwd=suite, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = dict(re.findall(r"::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR)", result.stdout))
    assert found, result.stdout + result.stderr
    return found


def test_skips_become_failures_under_ci(tmp_path: Path) -> None:
    assert _outcomes(tmp_path, "true") == {
        "test_missing_tool": "FAILED",
        "test_missing_module": "FAILED",
        "test_skipif_marker": "ERROR",  # a skipif acts at set-up: an error, as red as a failure
        "test_plain_skip": "FAILED",
        "test_not_applicable": "SKIPPED",
        "test_passes": "PASSED",
    }


@pytest.mark.parametrize("ci", [None, "false"])
def test_skips_stay_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    assert _outcomes(tmp_path, ci) == {
        "test_missing_tool": "SKIPPED",
        "test_missing_module": "SKIPPED",
        "test_skipif_marker": "SKIPPED",
        "test_plain_skip": "SKIPPED",
        "test_not_applicable": "SKIPPED",
        "test_passes": "PASSED",
    }


def test_hw_tests_keep_skipping_under_ci() -> None:
    """hw-tests/ run on a real unit only: elsewhere, CI included, they skip with their reason."""
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(REPO / "hw-tests")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "skipped" in result.stdout and "failed" not in result.stdout
