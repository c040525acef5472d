"""The read side of the storage seam (:class:`edge.csu.receiver.base.SegmentReader`): what the
operators' listener reads (playlists, timeline, exports, alerts) answers the same from the
embedded store and from cluster mode's PostgreSQL, for one unit's history with a gap record,
an epoch envelope, events, a status report and a retention deletion.

The cluster side here is a real PostgreSQL; the object store is not reached (segment rows are
recorded as the cluster archive records them after its upload): the bytes' path through Swift
is the slow tier's (tests/test_csu_cluster_view.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.console.alerts import AlertBook, unit_conditions
from edge.csu.console.roles import Scope
from edge.csu.receiver import SegmentStore
from edge.csu.receiver.archive import StoredSegment, Verdict, ranges
from edge.csu.receiver.base import SegmentReader
from edge.csu.receiver.cluster import ClusterStore
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.events import EventSigner
from edge.vault import format as sealed

from .pg_util import postgres
from .test_csu_pgindex import _cluster_store
from .test_csu_retention import _authority
from .uplink_util import Sealer

SEC = 1_000_000_000
UNIT, CAM, OTHER = "unit-read", "street", "yard"
T0 = 1_900_000_000 * SEC


@pytest.fixture(scope="module")
def conninfo() -> Iterator[str]:
    with postgres() as info:
        index = PgSegmentIndex(info, "setup")
        index.migrate()
        index.close()
        yield info


def _history(embedded: SegmentStore, cluster: ClusterStore) -> dict[str, Any]:
    """The same arrivals into both stores: #0..#9 of ``street`` 2 s each, with #4..#5 lost at
    the unit (its gap record) and a 30 s pause before #8; two of ``yard``; an envelope, two
    events and a status report."""
    signing = ed25519.Ed25519PrivateKey.generate()
    key = signing.public_key()
    sealer = Sealer(UNIT, CAM, _authority(), signing)
    index = cluster.index()
    at = T0
    for seq in range(10):
        if seq == 4:
            gap = sealed.GapRecord(
                UNIT, CAM, T0 + 20 * SEC, 4, 5, after_wall_ns=at, prev_hash=sealer.prev_hash,
                reason="power cut",
            )  # fmt: skip
            raw_gap = sealed.sign_gap(gap, signing)
            for store in (embedded, cluster):
                assert store.accept_gap(UNIT, CAM, 4, 5, raw_gap, key)[0] is Verdict.STORED
            sealer.prev_hash = sealed.parse_gap(raw_gap).chain_hash
            sealer.sequence, at = 6, at + 4 * SEC
            continue
        if seq == 5:
            continue
        if seq == 8:
            at += 30 * SEC
        raw = sealer.seal(b"init", b"m%d" % seq * 50, start_ns=at, end_ns=at + 2 * SEC)
        at += 2 * SEC
        verdict, meta = embedded.accept_segment(UNIT, CAM, seq, raw, key)
        assert verdict is Verdict.STORED
        # what ClusterArchive.accept_segment records once the bytes are in the object store
        assert index.accept(UNIT, CAM, meta) is Verdict.STORED
    epoch = sealer.epoch.epoch_id.hex()
    for store in (embedded, cluster):
        assert store.accept_envelope(UNIT, CAM, epoch, sealer.envelope, key) is Verdict.STORED
    yard = Sealer(UNIT, OTHER, _authority(), signing)
    for i in range(2):
        raw = yard.seal(b"i", b"y" * 40, start_ns=T0 + i * SEC, end_ns=T0 + (i + 1) * SEC)
        _, meta = embedded.accept_segment(UNIT, OTHER, i, raw, key)
        index.accept(UNIT, OTHER, meta)
    events = EventSigner(signing, UNIT)
    ids: list[str] = []
    for kind, state in (("cabinet-door-open", "raised"), ("line-crossing", "")):
        event = events.sign(
            camera="unit" if kind.startswith("cabinet") else CAM, category="alert", kind=kind,
            rule="r", wall_ns=T0 + len(ids) * SEC, frame_index=-1,
            details={"message": kind}, state=state or None,
        )  # fmt: skip
        ids.append(str(event.body["id"]))
        for store in (embedded, cluster):
            assert store.store_event(UNIT, ids[-1], event.wire()) is Verdict.STORED
    status = {"last_contact_ns": T0, "peer": "192.0.2.7", "backlog": {"items": 3}}
    for store in (embedded, cluster):
        store.write_status(UNIT, status)
    return {"epoch": epoch, "envelope": sealer.envelope, "events": ids, "status": status}


def _seqs(segs: list[StoredSegment]) -> list[tuple[int, str]]:
    return [(s.sequence, s.hash) for s in segs]


def _answers(store: SegmentReader, epoch: str) -> dict[str, Any]:
    """Everything the operators' listener asks, for the history of :func:`_history`."""
    records = store.records(UNIT, CAM, T0 + 5 * SEC, T0 + 60 * SEC)
    return {
        "units": store.units(),
        "cameras": store.cameras_of(UNIT),
        "none": store.cameras_of("unit-nobody"),
        "live": store.latest(UNIT, CAM, 3),
        "live_all": _seqs(store.latest(UNIT, CAM, 100)),
        "range": store.in_range(UNIT, CAM, T0 + 3 * SEC, T0 + 13 * SEC),
        # the bounds are strict: a segment ending at from, or starting at to, is outside
        "edges": _seqs(store.in_range(UNIT, CAM, T0 + 2 * SEC, T0 + 4 * SEC)),
        "empty": store.in_range(UNIT, CAM, T0 - 100 * SEC, T0 - 50 * SEC),
        "span": store.span(UNIT, CAM),
        "no_span": store.span(UNIT, "nothing"),
        "records": (_seqs(records.segments), [g.raw for g in records.gaps], records.purged),
        "envelope": store.read_envelope(UNIT, CAM, epoch),
        "no_envelope": store.read_envelope(UNIT, CAM, "0" * 32),
        "events": sorted((e.event_id, e.body) for e in store.events(UNIT)),
        "no_event": store.event(UNIT, "0" * 32),
    }


def test_both_stores_answer_the_operators_reads_alike(conninfo: str, tmp_path: Path) -> None:
    embedded = SegmentStore(tmp_path / "storage")
    cluster = _cluster_store(conninfo, "r-read", tmp_path / "secret")
    try:
        made = _history(embedded, cluster)
        epoch = str(made["epoch"])
        got = [_answers(embedded, epoch), _answers(cluster, epoch)]
        assert got[0] == got[1]
        answers = got[0]
        assert answers["units"] == [UNIT] and answers["cameras"] == [CAM, OTHER]
        assert answers["none"] == [] and answers["empty"] == [] and answers["no_span"] is None
        live = answers["live"]
        assert isinstance(live, list) and [s.sequence for s in live] == [7, 8, 9]
        assert [s.sequence for s in answers["range"]] == [1, 2, 3, 6]
        assert [q for q, _ in answers["edges"]] == [1]
        assert answers["span"] == (T0, T0 + 50 * SEC)
        segs, gaps, purged = answers["records"]
        assert [q for q, _ in segs] == [2, 3, 6, 7, 8, 9] and len(gaps) == 1 and purged == []
        assert answers["envelope"] == made["envelope"] and answers["no_envelope"] is None
        assert [i for i, _ in answers["events"]] == sorted(made["events"])
        for store in (embedded, cluster):
            one = store.event(UNIT, str(made["events"][0]))
            assert one is not None and json.loads(one.body)["event"]["kind"] == "cabinet-door-open"
            assert abs(one.received - time.time()) < 600  # when it arrived at the CSU
        # the status: what the unit reported (cluster mode adds which receiver took it)
        assert embedded.read_status(UNIT) == made["status"]
        assert cluster.read_status(UNIT) == {**made["status"], "receiver": "r-read"}

        # retention deletes #0..#1 in both: the reads follow, the range is declared purged
        index = embedded.camera(UNIT, CAM)
        with index.lock:
            index.delete([0, 1])
        cluster.index().delete_segments(UNIT, CAM, ranges([0, 1]), [0, 1], time.time_ns())
        after = [_answers(embedded, epoch), _answers(cluster, epoch)]
        assert after[0] == after[1]
        assert after[0]["span"] == (T0 + 4 * SEC, T0 + 50 * SEC)
        assert after[0]["records"][2] == [(0, 1)]
        assert [s.sequence for s in after[0]["range"]] == [2, 3, 6]
    finally:
        cluster.close()


def test_the_alerts_inbox_and_door_state_read_the_cluster_database(
    conninfo: str, tmp_path: Path
) -> None:
    """The console's alerts and units page in cluster mode: events stored through one
    receiver's store are listed, found and replayed through another's."""
    signing = ed25519.Ed25519PrivateKey.generate()
    signer = EventSigner(signing, "unit-alerts")
    door = signer.sign(
        camera="unit", category="alert", kind="cabinet-door-open", rule="unit",
        wall_ns=T0, frame_index=-1, details={"message": "door"}, state="raised",
    )  # fmt: skip
    count = signer.sign(
        camera=CAM, category="count", kind="people", rule="c", wall_ns=T0 + SEC,
        frame_index=1, details={},
    )  # fmt: skip
    one = _cluster_store(conninfo, "r-one", tmp_path / "s1")
    two = _cluster_store(conninfo, "r-two", tmp_path / "s2")
    try:
        for event in (door, count):
            assert one.store_event("unit-alerts", str(event.body["id"]), event.wire()).value == 201
        book = AlertBook(two, tmp_path / "operators.db")
        listed = book.alerts(Scope.parse("unit-alerts/street"))
        assert [a.id for a in listed] == [door.body["id"]]  # counts are not alerts
        found = book.find(Scope(), "unit-alerts", str(door.body["id"]))
        assert found is not None and found.kind == "cabinet-door-open"
        assert (
            book.find(Scope.parse("unit-other/street"), "unit-alerts", str(door.body["id"])) is None
        )
        assert unit_conditions(two, "unit-alerts").door == "open"
    finally:
        one.close()
        two.close()
