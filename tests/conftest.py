"""Shared test helpers: paths, tool look-ups, root detection, and the one rule on skipping.

A developer's machine may lack a tool, root or an optional module: the test that needs it skips
and says why. Under ``CI=true`` (CI sets it; so does ``.ci/run``) the same test FAILS instead,
so a broken set-up cannot give a green run. Every skip goes through this file: the helpers
below, and a report hook that turns any other skip (``skipif`` markers, ``pytest.skip``) into a
failure under CI. The one exception is :func:`not_applicable`: the test covers a situation this
machine is not in (it has the hardware that hw-tests/ covers), which no set-up can fix.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest
from pluggy import Result

if TYPE_CHECKING:
    from tests.pg_util import ConsoleDb

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0
#: CI=true: whatever a test needs must be here; missing means failed, not skipped.
STRICT = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
#: Reasons starting with this are skips even under CI (see :func:`not_applicable`).
NOT_APPLICABLE = "not applicable here: "
#: Where root's tools live; a non-root PATH often lacks them.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def unavailable(reason: str) -> NoReturn:
    """What the test needs is missing: skip with ``reason``, or fail under CI."""
    if STRICT:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def not_applicable(reason: str) -> NoReturn:
    """This machine is not in the situation the test covers: skip, under CI too."""
    pytest.skip(NOT_APPLICABLE + reason)


def tool(name: str) -> str:
    """Absolute path of a command-line tool the test needs (see :func:`unavailable`)."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN)
    if path is None:
        unavailable(f"{name} not installed (tools/setup.sh installs it)")
    return path


def require_root() -> None:
    if not IS_ROOT:
        unavailable("needs root (network namespaces, loop devices, nftables)")


def require_module(name: str) -> ModuleType:
    """Import ``name``, a test dependency (see :func:`unavailable`); usable at module level."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} not importable ({exc}); tools/setup.sh installs it")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    """Under CI, a skip that did not come through :func:`not_applicable` is a failure."""
    outcome = yield
    report = outcome.get_result()
    if not STRICT or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(NOT_APPLICABLE):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test may not skip here: {reason}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "edge-data"
    path.mkdir()
    return path


# The console's stores on both backends (tests/test_console_accounts.py, test_console_alerts.py):
# the embedded SQLite file, and the cluster's PostgreSQL (one server per test module).
@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    from tests.pg_util import postgres

    with postgres() as info:
        yield info


@pytest.fixture(params=["embedded", "cluster"])
def console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleDb]:
    from tests.pg_util import ConsoleDb

    server = request.getfixturevalue("pg_server") if request.param == "cluster" else None
    db = ConsoleDb(request.param, tmp_path / "operators.db", server)
    yield db
    db.close()
