"""Each subpackage declares its public API in ``__init__`` (``__all__``), imported on first use."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = [
    "edge.analytics",
    "edge.app",
    "edge.capture",
    "edge.csu.console",
    "edge.csu.receiver",
    "edge.health",
    "edge.identity",
    "edge.outputs",
    "edge.privacy",
    "edge.uplink",
    "edge.uplink.dot1x",
    "edge.vault",
    "edge.video",
]


def _type_checking_names(package: str) -> set[str]:
    """The names the ``if TYPE_CHECKING:`` block of the package's ``__init__`` imports."""
    init = ROOT / package.replace(".", "/") / "__init__.py"
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                names |= {alias.asname or alias.name for alias in imp.names}
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_module(package: str) -> None:
    pkg = importlib.import_module(package)
    exports: dict[str, str] = pkg._EXPORTS
    assert pkg.__all__ == sorted(pkg.__all__) and pkg.__all__, package
    assert set(exports) <= set(pkg.__all__)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        if name in exports:
            defining = importlib.import_module(f"{package}.{exports[name]}")
            assert value is getattr(defining, name), (package, name)
    # What type checkers see is what runs.
    assert _type_checking_names(package) == set(exports), package
    with pytest.raises(AttributeError):
        _ = pkg.no_such_name
    # A name is never also a submodule: after the import system sets the submodule on the
    # package, the two would disagree.
    submodules = {p.stem for p in (ROOT / package.replace(".", "/")).glob("*.py")}
    assert not set(pkg.__all__) & submodules, package


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_none_of_its_modules(package: str) -> None:
    """``import edge.vault`` does not pull in the vault, PyAV or analytics: what ``edgectl``
    needs at start stays small, and ``__init__`` files make no import cycles."""
    code = f"import sys, {package}\nprint(' '.join(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    pkg = importlib.import_module(package)
    own = {f"{package}.{module}" for module in pkg._EXPORTS.values()}
    assert not loaded & own, sorted(loaded & own)
    assert "av" not in loaded
