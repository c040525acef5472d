"""Schema versions of the configuration files: the migration of the per-unit file by a real
edged at start (kept old file, atomic new one, audited), a write interrupted half-way, a file of
a newer schema refused on its line, and a rolled-back release reading the file of its own
schema kept beside a newer one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge import __version__, configschema, fsutil
from edge import config as config_mod
from edge.errors import ConfigError
from edge.vault.audit import check_audit

from .conftest import REPO
from .daemon_util import running_edged, write_config
from .test_provision import _public_key, audit_records

#: A per-unit file as a release before schema numbers wrote it: no ``schema``, a camera's
#: ``loop`` (``loop_file`` since schema 2), and the installer's comments.
UNIT_V1 = """\
# cabinet 12, installed by the north team
[unit]
site = "quai 3"

[[cameras]]
id = "cam1"
source = "synthetic"
width = 320
height = 240
fps = 10
loop = true   # the installer's test clip
[cameras.encoder]
segment_seconds = 1.0
preset = "ultrafast"
"""


def _unit(tmp_path: Path, data_dir: Path, text: str = UNIT_V1) -> tuple[Path, Path]:
    config = write_config(tmp_path / "edge.toml", data_dir)
    unit = data_dir / "unit.toml"
    unit.write_text(text)
    return config, unit


def _run_dir(tmp_path: Path, name: str) -> Path:
    """A directory of its own for each edged run (its notify socket)."""
    path = tmp_path / name
    path.mkdir()
    return path


def _schema(path: Path) -> Any:
    return tomllib.loads(path.read_text()).get("schema", 1)


# --- pure ---------------------------------------------------------------------------------------


def test_an_older_file_is_read_in_this_schema_and_the_old_name_only_through_migration() -> None:
    cfg = config_mod.parse(UNIT_V1.replace("[unit]", '[unit]\nid = "u-1"'))
    assert cfg.cameras[0].loop_file is True
    text = f"schema = {configschema.SCHEMA}\n" + UNIT_V1
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, path="unit.toml")
    assert info.value.key == "cameras[0].loop"
    assert "since schema 2 it is loop_file" in str(info.value)
    assert text.splitlines()[info.value.line - 1].startswith("loop = true")  # type: ignore[operator]
    both = UNIT_V1.replace("loop = true", "loop = true\nloop_file = false")
    with pytest.raises(ConfigError, match=r"both loop \(schema 1\) and loop_file"):
        config_mod.parse(both)


@pytest.mark.parametrize("value", ["0", '"2"', "true", "2.0"])
def test_a_schema_that_is_no_schema_number_is_refused_on_its_line(value: str) -> None:
    text = '[unit]\nid = "u-1"\n'
    text = f"# baseline\nschema = {value}\n" + text
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, path="edge.toml")
    assert (info.value.key, info.value.line) == ("schema", 2)


# --- on disk, by a real edged ---------------------------------------------------------------------


def test_edged_migrates_the_unit_file_keeps_the_old_one_and_audits_it(
    tmp_path: Path, data_dir: Path
) -> None:
    config, unit = _unit(tmp_path, data_dir)
    # The update that brought this release waits for confirmation: a roll-back must find the
    # file as it was, so edged runs on the migration in memory and writes nothing.
    (data_dir / "update").mkdir()
    pending = {"result": "installed", "version": __version__, "from_version": "0.0.1"}
    (data_dir / "update" / "last-update.json").write_text(json.dumps(pending))
    with running_edged(config, _run_dir(tmp_path, "run1")) as (_proc, notify):
        notify.wait_for("READY=1", 60)
    assert unit.read_text() == UNIT_V1
    assert not configschema.kept_file(unit, 1).exists()
    # Confirmed (edgectl update mark-good): the next start writes the migration.
    confirmed = {**pending, "result": "good"}
    (data_dir / "update" / "last-update.json").write_text(json.dumps(confirmed))
    with running_edged(config, _run_dir(tmp_path, "run2")) as (_proc, notify):
        notify.wait_for("READY=1", 60)
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "edge.cli.main", "status", "--json",
                 "--config", str(config)],
                capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
            ).stdout
        )  # fmt: skip
    assert status["daemon"]["unit_id"] == "test-unit"
    kept = configschema.kept_file(unit, 1)
    assert kept.read_text() == UNIT_V1  # byte for byte, comments included
    migrated = tomllib.loads(unit.read_text())
    assert migrated["schema"] == configschema.SCHEMA
    assert migrated["cameras"][0]["loop_file"] is True and "loop" not in migrated["cameras"][0]
    assert migrated["unit"]["site"] == "quai 3"
    assert "kept as unit.toml.v1" in unit.read_text()
    # The migrated file reads as the old one did.
    before = config_mod.parse_layered(config.read_text(), unit_text=UNIT_V1)
    after, _origin = config_mod.load(config)
    assert after.cameras == before.cameras and after.unit.site == before.unit.site
    records = [r for r in audit_records(data_dir) if r["action"] == "config-schema-migrated"]
    assert len(records) == 1, records
    details = records[0]["details"]
    assert (details["from_schema"], details["to_schema"], details["kept_as"]) == (
        1,
        configschema.SCHEMA,
        str(kept),
    )
    assert records[0]["actor"] == f"edged {__version__}"
    key = _public_key(data_dir / "keys" / "unit-signing.pem")
    check = check_audit(data_dir / "vault" / "audit.log", key)
    assert not check.problems, check.problems
    # Started again: nothing more to migrate, nothing rewritten.
    stamp = unit.stat().st_mtime_ns
    with running_edged(config, _run_dir(tmp_path, "run3")) as (_proc, notify):
        notify.wait_for("READY=1", 60)
    assert unit.stat().st_mtime_ns == stamp
    assert len([r for r in audit_records(data_dir) if r["action"] == "config-schema-migrated"]) == 1


def test_a_migration_cut_short_leaves_a_usable_file_and_is_done_again(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, unit = _unit(tmp_path, data_dir)
    real_write = fsutil.write_atomic

    def cut(path: Path, data: bytes, **kw: Any) -> None:
        if path == unit:
            # The power goes while the new file is half written beside the old one.
            path.with_name(f".{path.name}.crash.tmp").write_bytes(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        real_write(path, data, **kw)

    monkeypatch.setattr(configschema, "write_atomic", cut)
    with pytest.raises(OSError):
        configschema.migrate_unit_file(unit, version=__version__)
    assert unit.read_text() == UNIT_V1  # the old file, whole
    assert configschema.kept_file(unit, 1).read_text() == UNIT_V1
    cfg, _origin = config_mod.load(config)  # read, migrated in memory
    assert cfg.cameras[0].loop_file is True
    monkeypatch.setattr(configschema, "write_atomic", real_write)
    done = configschema.migrate_unit_file(unit, version=__version__)
    assert done is not None and done.from_schema == 1
    assert _schema(unit) == configschema.SCHEMA
    assert configschema.kept_file(unit, 1).read_text() == UNIT_V1
    assert config_mod.load(config)[0].cameras == cfg.cameras


def test_a_kept_file_is_never_overwritten_by_a_later_migration(
    tmp_path: Path, data_dir: Path
) -> None:
    _config, unit = _unit(tmp_path, data_dir)
    assert configschema.migrate_unit_file(unit, version=__version__, now=1.0) is not None
    # An older release ran again and wrote its own file (re-provisioned): migrated again,
    # both schema-1 files are kept.
    second = UNIT_V1.replace("quai 3", "quai 4")
    unit.write_text(second)
    assert configschema.migrate_unit_file(unit, version=__version__, now=2.0) is not None
    kept = configschema.kept_file(unit, 1)
    assert kept.read_text() == second
    earlier = [p for p in data_dir.glob("unit.toml.v1.*")]
    assert [p.read_text() for p in earlier] == [UNIT_V1]


def test_a_unit_file_of_a_newer_schema_is_refused_on_its_line(
    tmp_path: Path, data_dir: Path
) -> None:
    newer = configschema.SCHEMA + 1
    config, unit = _unit(tmp_path, data_dir, f"# written by a later release\nschema = {newer}\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(config)
    assert (info.value.path, info.value.line, info.value.key) == (str(unit), 2, "schema")
    assert f"schema {newer} is newer than this release reads" in str(info.value)
    # edged refuses to start on it (configuration error), and leaves it alone.
    done = subprocess.run(
        [sys.executable, "-m", "edge.app.daemon", "--config", str(config), "--run-for", "5"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert f"{unit}:2: schema: schema {newer} is newer" in done.stderr
    assert _schema(unit) == newer


def test_a_rolled_back_release_reads_the_file_of_its_own_schema(
    tmp_path: Path, data_dir: Path
) -> None:
    # A later release migrated this unit's file to its schema and kept this release's beside it.
    newer = configschema.SCHEMA + 1
    current = f"schema = {configschema.SCHEMA}\n" + UNIT_V1.replace("loop =", "loop_file =")
    config, unit = _unit(
        tmp_path, data_dir, f'schema = {newer}\n[unit]\nsite = "quai 3"\nsomething_new = 1\n'
    )
    kept = configschema.kept_file(unit, configschema.SCHEMA)
    kept.write_text(current)
    cfg, origin = config_mod.load(config)
    assert cfg.cameras[0].loop_file is True
    assert str(kept) in origin and f"unit.toml is schema {newer}" in origin
    with running_edged(config, _run_dir(tmp_path, "run4")) as (_proc, notify):
        notify.wait_for("READY=1", 60)
        time.sleep(0.5)
    assert _schema(unit) == newer and kept.read_text() == current  # neither touched
