"""Schema versions of the configuration files, and the migration of the per-unit file.

A configuration file says which schema it was written for at its top: ``schema = 2``; a file
that says nothing is schema 1 (every file written before schemas were numbered). This release
reads schemas 1 to :data:`SCHEMA`: an older file is migrated (:data:`MIGRATIONS`, one step per
schema), in memory each time a file is read, so that the baseline on the read-only root and a
file given to ``edgectl config check`` are read too. A file written for a *newer* schema is
refused, naming its ``schema`` line: this release cannot know what the newer keys mean and
does not guess.

The per-unit file on the data partition (``<data_dir>/unit.toml``) is also migrated on disk,
by edged at start, under its data-directory lock (:func:`migrate_unit_file`):

1. the file as it is is kept beside it as ``unit.toml.v<N>`` (N: its schema), written and
   synced first; an earlier, different ``unit.toml.v<N>`` is first kept under a dated name,
   so no version of the file is ever lost;
2. the migrated file replaces ``unit.toml`` atomically (temporary file, fsync, rename): a
   crash or a full disk at any point leaves either the old file or the new one, both
   readable, and the next start simply migrates again;
3. edged writes the step (schemas, both SHA-256, the kept file) to the signed audit log.

Rolling back. A release that meets a ``unit.toml`` from a newer schema (its slot was rolled
back, or the city signed a downgrade) reads ``unit.toml.v<its SCHEMA>`` instead: the file as it
stood, in its own schema, when the newer release migrated it; the status says so. Without that
file it refuses to start, naming the ``schema`` line. A release from before schemas were
numbered knows nothing of either, so edged does not write the migration while the update that
brought it waits for confirmation (``edgectl update mark-good``): the boot loader's roll-back
then finds the file untouched. The next start after confirmation writes it.

Pure but for :func:`migrate_unit_file` and :func:`file_for_this_release`.
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.fsutil import write_atomic
from edge.unitfile import to_toml

#: The schema this release writes and reads natively.
SCHEMA = 2
#: The top-level key naming a file's schema.
SCHEMA_KEY = "schema"

Locate = Callable[[tuple[int | str, ...]], int | None]


def _no_line(_loc: tuple[int | str, ...]) -> int | None:
    return None


def _v1_to_v2(doc: dict[str, Any], path: str, locate: Locate) -> dict[str, Any]:
    """Schema 2: a camera's ``loop`` is ``loop_file`` (it repeats a file source; next to an
    ``rtsp://`` source, ``loop`` read as if it applied to any camera)."""
    cameras = doc.get("cameras")
    if not isinstance(cameras, list):
        return doc
    out = []
    for i, cam in enumerate(cameras):
        if isinstance(cam, dict) and "loop" in cam:
            if "loop_file" in cam:
                raise ConfigError(
                    "both loop (schema 1) and loop_file (schema 2): keep loop_file only",
                    path=path,
                    key=f"cameras[{i}].loop",
                    line=locate(("cameras", i, "loop")),
                )
            cam = {("loop_file" if k == "loop" else k): v for k, v in cam.items()}
        out.append(cam)
    return {**doc, "cameras": out}


#: ``MIGRATIONS[n]`` takes a schema-n document to schema n + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any], str, Locate], dict[str, Any]]] = {1: _v1_to_v2}

#: Keys a schema renamed: a file that declares a schema at or above it and still uses the old
#: name is told the new one (the old name is read only through migration).
RENAMED = {("cameras", "loop"): ("loop_file", 2)}


def declared(doc: dict[str, Any], *, path: str = "<config>", locate: Locate = _no_line) -> int:
    """The schema a parsed file declares (1 when it says none); a newer one than this release
    reads, or a value that is no schema number, is a :class:`ConfigError` on its line."""
    value = doc.get(SCHEMA_KEY, 1)
    line = locate((SCHEMA_KEY,))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"a schema number (1 to {SCHEMA}), found {value!r}", path=path, key="schema", line=line
        )
    if value > SCHEMA:
        raise ConfigError(
            f"schema {value} is newer than this release reads (1 to {SCHEMA}): the file was "
            "written for a newer edge release, whose keys this one would have to guess. Run the "
            f"newer release, or give this one a file of schema {SCHEMA} or less",
            path=path,
            key="schema",
            line=line,
        )
    return value


def migrate(
    doc: dict[str, Any], *, path: str = "<config>", locate: Locate = _no_line
) -> tuple[dict[str, Any], int]:
    """``doc`` in this release's schema, without its ``schema`` key, and the schema it was in."""
    schema = declared(doc, path=path, locate=locate)
    out = {k: v for k, v in doc.items() if k != SCHEMA_KEY}
    for step in range(schema, SCHEMA):
        out = MIGRATIONS[step](out, path, locate)
    return out, schema


def renamed_hint(loc: tuple[int | str, ...]) -> str | None:
    """What an old key is called now, for the "unknown key" error of a file that declares a
    schema where it no longer exists."""
    names = tuple(p for p in loc if isinstance(p, str))
    for old, (new, schema) in RENAMED.items():
        if names == old:
            return f"unknown key: since schema {schema} it is {new}"
    return None


def kept_file(unit_path: Path, schema: int) -> Path:
    """Where a per-unit file of ``schema`` is kept when a newer release migrates it."""
    return unit_path.with_name(f"{unit_path.name}.v{schema}")


def _schema_of(data: bytes) -> int | None:
    """The schema a file's bytes declare; None when they are no TOML (the loader says why)."""
    try:
        value = tomllib.loads(data.decode("utf-8")).get(SCHEMA_KEY, 1)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def file_for_this_release(unit_path: Path) -> tuple[Path, str | None]:
    """The per-unit file this release reads, and why when it is not ``unit_path`` itself.

    ``unit_path`` from a newer schema, with the file this release's schema kept at the
    migration beside it: that file. Otherwise ``unit_path`` (the loader refuses a newer
    schema with its line)."""
    try:
        schema = _schema_of(unit_path.read_bytes())
    except OSError:
        return unit_path, None
    kept = kept_file(unit_path, SCHEMA)
    if schema is None or schema <= SCHEMA or not kept.is_file():
        return unit_path, None
    return kept, (
        f"{unit_path.name} is schema {schema}, from a newer release: this release reads "
        f"{kept.name}, the file of its own schema kept when the newer one migrated it"
    )


@dataclass(frozen=True, slots=True)
class Migrated:
    """One migration of the per-unit file, as edged audits it."""

    unit_file: Path
    kept_as: Path
    from_schema: int
    to_schema: int
    old_sha256: str
    new_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_file": str(self.unit_file),
            "kept_as": str(self.kept_as),
            "from_schema": self.from_schema,
            "to_schema": self.to_schema,
            "old_sha256": self.old_sha256,
            "new_sha256": self.new_sha256,
        }


def migrated_text(text: str, *, path: str, version: str, now: float) -> tuple[str, int] | None:
    """The migrated text of a per-unit file and its schema; None when it is current already.

    Raises :class:`ConfigError` (with the line) for a file that cannot be migrated."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None  # the loader names the syntax error with its line; nothing to migrate
    from edge.config import locate_line  # the one line finder; config imports this module

    def locate(loc: tuple[int | str, ...]) -> int | None:
        return locate_line(text, loc)

    new, schema = migrate(doc, path=path, locate=locate)
    if schema == SCHEMA:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    header = (
        f"Per-unit configuration, migrated from schema {schema} to {SCHEMA} by edged {version} "
        f"at {stamp}.\nThe file as it was is kept as {Path(path).name}.v{schema} (a rolled-back "
        "release reads it);\nits comments are there too."
    )
    return to_toml({SCHEMA_KEY: SCHEMA, **new}, header=header), schema


def migrate_unit_file(
    unit_path: Path, *, version: str, now: float | None = None
) -> Migrated | None:
    """Migrate the per-unit file on disk (see the module's text); None when it is current,
    absent, or of a newer schema (the loader deals with that one)."""
    try:
        old = unit_path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        text = old.decode("utf-8")
    except UnicodeDecodeError:
        return None  # the loader refuses it with its words
    if (_schema_of(old) or 0) > SCHEMA:
        return None
    at = time.time() if now is None else now
    done = migrated_text(text, path=str(unit_path), version=version, now=at)
    if done is None:
        return None
    new_text, schema = done
    kept = kept_file(unit_path, schema)
    try:
        earlier = kept.read_bytes()
    except FileNotFoundError:
        earlier = None
    if earlier is not None and earlier != old:
        # A schema-`schema` file kept at an earlier migration, changed since (the unit ran
        # an older release again): kept too, under its date, before the name is reused.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(kept.stat().st_mtime))
        write_atomic(kept.with_name(f"{kept.name}.{stamp}"), earlier, mode=0o640)
    if earlier != old:
        write_atomic(kept, old, mode=0o640)
    new = new_text.encode()
    write_atomic(unit_path, new, mode=0o640)
    return Migrated(
        unit_file=unit_path,
        kept_as=kept,
        from_schema=schema,
        to_schema=SCHEMA,
        old_sha256=hashlib.sha256(old).hexdigest(),
        new_sha256=hashlib.sha256(new).hexdigest(),
    )
