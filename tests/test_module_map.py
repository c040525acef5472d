"""docs/ARCHITECTURE.md's module map and the tree agree: every module is named there."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_map() -> str:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start = text.index("## 2. Module map")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_is_in_the_map() -> None:
    described = _module_map()
    missing = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        rel = path.relative_to(ROOT / "edge")
        # Sub-commands and benchmarks are "one module each" in the map.
        if path.name == "__init__.py" or rel.parts[0] in ("cli", "bench"):
            continue
        if path.stem not in described:
            missing.append(rel.as_posix())
    assert not missing, missing


def test_every_directory_of_the_map_exists() -> None:
    for line in _module_map().splitlines():
        word = line[2:].split(" ", 1)[0] if line.startswith("  ") and line[2] != " " else ""
        if word.endswith("/"):
            assert (ROOT / "edge" / word).is_dir(), word
        elif word.endswith(".py"):
            assert (ROOT / "edge" / word).is_file(), word
