"""The cluster mode's segment index on a real PostgreSQL: the same chain rules as the embedded
store, decided by the database when two receivers race on one camera."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import SegmentStore
from edge.csu.receiver.archive import Refusal, StoredSegment, Verdict, _meta_of
from edge.csu.receiver.cluster import ClusterStore
from edge.csu.receiver.pgindex import MIGRATIONS, PgSegmentIndex
from edge.csu.receiver.settings import ClusterConfig
from edge.errors import StorageUnavailableError
from edge.events import EventSigner
from edge.vault import format as sealed

from .pg_util import postgres, postgres_server
from .test_csu_retention import _authority
from .uplink_util import Sealer

SEC = 1_000_000_000
UNIT = "unit-pg"


@pytest.fixture(scope="module")
def conninfo() -> Iterator[str]:
    with postgres() as info:
        index = PgSegmentIndex(info, "setup")
        index.migrate()
        index.close()
        yield info


def _meta(raw: bytes) -> StoredSegment:
    return _meta_of(sealed.parse_segment(raw), time.time_ns())


class Forking(Sealer):
    """A unit's sealer that can also seal a *different* segment under a sequence already used:
    what a forged or rolled-back unit would send, to one receiver or to two."""

    def fork(self, back_to: int, prev_hash: bytes) -> None:
        self.sequence, self.prev_hash = back_to, prev_hash


def _seal(sealer: Sealer, payload: bytes) -> bytes:
    now = time.time_ns()
    return sealer.seal(b"init", payload, start_ns=now - 4 * SEC, end_ns=now)


def test_migrations_apply_once_even_when_receivers_start_together(conninfo: str) -> None:
    versions: list[int] = []

    def start() -> None:
        index = PgSegmentIndex(conninfo, "r")
        versions.append(index.migrate())
        index.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [len(MIGRATIONS)] * 4
    with psycopg.connect(conninfo) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in applied] == list(range(1, len(MIGRATIONS) + 1))


def test_same_verdicts_as_the_embedded_store(conninfo: str, tmp_path: object) -> None:
    """Differential: one script of arrivals (in order, out of order, retries, forks) given to
    the embedded store and to the database; every verdict must agree."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    sealer = Forking(UNIT, "cam-diff", _authority())
    key = sealer.signing_key.public_key()
    main = [_seal(sealer, b"a%d" % i * 100) for i in range(6)]
    sealer.fork(3, sealed.sha256(main[2]))
    forked = [_seal(sealer, b"f%d" % i * 100) for i in range(2)]  # other #3, #4
    script = [main[0], main[2], main[1], main[1], forked[0], main[3], forked[1], main[5]]
    script += [main[4], forked[0]]
    embedded = SegmentStore(tmp_path / "storage")
    index = PgSegmentIndex(conninfo, "r1")
    try:
        for raw in script:
            seq = sealed.parse_segment(raw).header.sequence
            try:
                want: object = embedded.accept_segment(UNIT, "cam-diff", seq, raw, key)[0]
            except Refusal as exc:
                want = (exc.status, exc.reason)
            try:
                got: object = index.accept(UNIT, "cam-diff", _meta(raw))
            except Refusal as exc:
                got = (exc.status, exc.reason)
            assert got == want, f"#{seq}"
        # the first history to reach #3 won it; the rest of the other one was refused
        assert index.cursor(UNIT, "cam-diff") == 4
        held = index.segments(UNIT, "cam-diff")
        assert held[3].hash == sealed.sha256(forked[0]).hex()
        assert {s: m.hash for s, m in held.items()} == {
            s: m.hash for s, m in embedded.camera(UNIT, "cam-diff").segments.items()
        }
    finally:
        index.close()


def test_a_gap_record_is_the_predecessor_of_the_segment_after_it(conninfo: str) -> None:
    index = PgSegmentIndex(conninfo, "r1")
    sealer = Sealer(UNIT, "cam-gap", _authority())
    try:
        first = _seal(sealer, b"x" * 100)
        assert index.accept(UNIT, "cam-gap", _meta(first)) is Verdict.STORED
        chain = bytes(32 * [7])
        args = (UNIT, "cam-gap", 1, 4, sealed.sha256(first).hex(), chain.hex())
        assert index.accept_gap(*args) is Verdict.STORED
        assert index.accept_gap(*args) is Verdict.DUPLICATE
        with pytest.raises(Refusal):
            index.accept_gap(UNIT, "cam-gap", 2, 4, "00" * 32, chain.hex())
        sealer.sequence, sealer.prev_hash = 5, sealed.sha256(first)  # skips the record
        with pytest.raises(Refusal, match="does not continue the unit's gap record"):
            index.accept(UNIT, "cam-gap", _meta(_seal(sealer, b"z" * 100)))
        sealer.sequence, sealer.prev_hash = 5, chain
        after = _seal(sealer, b"y" * 100)
        assert index.accept(UNIT, "cam-gap", _meta(after)) is Verdict.STORED
    finally:
        index.close()


def _race(conninfo: str, camera: str, a: StoredSegment, b: StoredSegment) -> list[object]:
    """``a`` to receiver A and ``b`` to receiver B at the same instant; both verdicts."""
    barrier = threading.Barrier(2)
    out: list[object] = [None, None]

    def receiver(slot: int, meta: StoredSegment, index: PgSegmentIndex) -> None:
        barrier.wait()
        try:
            out[slot] = index.accept(UNIT, camera, meta)
        except Refusal as exc:
            out[slot] = exc.status

    indexes = [PgSegmentIndex(conninfo, "receiver-a"), PgSegmentIndex(conninfo, "receiver-b")]
    threads = [
        threading.Thread(target=receiver, args=(i, m, idx))
        for i, (m, idx) in enumerate(zip((a, b), indexes, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for idx in indexes:
        idx.close()
    return out


def test_two_receivers_racing_never_both_accept_diverging_segments(conninfo: str) -> None:
    rounds = 30
    for n in range(rounds):
        camera = f"cam-race-{n}"
        sealer = Forking(UNIT, camera, _authority())
        base = _seal(sealer, b"b" * 100)
        index = PgSegmentIndex(conninfo, "setup")
        index.accept(UNIT, camera, _meta(base))
        index.close()
        x1 = _seal(sealer, b"x" * 100)  # #1 of one history
        sealer.fork(1, sealed.sha256(base))
        y1 = _seal(sealer, b"y" * 100)  # #1 of another
        y2 = _seal(sealer, b"z" * 100)  # #2 continuing the other #1
        if n % 2:
            # the same sequence, diverging bytes: exactly one is stored
            verdicts = _race(conninfo, camera, _meta(x1), _meta(y1))
            assert sorted(map(str, verdicts)) == ["409", "Verdict.STORED"], verdicts
        else:
            # neighbours of diverging histories: each alone fits, together they fork
            verdicts = _race(conninfo, camera, _meta(x1), _meta(y2))
            assert verdicts.count(Verdict.STORED) == 1, verdicts
        index = PgSegmentIndex(conninfo, "check")
        held = index.segments(UNIT, camera)
        index.close()
        for s in held:
            if s - 1 in held:
                assert held[s].prev_hash == held[s - 1].hash, f"round {n}: a fork was stored"


def test_each_receipt_is_kept_once_the_first_whichever_receiver_signed_it(conninfo: str) -> None:
    """Cluster mode keeps the receipts too (migration 8): receivers racing to keep a receipt
    of the same segment (a delivery sent again, to another receiver) all answer with the one
    kept first; it is read back for the bundle and deleted with its segment."""
    camera = "cam-receipts"
    sealer = Sealer(UNIT, camera, _authority())
    raws = [_seal(sealer, bytes([n]) * 100) for n in range(2)]
    setup = PgSegmentIndex(conninfo, "setup")
    for raw in raws:
        assert setup.accept(UNIT, camera, _meta(raw)) is Verdict.STORED
    signed = [b"receipt-from-receiver-%d" % n for n in range(4)]
    kept: list[bytes] = [b""] * len(signed)
    start = threading.Barrier(len(signed))

    def keep(slot: int) -> None:
        index = PgSegmentIndex(conninfo, f"r{slot}")
        start.wait()
        kept[slot] = index.keep_receipt(UNIT, camera, 0, signed[slot])
        index.close()

    threads = [threading.Thread(target=keep, args=(n,)) for n in range(len(signed))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(kept)) == 1 and kept[0] in signed, kept
    assert setup.keep_receipt(UNIT, camera, 1, b"of #1") == b"of #1"
    assert setup.receipts(UNIT, camera, [0, 1, 2]) == {0: kept[0], 1: b"of #1"}
    setup.delete_segments(UNIT, camera, [[0, 0]], [0], time.time_ns())
    assert setup.receipts(UNIT, camera, [0, 1]) == {1: b"of #1"}
    setup.close()


def test_a_database_outage_is_unavailable_then_the_same_receiver_goes_on() -> None:
    """PostgreSQL stopped under a receiver: each call says the store is unavailable (the
    receiver answers 503, the unit retries); once the server is back, the receiver's next call
    reconnects and the unit's retry is stored, once."""
    with postgres_server() as server:
        index = PgSegmentIndex(server.conninfo, "receiver-a", connect_timeout_s=2)
        index.migrate()
        sealer = Sealer(UNIT, "cam-outage", _authority())
        first, second = _seal(sealer, b"1" * 100), _seal(sealer, b"2" * 100)
        assert index.accept(UNIT, "cam-outage", _meta(first)) is Verdict.STORED
        server.stop()
        for _ in range(2):
            with pytest.raises(StorageUnavailableError):
                index.accept(UNIT, "cam-outage", _meta(second))
        server.start()
        assert index.accept(UNIT, "cam-outage", _meta(second)) is Verdict.STORED
        assert index.accept(UNIT, "cam-outage", _meta(second)) is Verdict.DUPLICATE
        assert sorted(index.segments(UNIT, "cam-outage")) == [0, 1]
        index.close()


def _cluster_store(conninfo: str, receiver: str, secret: Path) -> ClusterStore:
    """A cluster receiver's store; its object store is never reached by these tests (events,
    envelopes, status live in the database)."""
    secret.write_text("unused\n")
    return ClusterStore(
        ClusterConfig.model_validate(
            {
                "receiver_id": receiver,
                "database": {"conninfo": conninfo},
                "object_store": {
                    "endpoint": "http://127.0.0.1:9",
                    "bucket": "segments",
                    "access_key": "k",
                    "secret_file": secret,
                },
            }
        )
    )


def _event(unit: str, signing: ed25519.Ed25519PrivateKey, n: int) -> tuple[str, bytes]:
    event = EventSigner(signing, unit).sign(
        camera="cam1", category="alert", kind="intrusion", rule="r", wall_ns=time.time_ns(),
        frame_index=n, details={"n": n},
    )  # fmt: skip
    return str(event.body["id"]), event.wire()


def test_each_event_is_stored_once_and_published_by_one_receiver(
    conninfo: str, tmp_path: Path
) -> None:
    """Two receivers get the same event at once (a unit's retry after a failover): one row,
    one receiver to publish it; once published, a retry anywhere is acknowledged and not
    published again; the same id with other content is refused."""
    a = _cluster_store(conninfo, "r1", tmp_path / "s1")
    b = _cluster_store(conninfo, "r2", tmp_path / "s2")
    signing = ed25519.Ed25519PrivateKey.generate()
    event_id, body = _event("unit-ev", signing, 1)
    barrier = threading.Barrier(2)
    verdicts: dict[str, Verdict] = {}

    def store(name: str, where: ClusterStore) -> None:
        barrier.wait()
        verdicts[name] = where.store_event("unit-ev", event_id, body, to_publish=True)

    threads = [threading.Thread(target=store, args=p) for p in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.name for v in verdicts.values()) == ["DUPLICATE", "STORED"], verdicts
    winner, loser = (a, b) if verdicts["a"] is Verdict.STORED else (b, a)
    # the winner publishes; meanwhile the other may not (the unit is told to retry)
    with pytest.raises(StorageUnavailableError):
        loser.is_unpublished("unit-ev", event_id)
    winner.mark_published("unit-ev", event_id)
    for where in (a, b):
        assert where.store_event("unit-ev", event_id, body, to_publish=True) is Verdict.DUPLICATE
        assert where.is_unpublished("unit-ev", event_id) is False
    _, other = _event("unit-ev", signing, 2)
    with pytest.raises(Refusal) as refused:
        b.store_event("unit-ev", event_id, other, to_publish=True)
    assert refused.value.status == 409
    # a receiver that claimed an event and died: past the lease another one publishes it
    lost_id, lost = _event("unit-ev", signing, 3)
    assert a.store_event("unit-ev", lost_id, lost, to_publish=True) is Verdict.STORED
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE events SET claimed_ns = claimed_ns - %s WHERE event_id = %s",
            (int(11e9), lost_id),
        )
    assert b.is_unpublished("unit-ev", lost_id) is True
    a.close()
    b.close()


def test_envelopes_gaps_status_and_cursor_are_shared_by_the_receivers(
    conninfo: str, tmp_path: Path
) -> None:
    """What one receiver stored, any other serves: the unit's cursor (first, last, count,
    holes not covered by its gap records), envelopes, its status, the chain status."""
    a = _cluster_store(conninfo, "r1", tmp_path / "s1")
    b = _cluster_store(conninfo, "r2", tmp_path / "s2")
    sealer = Sealer("unit-cur", "cam1", _authority())
    key = sealer.signing_key.public_key()
    raws = [_seal(sealer, bytes([n]) * 64) for n in range(6)]
    epoch = sealer.epoch.epoch_id.hex()
    assert a.accept_envelope("unit-cur", "cam1", epoch, sealer.envelope, key) is Verdict.STORED
    assert b.accept_envelope("unit-cur", "cam1", epoch, sealer.envelope, key) is (Verdict.DUPLICATE)
    assert b.read_envelope("unit-cur", "cam1", epoch) == sealer.envelope
    for n in (0, 1, 4, 5):  # 2..3 lost at the unit, recorded below; written straight to the index
        assert a.index().accept("unit-cur", "cam1", _meta(raws[n])) is Verdict.STORED
    cursor = b.cursor("unit-cur")["cameras"]["cam1"]
    assert cursor == {"first": 0, "last": 5, "count": 4, "gaps": [[2, 3]]}
    assert b.camera_status("unit-cur", "cam1")["chain"] == "gaps"
    gap = sealed.sign_gap(
        sealed.GapRecord("unit-cur", "cam1", time.time_ns(), 2, 3, 0, sealed.sha256(raws[1]), "t"),
        sealer.signing_key,
    )
    assert b.accept_gap("unit-cur", "cam1", 2, 3, gap, key) == (Verdict.STORED, [])
    assert a.cursor("unit-cur")["cameras"]["cam1"]["gaps"] == []
    assert "losses recorded" in a.camera_status("unit-cur", "cam1")["chain"]
    a.write_status("unit-cur", {"last_contact_ns": 5, "peer": "10.0.0.1"})
    assert b.read_status("unit-cur") == {"last_contact_ns": 5, "peer": "10.0.0.1", "receiver": "r1"}
    assert "unit-cur" in b.units() and b.cameras_of("unit-cur") == ["cam1"]
    a.close()
    b.close()
