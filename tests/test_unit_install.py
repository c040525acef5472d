"""The cabinet unit's install carries nothing of the CSU side (issue 13, item 1).

The unit wheel is built exactly as the image build builds it (``image/build.py``), inspected,
then installed into a fresh virtualenv. Its dependencies come from the test environment through
a path file, with aiohttp (the receiver's web framework) refused by an import hook, so any unit
code path that needed the CSU's dependencies would fail here: ``edged``, ``edgectl`` and
``edgectl status`` run as real processes, and the receiver cannot be imported at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from image import build

# Written into the unit venv's site-packages as a .pth: site runs its import line at start.
_BLOCK_AIOHTTP = """\
import sys
class _RefuseCsuDeps:
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ModuleNotFoundError(f"{name} is not part of a unit install", name=name)
        return None
sys.meta_path.insert(0, _RefuseCsuDeps())
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def unit_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_unit_wheel(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="module")
def unit_venv(unit_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("unit") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Without PYTHONPATH: the checkout on it would look like an `edge` already installed.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(unit_wheel),
        ],
        check=True,
        env=_clean_env(),
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The unit's dependencies (av, cryptography, …) from this environment, not its `edge`:
    # a plain path line, so this environment's own .pth files (its editable `edge`) never run.
    (site / "zz_unit_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (site / "aa_refuse_csu_deps.pth").write_text("import _refuse_csu_deps\n")
    (site / "_refuse_csu_deps.py").write_text(_BLOCK_AIOHTTP)
    return venv


def _run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=venv,
        timeout=60,
        check=False,
    )


def test_unit_wheel_has_no_csu_files_entry_point_or_dependency(unit_wheel: Path) -> None:
    with zipfile.ZipFile(unit_wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist")
        ]
        entry_points = zf.read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "edge/app/daemon.py" in names and "edge/cli/main.py" in names
    assert not [n for n in names if n.startswith("edge/csu/")]
    assert not [r for r in requires if "aiohttp" in r]
    assert "edged" in entry_points and "edgectl" in entry_points
    assert "edge-csu" not in entry_points
    assert build.unit_wheel_leaks(unit_wheel) == []


def test_unit_environment_runs_edged_and_edgectl_but_cannot_import_the_receiver(
    unit_venv: Path,
) -> None:
    py = str(unit_venv / "bin" / "python")
    where = _run(unit_venv, py, "-c", "import edge; print(edge.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(unit_venv)), where.stdout
    blocked = _run(unit_venv, py, "-c", "import aiohttp")
    assert "not part of a unit install" in blocked.stderr

    for argv in (["edged", "--help"], ["edgectl", "--help"], ["edgectl", "--version"]):
        done = _run(unit_venv, str(unit_venv / "bin" / argv[0]), *argv[1:])
        assert done.returncode == 0, (argv, done.stderr)
    # No daemon runs here: status reports it unreachable, but every module it needs imports.
    status = _run(unit_venv, str(unit_venv / "bin" / "edgectl"), "status")
    assert status.returncode in (0, 1, 2), status.stderr
    assert "Traceback" not in status.stderr and "ModuleNotFoundError" not in status.stderr
    assert not (unit_venv / "bin" / "edge-csu").exists()

    receiver = _run(unit_venv, py, "-c", "import edge.csu.receiver")
    assert receiver.returncode != 0
    assert "ModuleNotFoundError: No module named 'edge.csu'" in receiver.stderr


def test_csu_distribution_carries_the_receiver_and_its_dependencies(tmp_path: Path) -> None:
    """The other half: edge-csu brings edge.csu, its command and aiohttp, on top of `edge`
    (never a second copy of the unit's package)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            str(build.REPO / "csu"),
            "-w",
            str(tmp_path),
        ],
        check=True,
        env=_clean_env(),
        capture_output=True,
    )
    wheel = next(tmp_path.glob("edge_csu-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
        entry_points = zf.read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "edge/csu/receiver/server.py" in names and "edge/csu/ca.py" in names
    # the console's own style sheet and player script travel as package data
    static = {"edge/csu/console/static/console.js", "edge/csu/console/static/console.css"}
    assert static <= set(names)
    assert not [n for n in names if n.startswith("edge/") and not n.startswith("edge/csu/")]
    assert "Requires-Dist: aiohttp" in text and "Requires-Dist: edge==" in text
    assert "edge-csu = edge.csu.main:main" in entry_points
