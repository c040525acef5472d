"""The per-unit configuration file on the data partition, layered over the city's baseline.

One image is flashed onto every unit, so its read-only root can only carry what all units share:
the baseline ``/etc/edge/edge.toml``. What differs per unit (its id and site, its cameras, masks
and analytics rules) lives in ``<data_dir>/unit.toml``, on the data partition that updates never
touch, written by ``edgectl provision``. Both files have the same schema; the unit file is laid
over the baseline: tables merge key by key, anything else (a value, an array such as
``cameras``) in the unit file replaces the baseline's. The unit file may not move the data
directory it lives in (``unit.data_dir``).

A unit whose configuration names no unit id (neither file sets ``unit.id``) is *unprovisioned*:
edged records nothing and waits for ``edgectl provision`` (see ``edge/app/provision.py``).

Pure: nothing here touches a file or imports the rest of the firmware.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

UNIT_FILE_NAME = "unit.toml"

#: Keys the unit file may not set: they decide where the unit file itself is found.
BASELINE_ONLY = (("unit", "data_dir"),)


def unit_file_of(data_dir: Path) -> Path:
    """Where the per-unit file of a data directory lives."""
    return data_dir / UNIT_FILE_NAME


def merge(baseline: dict[str, Any], unit: dict[str, Any]) -> dict[str, Any]:
    """``unit`` laid over ``baseline``: tables merged recursively, everything else replaced."""
    out = dict(baseline)
    for key, value in unit.items():
        below = out.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            out[key] = merge(below, value)
        else:
            out[key] = value
    return out


def from_unit_file(unit: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Whether the value at ``loc`` of the merged document was written by the unit file.

    Walks ``loc`` down the unit file's own document: found whole, or inside an array the unit
    file replaced, it is the unit file's; a key missing on the way came from the baseline.
    """
    node: Any = unit
    for part in loc:
        if isinstance(node, list):
            return True  # arrays are replaced whole: every element is the unit file's
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def _key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{type(value).__name__} cannot be written to TOML")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(doc: dict[str, Any], prefix: list[str], out: list[str]) -> None:
    for key, value in doc.items():
        if value is None or isinstance(value, dict) or _is_tables(value):
            continue
        out.append(f"{_key(key)} = {_value(value)}")
    for key, value in doc.items():
        path = [*prefix, _key(key)]
        if isinstance(value, dict):
            out.extend(["", f"[{'.'.join(path)}]"])
            _table(value, path, out)
        elif _is_tables(value):
            for item in value:
                out.extend(["", f"[[{'.'.join(path)}]]"])
                _table(item, path, out)


def to_toml(doc: dict[str, Any], header: str = "") -> str:
    """A TOML text of ``doc`` (tables, arrays of tables, scalars; ``None`` values left out)."""
    out = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(doc, [], out)
    return "\n".join(out).strip("\n") + "\n"
