"""The one durable atomic writer (edge/fsutil.py): every kept file goes through it, the metrics
textfile included, and concurrent writers of one file never share a temporary file."""

from __future__ import annotations

import ast
import os
import stat
import threading
from pathlib import Path
from typing import cast

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from edge import fsutil
from edge.app import metrics
from edge.snapshot import StatusReport

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_textfile_is_fsynced_and_readable_by_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # fault-injection seam only: records, then really syncs
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "edge.prom"
    old = os.umask(0o077)  # edged's UMask
    try:
        metrics.write_textfile(
            path, cast(StatusReport, {"daemon": {"unit_id": "cab-1", "cameras": []}})
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert str(tmp_path) in synced, "the directory entry of the rename was never made durable"
    assert any(s.startswith(str(tmp_path / ".edge.prom")) for s in synced), synced
    families = {f.name for f in text_string_to_metric_families(path.read_text())}  # type: ignore[no-untyped-call]
    assert "edge_health_level" in families
    assert not list(tmp_path.glob(".*tmp"))


def test_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    errors: list[BaseException] = []

    def writer(tag: bytes) -> None:
        try:
            for _ in range(200):
                fsutil.write_atomic(path, tag * 4096, durable=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(bytes([65 + i]),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = path.read_bytes()
    assert len(data) == 4096 and len(set(data)) == 1  # one writer's whole content, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_no_other_module_writes_by_temporary_file_and_rename() -> None:
    """A second tmp+rename writer is how the one without fsync came about."""
    allowed = {
        # a whole bundle directory moved into place once complete (its files use fsutil)
        ("edge/vault/bundle.py", "rename"),
        # FFmpeg muxes the opened clip into its temporary file: a stream, not bytes in hand
        ("edge/vault/bundle.py", "replace"),
        # moves of files already written through fsutil: a renewal key promoted, a rejected
        # event set aside; and the vault index's own replace() (not a file)
        ("edge/identity/enrolment.py", "replace"),
        ("edge/uplink/spool.py", "replace"),
        ("edge/vault/store.py", "replace"),
        # streams, not bytes in hand: an update bundle downloaded (fsync'd, digest checked),
        # FFmpeg muxing a mask-overlay review copy
        ("edge/updates.py", "replace"),
        ("edge/csu/fleet_cmd.py", "replace"),  # a bundle of hundreds of MB copied into place
        ("edge/csu/overlay.py", "replace"),
        # moves of files already written: a command the unit judged moved to done/, a damaged
        # nonce record or record of waiting requests kept aside (never silently replaced)
        ("edge/csu/receiver/commands.py", "rename"),
        ("edge/outputs/commands.py", "rename"),
        ("edge/outputs/pending.py", "rename"),
        # edgectl / edge-csu command modules being reworked for issue 12
        ("edge/cli/mask.py", "replace"),
        ("edge/csu/serve_cmd.py", "replace"),
    }
    found = set()
    for path in sorted((ROOT / "edge").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "edge/fsutil.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            # Path.rename / Path.replace take one argument; str and datetime replace do not.
            via_os = isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
            one_arg = len(node.args) == 1 and not node.keywords
            if name in ("rename", "replace") and (one_arg or via_os):
                found.add((rel, name))
    assert found <= allowed, sorted(found - allowed)


def test_make_parents_creates_the_missing_directories_before_the_temporary_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a" / "b" / "page.1"
    fsutil.write_atomic(target, b"text", make_parents=True)
    assert target.read_bytes() == b"text"
    assert [p.name for p in target.parent.iterdir()] == ["page.1"]  # no temporary file left
