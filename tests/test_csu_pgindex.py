"""The cluster mode's segment index on a real PostgreSQL: the same chain rules as the embedded
store, decided by the database when two receivers race on one camera."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from edge.csu.receiver import SegmentStore
from edge.csu.receiver.archive import Refusal, StoredSegment, Verdict, _meta_of
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.errors import StorageUnavailableError
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
    assert versions == [1, 1, 1, 1]


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
