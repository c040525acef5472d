"""Retention in cluster mode on real servers (PostgreSQL, OpenStack Swift's S3 API): segments
past the limit leave the index and the object store in one purge cycle, a held segment stays
until its release, the deletion records verify, two receivers purging at once delete each
item once, and ``edge-csu retention purge``/``audit`` work on a cluster configuration."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu import lab
from edge.csu.receiver import cluster_purge, deletions, settings
from edge.csu.receiver import purge as csu_purge
from edge.csu.receiver.cluster import ClusterStore
from edge.csu.receiver.holds import HoldBook
from edge.csu.receiver.objstore import ObjectStore, ObjectStoreError
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.csu.receiver.retention import DAY_NS
from edge.errors import IntegrityError
from edge.events import EventSigner

from .conftest import REPO
from .pg_util import Postgres, postgres_server
from .s3_util import S3Lab, swift_s3
from .test_csu_retention import _authority
from .uplink_util import CSU_NAME, Sealer, make_csu, wait_until

# Starting Swift's four servers takes 10-30 s on a loaded build machine: slow tier.
pytestmark = pytest.mark.slow

SEC = 1_000_000_000
UNIT = "unit-ret"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Postgres, S3Lab]]:
    with postgres_server() as pg, swift_s3() as s3:
        lab.ensure_bucket(s3)
        yield pg, s3


@dataclass
class Cluster:
    config: Path
    cfg: settings.ServeConfig
    conninfo: str
    objects: ObjectStore
    s3: S3Lab
    bucket: str

    def store(self, receiver: str = "r1") -> ClusterStore:
        assert self.cfg.cluster is not None
        cluster = self.cfg.cluster.model_copy(update={"receiver_id": receiver})
        store = ClusterStore(cluster)
        store.prepare()
        return store


_made = [0]


@pytest.fixture
def cluster(servers: tuple[Postgres, S3Lab], tmp_path: Path) -> Cluster:
    """A fresh database (the purge's state is the cluster's) and bucket on the shared servers,
    and the receivers' csu.toml (the retention directory under ``tmp_path``)."""
    pg, s3 = servers
    _made[0] += 1
    name = f"ret{_made[0]}"
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    lab.ensure_bucket(s3, name)
    conninfo = psycopg.conninfo.make_conninfo(pg.conninfo, dbname=name)
    config = tmp_path / "csu.toml"
    config.write_text(
        f"""storage = "cluster"

[retention]
purge_interval_s = 60

[cluster]
receiver_id = "r1"

[cluster.database]
conninfo = "{conninfo}"

[cluster.object_store]
endpoint = "{s3.endpoint}"
bucket = "{name}"
access_key = "{s3.access_key}"
secret_file = "{s3.secret_file}"
"""
    )
    objects = ObjectStore(s3.endpoint, name, s3.access_key, s3.secret_file, timeout_s=10)
    return Cluster(config, settings.load(config), conninfo, objects, s3, name)


class Recorder:
    """Seals one camera's segments with chosen recording times into the cluster."""

    def __init__(self, store: ClusterStore, camera: str = "cam1") -> None:
        self.sealer = Sealer(UNIT, camera, _authority())
        self.store, self.camera = store, camera
        self.key = self.sealer.signing_key.public_key()
        epoch = self.sealer.epoch.epoch_id.hex()
        store.accept_envelope(UNIT, camera, epoch, self.sealer.envelope, self.key)

    def record(self, end_ns: int) -> int:
        seq = self.sealer.sequence
        raw = self.sealer.seal(b"init", b"m" * 200, start_ns=end_ns - 4 * SEC, end_ns=end_ns)
        self.store.accept_segment(UNIT, self.camera, seq, raw, self.key)
        return seq


def _rows(c: Cluster, camera: str = "cam1") -> set[int]:
    with psycopg.connect(c.conninfo) as conn:
        rows = conn.execute(
            "SELECT sequence FROM segments WHERE unit = %s AND camera = %s", (UNIT, camera)
        ).fetchall()
    return {int(r[0]) for r in rows}


def _objects(c: Cluster, camera: str = "cam1") -> set[int]:
    return {int(k.split("/")[2].split("-")[0]) for k in c.objects.keys(f"{UNIT}/{camera}/")}


def _envelopes(c: Cluster, camera: str) -> int:
    with psycopg.connect(c.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM envelopes WHERE unit = %s AND camera = %s", (UNIT, camera)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _records(c: Cluster) -> list[dict[str, object]]:
    public = csu_purge.public_key(c.cfg.retention)
    records, _ = deletions.verify(csu_purge.ledger_path(c.cfg.retention), public)
    return records


def _event(when_ns: int) -> tuple[str, bytes]:
    """An event as a unit sends it (its id, its wire form), of ``when_ns``."""
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), UNIT)
    event = signer.sign(
        camera="cam1", category="alert", kind="intrusion", rule="r",
        wall_ns=when_ns, frame_index=1, details={},
    )  # fmt: skip
    return str(event.body["id"]), event.wire()


def test_segments_past_the_cap_leave_the_index_and_the_object_store_in_one_cycle(
    cluster: Cluster,
) -> None:
    store = cluster.store()
    now = time.time_ns()
    cam1 = Recorder(store)
    old = [cam1.record(now - (33 - i) * DAY_NS) for i in range(3)]
    young = [cam1.record(now - (29 - i) * DAY_NS) for i in range(2)]
    cam2 = Recorder(store, "cam2")  # every segment old: its epoch envelope goes too
    gone2 = [cam2.record(now - 40 * DAY_NS + i * SEC) for i in range(2)]
    old_event, old_body = _event(now - 31 * DAY_NS)
    young_event, young_body = _event(now - DAY_NS)
    store.store_event(UNIT, old_event, old_body)
    store.store_event(UNIT, young_event, young_body)
    assert _rows(cluster) == _objects(cluster) == {*old, *young}

    ledger = csu_purge.open_ledger(cluster.cfg.retention)
    report = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now)
    assert report is not None
    assert (report.deleted, report.events_deleted, report.held) == (5, 1, 0)
    assert _rows(cluster) == _objects(cluster) == set(young)
    assert _rows(cluster, "cam2") == _objects(cluster, "cam2") == set()
    assert _envelopes(cluster, "cam1") == 1 and _envelopes(cluster, "cam2") == 0
    assert store.index().event_ids(UNIT) == [young_event]
    # the records verify with the public key, and say what went and under which limit
    records = _records(cluster)
    assert sorted((r["kind"], r["camera"], r["count"]) for r in records) == sorted(
        [("segments", "cam1", 3), ("segments", "cam2", len(gone2)), ("events", None, 1)]
    )
    assert all(r["retention_days"] == 30 and r["released_hold"] is None for r in records)
    # the purged sequences are not gaps for the unit to send again
    assert store.cursor(UNIT)["cameras"]["cam1"]["gaps"] == []
    assert store.camera_status(UNIT, "cam1")["purged_by_retention"] == 3
    # a second cycle finds nothing more, writes nothing
    again = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now + SEC)
    assert again is not None and again.deleted == again.events_deleted == 0
    assert len(_records(cluster)) == 3
    store.close()


def test_a_held_segment_stays_until_its_release_which_is_audited(cluster: Cluster) -> None:
    store = cluster.store()
    now = time.time_ns()
    cam = Recorder(store)
    # just past the limit: the purge deletes them on time (the audit checks that)
    seqs = [cam.record(now - 30 * DAY_NS - 100 * SEC + i * 10 * SEC) for i in range(3)]
    held_meta = store.index().segment(UNIT, "cam1", seqs[1])
    assert held_meta is not None
    book = HoldBook(cluster.cfg.retention.directory, cluster.cfg.audit_key_file)
    hold = book.add(
        case="PV 2026/77", unit=UNIT, camera="cam1", from_ns=held_meta.start_wall_ns,
        to_ns=held_meta.end_wall_ns, who="j.martin",
    )  # fmt: skip
    ledger = csu_purge.open_ledger(cluster.cfg.retention)
    report = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now)
    assert report is not None and (report.deleted, report.held) == (2, 1)
    assert _rows(cluster) == _objects(cluster) == {seqs[1]}
    assert store.read_segment(UNIT, "cam1", seqs[1])  # its bytes are still readable
    book.release(hold.hold_id, who="j.martin", reason="case closed")
    report = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now + SEC)
    assert report is not None and (report.deleted, report.held) == (1, 0)
    assert _rows(cluster) == _objects(cluster) == set()
    last = _records(cluster)[-1]
    released = last["released_hold"]
    assert isinstance(released, dict) and released["hold_id"] == hold.hold_id
    assert released["case"] == "PV 2026/77" and last["sequences"] == [[seqs[1], seqs[1]]]
    # the audit finds the release in the hold log and nothing overdue
    public = csu_purge.public_key(cluster.cfg.retention)
    audit = cluster_purge.audit(store, cluster.cfg.retention, public, now_ns=now + 2 * SEC)
    assert audit.problems == [] and audit.records == 2 and audit.deleted == 3
    store.close()


def test_two_receivers_purging_at_once_delete_each_item_once(cluster: Cluster) -> None:
    stores = [cluster.store("r1"), cluster.store("r2")]
    now = time.time_ns()
    expected: set[tuple[str, int]] = set()
    for n in range(4):
        cam = Recorder(stores[0], f"cam{n}")
        expected |= {(f"cam{n}", cam.record(now - 31 * DAY_NS + i * SEC)) for i in range(5)}
    # while another session holds the cluster's purge lock, a purge skips its cycle
    other = PgSegmentIndex(cluster.conninfo, "other")
    ledger = csu_purge.open_ledger(cluster.cfg.retention)
    with other.purge_lock() as got:
        assert got
        skipped = cluster_purge.purge_once(stores[0], cluster.cfg.retention, ledger, now_ns=now)
        assert skipped is None and len(_rows(cluster, "cam0")) == 5
    other.close()
    # both receivers at the same instant (each with its own ledger object on the shared file)
    barrier = threading.Barrier(2)
    reports: list[object] = [None, None]

    def run(slot: int) -> None:
        own = csu_purge.open_ledger(cluster.cfg.retention)
        barrier.wait()
        reports[slot] = cluster_purge.purge_once(
            stores[slot], cluster.cfg.retention, own, now_ns=now
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deleted = sum(getattr(r, "deleted", 0) for r in reports)
    assert deleted == len(expected) == 20, reports
    # each segment is named by exactly one record, and the chain of records is whole
    named: list[tuple[str, int]] = []
    for r in _records(cluster):
        for a, b in r["sequences"]:  # type: ignore[attr-defined]
            named += [(str(r["camera"]), s) for s in range(a, b + 1)]
    assert sorted(named) == sorted(expected)
    for n in range(4):
        assert _rows(cluster, f"cam{n}") == _objects(cluster, f"cam{n}") == set()
    for s in stores:
        s.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_retention_commands_on_the_cluster_configuration(cluster: Cluster) -> None:
    store = cluster.store()
    now = time.time_ns()
    cam = Recorder(store)
    old = [cam.record(now - 30 * DAY_NS - 100 * SEC + i * SEC) for i in range(3)]
    young = cam.record(now - DAY_NS)
    run = _cli("retention", "purge", "--config", str(cluster.config))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["deleted"] == len(old)
    assert _rows(cluster) == _objects(cluster) == {young}
    audit = _cli("retention", "audit", "--config", str(cluster.config), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["ok"] and json.loads(audit.stdout)["deleted"] == 3
    # an edited record (one segment fewer claimed) fails the audit
    path = csu_purge.ledger_path(cluster.cfg.retention)
    text = path.read_text()
    path.write_text(text.replace('"count": 3', '"count": 2'))
    audit = _cli("retention", "audit", "--config", str(cluster.config))
    assert audit.returncode == 1 and "signature does not verify" in audit.stdout, audit.stdout
    # the last record removed (the one edit the chain alone cannot show): the database's
    # head says so
    path.write_text("".join(text.splitlines(keepends=True)[:-1]))
    audit = _cli("retention", "audit", "--config", str(cluster.config))
    assert audit.returncode == 1 and "records removed" in audit.stdout, audit.stdout
    path.write_text(text)
    # a segment past the limit that no purge deleted (none ran since): the audit says so
    cam.record(now - 31 * DAY_NS)
    audit = _cli("retention", "audit", "--config", str(cluster.config))
    assert audit.returncode == 1 and "under no hold" in audit.stdout, audit.stdout
    # a receiver on another retention directory (records and holds not the shared ones)
    # refuses to purge, and deletes nothing
    other = cluster.cfg.retention.model_copy(
        update={"directory": cluster.config.parent / "elsewhere"}
    )
    with pytest.raises(IntegrityError, match="shared retention directory"):
        cluster_purge.purge_once(store, other, csu_purge.open_ledger(other), now_ns=now)
    # the shared directory but a retention key of its own: refused too
    own_key = cluster.cfg.retention.model_copy(
        update={"key_file": cluster.config.parent / "elsewhere" / "own.pem"}
    )
    with pytest.raises(IntegrityError, match="shared key_file"):
        cluster_purge.purge_once(store, own_key, csu_purge.open_ledger(own_key), now_ns=now)
    assert len(_rows(cluster)) == 2
    store.close()


def test_serve_in_cluster_mode_purges_at_start_and_on_sigusr1_one_receiver_at_a_time(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two ``edge-csu serve`` in cluster mode sharing the retention directory (records, hold
    log, key): old segments go at start, then on SIGUSR1 sent to both at once, each once."""
    store = cluster.store("seed")
    now = time.time_ns()
    cam = Recorder(store)
    first = [cam.record(now - 30 * DAY_NS - 100 * SEC + i * SEC) for i in range(3)]
    young = cam.record(now - DAY_NS)
    csu = make_csu(tmp_path)
    keys = csu.directory / "keys"
    shared = lab.ClusterShared(
        cert_file=keys / f"{CSU_NAME}.crt", key_file=keys / f"{CSU_NAME}.key",
        client_ca_file=csu.pki.chain, registry_dir=csu.directory / "units",
        conninfo=cluster.conninfo, s3=cluster.s3, bucket=cluster.bucket,
    )  # fmt: skip
    retention = cluster.cfg.retention
    extra = (
        f'[retention]\ndirectory = "{retention.directory}"\nkey_file = "{retention.key_file}"\n'
        "purge_interval_s = 3600\n"
    )
    with lab.cluster_front(tmp_path / "lab", shared, 2, extra) as front:
        wait_until(lambda: _rows(cluster) == {young}, 30, "the purge at start")
        assert _objects(cluster) == {young}
        later = [cam.record(now - 30 * DAY_NS - 50 * SEC + i * SEC) for i in range(2)]
        assert _rows(cluster) == {young, *later}
        for r in front.receivers:
            assert r.proc is not None
            r.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: _rows(cluster) == {young}, 30, "the purge on SIGUSR1")
        wait_until(lambda: _objects(cluster) == {young}, 10, "the objects deleted")
        time.sleep(1)  # the other receiver's cycle: skipped, or nothing left to delete
    named = [
        s
        for r in _records(cluster)
        for a, b in r["sequences"]  # type: ignore[attr-defined]
        for s in range(a, b + 1)
    ]
    assert sorted(named) == sorted([*first, *later])
    audit = _cli("retention", "audit", "--config", str(cluster.config))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    store.close()


def test_objects_whose_deletion_failed_are_orphans_the_sweep_deletes(cluster: Cluster) -> None:
    """The object store failing after the rows went: the purge completes (the records and the
    rows say what was deleted), the bytes left behind are named by no row, and the orphan
    sweep deletes them. Never the reverse (a row naming bytes that are gone)."""
    store = cluster.store()
    now = time.time_ns()
    cam = Recorder(store)
    old = [cam.record(now - 30 * DAY_NS - 100 * SEC + i * SEC) for i in range(2)]
    young = cam.record(now - DAY_NS)

    def refuse(key: str) -> None:
        raise ObjectStoreError(f"object store: delete {key}: injected outage")

    real_delete = store.objects.delete
    store.objects.delete = refuse  # type: ignore[method-assign]
    ledger = csu_purge.open_ledger(cluster.cfg.retention)
    report = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now)
    store.objects.delete = real_delete  # type: ignore[method-assign]
    assert report is not None and report.deleted == 2
    assert _rows(cluster) == {young} and _objects(cluster) == {*old, young}
    counts = store.sweep(older_than_s=0, now=time.time() + 1)
    assert counts["orphans_deleted"] == 2
    assert _objects(cluster) == {young}
    assert store.read_segment(UNIT, "cam1", young)
    store.close()


def test_a_hold_placed_in_the_shared_log_is_never_missed_by_a_receiver_without_it(
    cluster: Cluster,
) -> None:
    """``edge-csu hold add`` on a cluster configuration tells the database how long the
    shared hold log is: a receiver purging from another directory (no hold in it) refuses,
    even before any purge ran; from the shared one the held segment stays."""
    store = cluster.store()
    now = time.time_ns()
    cam = Recorder(store)
    seqs = [cam.record(now - 30 * DAY_NS - 100 * SEC + i * 10 * SEC) for i in range(2)]
    meta = store.index().segment(UNIT, "cam1", seqs[0])
    assert meta is not None
    placed = _cli(
        "hold", "add", "--config", str(cluster.config), "--case", "PV 2026/9", "--unit", UNIT,
        "--camera", "cam1", "--from", f"@{meta.start_wall_ns / 1e9:.3f}",
        "--to", f"@{meta.end_wall_ns / 1e9:.3f}", "--by", "j.martin",
    )  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    other = cluster.cfg.retention.model_copy(
        update={"directory": cluster.config.parent / "elsewhere"}
    )
    with pytest.raises(IntegrityError, match="hold log: 0 entries here"):
        cluster_purge.purge_once(store, other, csu_purge.open_ledger(other), now_ns=now)
    assert _rows(cluster) == set(seqs)
    ledger = csu_purge.open_ledger(cluster.cfg.retention)
    report = cluster_purge.purge_once(store, cluster.cfg.retention, ledger, now_ns=now)
    assert report is not None and (report.deleted, report.held) == (1, 1)
    assert _rows(cluster) == _objects(cluster) == {seqs[0]}
    store.close()
