"""Public names of a subpackage, imported when first used (PEP 562).

Each subpackage's ``__init__`` declares its API in ``__all__`` and maps every name to the module
that defines it; ``from edge.vault import Vault`` then works without ``import edge.vault``
loading the whole vault (or PyAV, or analytics), which keeps ``edgectl`` quick to start and the
import graph free of cycles through ``__init__`` files. Type checkers read the same names from
the ``TYPE_CHECKING`` imports beside the table (tests/test_public_api.py keeps the two equal).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package``: ``table`` maps a public name to its module, relative
    to the package (``"store"`` for ``edge.vault.store``)."""

    def module_getattr(name: str) -> object:
        module = table.get(name)
        if module is None:
            # AttributeError, so that ``from package import submodule`` goes on to import it.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return module_getattr
