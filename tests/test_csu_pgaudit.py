"""The operator audit log in cluster mode on a real PostgreSQL: one chain shared by every
receiver, each record signed with the key of the receiver that wrote it, checked by
``edge-csu audit verify --config`` from the database (the file version: test_csu_audit_log.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.csu.receiver import access_log, receipts
from edge.csu.receiver.pgaudit import PgAuditLog
from edge.csu.receiver.pgindex import PgSegmentIndex

from .pg_util import fresh_database, postgres

RECEIVERS = ("r1", "r2")
THREADS_PER_RECEIVER = 2
RECORDS_PER_THREAD = 25


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with postgres() as info:
        yield info


class Cluster:
    """A fresh database, each receiver's audit key and ``csu.toml`` in ``directory``."""

    def __init__(self, server: str, directory: Path) -> None:
        self.conninfo = fresh_database(server)
        self.directory = directory
        self._indexes: list[PgSegmentIndex] = []

    def key_file(self, receiver: str) -> Path:
        return self.directory / f"{receiver}-audit-key.pem"

    def log(self, receiver: str) -> PgAuditLog:
        """A receiver's audit log on a connection of its own."""
        index = PgSegmentIndex(self.conninfo, receiver)
        self._indexes.append(index)
        key = receipts.load_or_create(self.key_file(receiver), "audit key")
        return PgAuditLog(lambda: index, receiver, key)

    def config(self, receiver: str) -> Path:
        path = self.directory / f"{receiver}.toml"
        path.write_text(
            f"""storage = "cluster"
audit_key_file = "{self.key_file(receiver)}"

[cluster]
receiver_id = "{receiver}"

[cluster.database]
conninfo = "{self.conninfo}"

[cluster.object_store]
endpoint = "http://127.0.0.1:9"
bucket = "unused"
access_key = "unused"
secret_file = "unused"
"""
        )
        return path

    def execute(self, sql: str, *params: object) -> None:
        with psycopg.connect(self.conninfo) as conn:
            conn.execute(sql.encode(), params)

    def close(self) -> None:
        for index in self._indexes:
            index.close()


@pytest.fixture
def cluster(server: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(server, tmp_path)
    yield c
    c.close()


def _audit_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "audit", "verify", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _fill(cluster: Cluster) -> int:
    """Both receivers append at once, from several threads each; the number of records."""
    logs = {r: cluster.log(r) for r in RECEIVERS}
    start = threading.Barrier(len(RECEIVERS) * THREADS_PER_RECEIVER)
    errors: list[BaseException] = []

    def append(receiver: str, thread: int) -> None:
        try:
            start.wait(timeout=60)
            for n in range(RECORDS_PER_THREAD):
                logs[receiver].record(f"agent-{thread}", "view-live", unit="u", camera=str(n))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=append, args=(r, t))
        for r in RECEIVERS
        for t in range(THREADS_PER_RECEIVER)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return len(threads) * RECORDS_PER_THREAD


def test_two_receivers_appending_at_once_make_one_chain_that_verifies(cluster: Cluster) -> None:
    total = _fill(cluster)
    with psycopg.connect(cluster.conninfo) as conn:
        rows = conn.execute("SELECT seq, receiver, line FROM audit_chain ORDER BY seq").fetchall()
    assert [seq for seq, _, _ in rows] == list(range(1, total + 1))  # no gap
    prev = access_log.ZERO
    for _, receiver, line in rows:  # no fork: each record continues the one before it
        entry = json.loads(line)
        assert entry["prev"] == prev and entry["receiver"] == receiver
        prev = hashlib.sha256(line.encode()).hexdigest()
    by_receiver = [r for _, r, _ in rows]
    assert {r: by_receiver.count(r) for r in RECEIVERS} == {
        r: THREADS_PER_RECEIVER * RECORDS_PER_THREAD for r in RECEIVERS
    }

    # the console's reading (any receiver) and the command line's agree
    report, keys = cluster.log("r2").verify()
    assert report.problem is None and report.count == report.signed == total
    assert sorted(r for names in keys.values() for r in names) == list(RECEIVERS)
    for receiver in RECEIVERS:
        out = _audit_verify("--config", str(cluster.config(receiver)), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result["ok"] and result["count"] == total and result["head"] == report.head
        assert result["signed"] == total and sorted(result["keys"].values()) == [["r1"], ["r2"]]
    text = _audit_verify("--config", str(cluster.config("r1")))
    assert f"shared audit chain OK: {total} records, {total} signed" in text.stdout
    assert f"head: {total} {report.head}" in text.stdout


def test_a_record_altered_or_deleted_in_the_table_is_named_by_its_sequence(
    cluster: Cluster,
) -> None:
    r1, r2 = cluster.log("r1"), cluster.log("r2")
    for n in range(4):
        (r1 if n % 2 else r2).record(f"agent-{n}", "view-media", unit="u", camera="c")
    config = str(cluster.config("r1"))
    assert _audit_verify("--config", config).returncode == 0

    # the last record edited: only its signature can show it
    cluster.execute(
        "UPDATE audit_chain SET line = replace(line, 'agent-3', 'agent-9') WHERE seq = 4"
    )
    out = _audit_verify("--config", config)
    assert out.returncode == 1
    assert "shared audit chain: seq 4: bad signature (record edited, or signed by another key)" in (
        out.stdout
    )
    # a middle record edited
    cluster.execute("DELETE FROM audit_chain WHERE seq = 4")
    cluster.execute(
        "UPDATE audit_chain SET line = replace(line, 'view-media', 'view-live') WHERE seq = 2"
    )
    out = _audit_verify("--config", config)
    assert out.returncode == 1 and "seq 2: bad signature" in out.stdout
    # a middle record deleted
    cluster.execute("DELETE FROM audit_chain WHERE seq = 2")
    out = _audit_verify("--config", config, "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["problem"] == "seq 2: missing (record deleted)"
    # renumbered to hide the hole: the chain shows it
    cluster.execute("UPDATE audit_chain SET seq = seq - 1 WHERE seq > 2")
    out = _audit_verify("--config", config)
    assert out.returncode == 1
    assert "seq 2: audit chain broken (record removed or edited)" in out.stdout


def test_a_record_signed_with_another_receivers_key_or_an_unknown_key_is_refused(
    cluster: Cluster,
) -> None:
    r1 = cluster.log("r1")
    r1.record("a.agent", "view-live")
    # a record naming r2 but signed with r1's key: r2 never registered that key
    index = PgSegmentIndex(cluster.conninfo, "r1")
    try:
        impostor = PgAuditLog(
            lambda: index, "r2", receipts.load_or_create(cluster.key_file("r1"), "audit key")
        )
        impostor._registered = True  # it cannot register r1's key as r2's: the row exists
        impostor.record("b.agent", "export")
    finally:
        index.close()
    out = _audit_verify("--config", str(cluster.config("r1")))
    assert out.returncode == 1
    assert "seq 2: signed with a key the receiver it names did not register" in out.stdout
    cluster.execute("DELETE FROM audit_chain WHERE seq = 2")

    # the auditor's own copies of the keys: only those are accepted
    cluster.log("r2").record("b.agent", "export")
    r1_pub = str(receipts.public_path(cluster.key_file("r1")))
    r2_pub = str(receipts.public_path(cluster.key_file("r2")))
    config = str(cluster.config("r1"))
    assert (
        _audit_verify("--config", config, "--public-key", r1_pub, "--public-key", r2_pub).returncode
        == 0
    )
    out = _audit_verify("--config", config, "--public-key", r1_pub)
    assert out.returncode == 1
    assert "seq 2: signed by a key that is not among those given" in out.stdout

    # a receiver whose key file is not the key registered under its name (replaced in the
    # table, or on the host): verify says so
    receipts.public_path(cluster.key_file("r1")).write_bytes(
        receipts.public_path(cluster.key_file("r2")).read_bytes()
    )
    out = _audit_verify("--config", config)
    assert out.returncode == 1 and "receiver r1: its audit key" in out.stdout


def test_an_unsigned_record_from_a_command_without_the_key_joins_the_chain(
    cluster: Cluster,
) -> None:
    cluster.log("r1").record("a.agent", "view-live")
    index = PgSegmentIndex(cluster.conninfo, "r1")
    try:
        PgAuditLog(lambda: index, "r1").record("admin", "operator-add", name="x")
    finally:
        index.close()
    out = _audit_verify("--config", str(cluster.config("r1")), "--require-signed")
    assert out.returncode == 1
    assert "seq 2: unsigned record after signing began (--require-signed)" in out.stdout
