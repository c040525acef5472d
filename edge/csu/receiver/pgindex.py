"""The cluster mode's segment index in PostgreSQL: where several receivers decide, together,
which segment a camera's chain holds under each sequence.

Each receiver of a cluster verifies a segment's signature on its own (no shared state is
needed for that), then asks the database to record it. The database is the one judge of the
chain rules the embedded store applies under its per-camera lock (:mod:`.archive`): a retry of
the same bytes is a duplicate; other bytes under a held sequence are refused; a segment must
continue the one before it (or the unit's gap record) and be continued by the one after it.

Two receivers racing on one camera must not both accept diverging segments: with a check
followed by an insert, receiver A could store #7 while receiver B stores an #8 that continues
a *different* #7, each having checked before the other wrote. So every decision for a camera
runs in one transaction that first takes that camera's row in ``cameras`` ``FOR UPDATE``: the
decisions for one camera are serialised across every receiver and process, those for different
cameras run in parallel. The primary key ``(unit, camera, sequence)`` is the last guard.

The sealed bytes go to the object store *before* the row commits, under a key that includes
their hash (``<unit>/<camera>/<sequence>-<sha256>.seg``): a loser's upload can never replace
the winner's bytes, and an object without a row is garbage a sweep may delete, never evidence.

Schema changes are numbered migrations applied in one transaction by :meth:`PgSegmentIndex.
migrate`, idempotent, safe for several receivers starting at once (advisory lock).
Thread-safety: one connection per instance, used by one thread at a time (the caller's lock
or one instance per worker). A lost connection (the database restarted, the network cut) is
:class:`StorageUnavailableError` for the call that meets it; the next call connects again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple, fields
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ...errors import StorageUnavailableError
from .archive import Refusal, StoredSegment, Verdict

#: Numbered schema migrations; a deployed database records the last one applied.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cameras (
        unit text NOT NULL,
        camera text NOT NULL,
        PRIMARY KEY (unit, camera)
    );
    CREATE TABLE segments (
        unit text NOT NULL,
        camera text NOT NULL,
        sequence bigint NOT NULL,
        hash text NOT NULL,
        prev_hash text NOT NULL,
        start_wall_ns bigint NOT NULL,
        end_wall_ns bigint NOT NULL,
        frame_count integer NOT NULL,
        first_frame_index bigint NOT NULL,
        epoch_id text NOT NULL,
        size bigint NOT NULL,
        received_ns bigint NOT NULL,
        receiver text NOT NULL,
        PRIMARY KEY (unit, camera, sequence),
        FOREIGN KEY (unit, camera) REFERENCES cameras
    );
    CREATE TABLE gaps (
        unit text NOT NULL,
        camera text NOT NULL,
        first_sequence bigint NOT NULL,
        last_sequence bigint NOT NULL,
        prev_hash text NOT NULL,
        chain_hash text NOT NULL,
        PRIMARY KEY (unit, camera, last_sequence),
        FOREIGN KEY (unit, camera) REFERENCES cameras
    );
    """,
    # 2: what else a unit sends, so that any receiver can serve any unit (cluster serve).
    """
    ALTER TABLE gaps ADD COLUMN raw bytea;
    CREATE TABLE envelopes (
        unit text NOT NULL,
        camera text NOT NULL,
        epoch text NOT NULL,
        raw bytea NOT NULL,
        receiver text NOT NULL,
        PRIMARY KEY (unit, camera, epoch)
    );
    CREATE TABLE events (
        unit text NOT NULL,
        event_id text NOT NULL,
        body bytea NOT NULL,
        published boolean NOT NULL,
        received_ns bigint NOT NULL,
        receiver text NOT NULL,
        publisher text,
        claimed_ns bigint,
        PRIMARY KEY (unit, event_id)
    );
    CREATE TABLE unit_status (
        unit text PRIMARY KEY,
        status jsonb NOT NULL,
        updated_ns bigint NOT NULL,
        receiver text NOT NULL
    );
    """,
    # 3: retention (cluster_purge): ranges deleted by the purge (not gaps in the chain), and
    # the head of the deletion records and of the hold log as the last purge left them.
    """
    CREATE TABLE purged (
        unit text NOT NULL,
        camera text NOT NULL,
        first_sequence bigint NOT NULL,
        last_sequence bigint NOT NULL,
        deleted_ns bigint NOT NULL
    );
    CREATE INDEX purged_camera ON purged (unit, camera);
    CREATE TABLE retention_state (
        id integer PRIMARY KEY CHECK (id = 1),
        ledger_count bigint NOT NULL,
        ledger_head text NOT NULL,
        hold_entries bigint NOT NULL,
        updated_ns bigint NOT NULL,
        receiver text NOT NULL
    );
    """,
    # 4: viewing in cluster mode: a camera's segments by time (recorded playlists, exports).
    """
    CREATE INDEX segments_by_end ON segments (unit, camera, end_wall_ns);
    """,
    # 5: events not yet acknowledged by the MQTT broker, the oldest first (republished).
    """
    CREATE INDEX events_unpublished ON events (received_ns) WHERE NOT published;
    """,
    # 6: the console's state, shared by every receiver (:mod:`edge.csu.console.pgconsole`):
    # accounts, sessions (SHA-256 of the tokens), alert decisions. The columns of
    # ``operators`` and ``sessions`` are those of the embedded operators' database.
    """
    CREATE TABLE operators (
        name text PRIMARY KEY,
        role text NOT NULL,
        scope text NOT NULL,
        password text NOT NULL,
        totp_secret text NOT NULL,
        totp_last_step bigint NOT NULL DEFAULT 0,
        disabled boolean NOT NULL DEFAULT false,
        failures integer NOT NULL DEFAULT 0,
        last_failure double precision NOT NULL DEFAULT 0,
        created double precision NOT NULL,
        auth text NOT NULL DEFAULT 'totp'
    );
    CREATE TABLE sessions (
        token_sha256 text PRIMARY KEY,
        name text NOT NULL REFERENCES operators (name),
        csrf text NOT NULL,
        created double precision NOT NULL,
        last_seen double precision NOT NULL,
        cert_sha256 text
    );
    CREATE INDEX sessions_by_name ON sessions (name);
    CREATE TABLE alert_decisions (
        id bigserial PRIMARY KEY,
        event_id text NOT NULL,
        unit text NOT NULL,
        camera text NOT NULL,
        rule text NOT NULL,
        decision text NOT NULL,
        comment text NOT NULL,
        who text NOT NULL,
        decided double precision NOT NULL,
        time_to_decide_s double precision NOT NULL,
        receiver text NOT NULL
    );
    CREATE INDEX alert_decisions_event ON alert_decisions (event_id);
    CREATE UNIQUE INDEX alert_decisions_settled ON alert_decisions (event_id)
        WHERE decision <> 'escalate';
    """,
    # 7: the shared audit chain, the operator audit log of every receiver, one hash chain
    # (:mod:`.pgaudit`): each row is the record's exact JSON line; ``audit_keys`` holds the
    # public audit key of each receiver, registered by its first append.
    """
    CREATE TABLE audit_chain (
        seq bigint PRIMARY KEY,
        receiver text NOT NULL,
        line text NOT NULL
    );
    CREATE TABLE audit_keys (
        key_id text NOT NULL,
        receiver text NOT NULL,
        public_pem text NOT NULL,
        registered_ns bigint NOT NULL,
        PRIMARY KEY (key_id, receiver)
    );
    """,
    # 8: the receipt the receivers signed of each segment, kept once (the first), so that the
    # CSU's evidence bundle carries it; deleted with its segment.
    """
    CREATE TABLE receipts (
        unit text NOT NULL,
        camera text NOT NULL,
        sequence bigint NOT NULL,
        receipt bytea NOT NULL,
        PRIMARY KEY (unit, camera, sequence)
    );
    """,
)

#: A receiver that claimed an event's publication and said nothing for this long (killed,
#: cut off) loses the claim: another publishes the event when the unit sends it again.
PUBLISH_LEASE_S = 10.0
_MIGRATION_LOCK = 0x65646765  # "edge": one receiver migrates, the others wait for it
_PURGE_LOCK = 0x65646770  # one receiver purges at a time; the others skip the cycle
_COLUMNS = ", ".join(f.name for f in fields(StoredSegment))


class PgSegmentIndex:
    def __init__(self, conninfo: str, receiver: str, *, connect_timeout_s: int = 5) -> None:
        self.receiver = receiver
        self._conninfo = conninfo
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on a live connection; the one place psycopg's errors are
        translated (a refusal raised inside rolls back and passes through)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._conninfo, autocommit=False, connect_timeout=self._timeout
                )
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:
            self.close()
            raise StorageUnavailableError(f"segment index: {exc}".strip()) from None

    def transaction(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        """One transaction on this connection, for the console's tables (:mod:`edge.csu.
        console.pgconsole`): a lost connection is :class:`StorageUnavailableError`."""
        return self._transaction()

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version now in force."""
        with self._transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_ns bigint NOT NULL)"
            )
            cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = cur.fetchone()
            current = int(row[0]) if row else 0
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version > current:
                    cur.execute(sql)
                    cur.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s)", (version, time.time_ns())
                    )
        return len(MIGRATIONS)

    def _lock_camera(self, cur: psycopg.Cursor[Any], unit: str, camera: str) -> None:
        cur.execute("INSERT INTO cameras VALUES (%s, %s) ON CONFLICT DO NOTHING", (unit, camera))
        cur.execute(
            "SELECT 1 FROM cameras WHERE unit = %s AND camera = %s FOR UPDATE", (unit, camera)
        )

    def accept(self, unit: str, camera: str, meta: StoredSegment) -> Verdict:
        """Record a verified segment under the chain rules, or raise :class:`Refusal` (409)."""
        s = meta.sequence
        with self._transaction() as cur:
            self._lock_camera(cur, unit, camera)
            cur.execute(
                "SELECT sequence, hash, prev_hash FROM segments "
                "WHERE unit = %s AND camera = %s AND sequence BETWEEN %s AND %s",
                (unit, camera, s - 1, s + 1),
            )
            near = {int(r[0]): (str(r[1]), str(r[2])) for r in cur.fetchall()}
            if s in near:
                if near[s][0] == meta.hash:
                    return Verdict.DUPLICATE
                raise Refusal(409, f"{camera}#{s} is already stored with other bytes")
            cur.execute(
                "SELECT chain_hash FROM gaps "
                "WHERE unit = %s AND camera = %s AND last_sequence = %s",
                (unit, camera, s - 1),
            )
            gap = cur.fetchone()
            if gap is not None:
                if gap[0] != meta.prev_hash:
                    raise Refusal(409, f"{camera}#{s} does not continue the unit's gap record")
            elif s - 1 in near and near[s - 1][0] != meta.prev_hash:
                raise Refusal(409, f"{camera}#{s} does not continue #{s - 1}")
            if s + 1 in near and near[s + 1][1] != meta.hash:
                raise Refusal(409, f"#{s + 1} does not continue {camera}#{s}")
            cur.execute(
                f"INSERT INTO segments ({_COLUMNS}, unit, camera, receiver) "  # noqa: S608
                f"VALUES ({', '.join(['%s'] * (len(fields(StoredSegment)) + 3))})",
                (*astuple(meta), unit, camera, self.receiver),
            )
        return Verdict.STORED

    def accept_gap(
        self,
        unit: str,
        camera: str,
        first: int,
        last: int,
        prev_hash: str,
        chain_hash: str,
        raw: bytes | None = None,
    ) -> Verdict:
        """Record a unit's verified gap record (same rules as :meth:`.archive.SegmentStore.
        accept_gap`: once per last sequence, continuing the segment before it)."""
        with self._transaction() as cur:
            self._lock_camera(cur, unit, camera)
            cur.execute(
                "SELECT prev_hash, chain_hash, first_sequence FROM gaps "
                "WHERE unit = %s AND camera = %s AND last_sequence = %s",
                (unit, camera, last),
            )
            held = cur.fetchone()
            if held is not None:
                if (held[0], held[1], held[2]) == (prev_hash, chain_hash, first):
                    return Verdict.DUPLICATE
                raise Refusal(409, f"{camera}: another gap record ends at #{last}")
            cur.execute(
                "SELECT hash FROM segments WHERE unit = %s AND camera = %s AND sequence = %s",
                (unit, camera, first - 1),
            )
            before = cur.fetchone()
            if before is not None and before[0] != prev_hash:
                raise Refusal(409, f"{camera}: gap record does not continue #{first - 1}")
            cur.execute(
                "INSERT INTO gaps VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (unit, camera, first, last, prev_hash, chain_hash, raw),
            )
        return Verdict.STORED

    def segments(self, unit: str, camera: str) -> dict[int, StoredSegment]:
        with self._transaction() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM segments "  # noqa: S608
                "WHERE unit = %s AND camera = %s ORDER BY sequence",
                (unit, camera),
            )
            return {int(r[0]): StoredSegment(*r) for r in cur.fetchall()}

    def segment(self, unit: str, camera: str, sequence: int) -> StoredSegment | None:
        with self._transaction() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM segments "  # noqa: S608
                "WHERE unit = %s AND camera = %s AND sequence = %s",
                (unit, camera, sequence),
            )
            row = cur.fetchone()
            return None if row is None else StoredSegment(*row)

    def cursor(self, unit: str, camera: str) -> int | None:
        """The highest sequence the cluster holds for the camera (where a unit resumes)."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT max(sequence) FROM segments WHERE unit = %s AND camera = %s",
                (unit, camera),
            )
            row = cur.fetchone()
            return None if row is None or row[0] is None else int(row[0])

    def held_in(self, unit: str, camera: str, first: int, last: int) -> list[int]:
        """Stored sequences within ``first..last`` (at most 100: for a conflict report)."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT sequence FROM segments WHERE unit = %s AND camera = %s "
                "AND sequence BETWEEN %s AND %s ORDER BY sequence LIMIT 100",
                (unit, camera, first, last),
            )
            return [int(r[0]) for r in cur.fetchall()]

    def gap_records(self, unit: str, camera: str) -> list[bytes]:
        """The unit's signed gap records for the camera, as it sent them."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT raw FROM gaps WHERE unit = %s AND camera = %s AND raw IS NOT NULL "
                "ORDER BY first_sequence",
                (unit, camera),
            )
            return [bytes(r[0]) for r in cur.fetchall()]

    # --- the read side of viewing (:class:`.base.SegmentReader`) ---------------------------------

    def latest(self, unit: str, camera: str, count: int) -> list[StoredSegment]:
        """The ``count`` highest sequences of the camera, by sequence."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM segments "  # noqa: S608
                "WHERE unit = %s AND camera = %s ORDER BY sequence DESC LIMIT %s",
                (unit, camera, count),
            )
            return [StoredSegment(*r) for r in reversed(cur.fetchall())]

    def _in_range(
        self, cur: psycopg.Cursor[Any], unit: str, camera: str, from_ns: int, to_ns: int
    ) -> list[StoredSegment]:
        cur.execute(
            f"SELECT {_COLUMNS} FROM segments "  # noqa: S608
            "WHERE unit = %s AND camera = %s AND end_wall_ns > %s AND start_wall_ns < %s "
            "ORDER BY sequence",
            (unit, camera, from_ns, to_ns),
        )
        return [StoredSegment(*r) for r in cur.fetchall()]

    def in_range(self, unit: str, camera: str, from_ns: int, to_ns: int) -> list[StoredSegment]:
        """Segments ending after ``from_ns`` and starting before ``to_ns``, by sequence."""
        with self._transaction() as cur:
            return self._in_range(cur, unit, camera, from_ns, to_ns)

    def span(self, unit: str, camera: str) -> tuple[int, int] | None:
        """(earliest start, latest end) of the camera's segments; None without any."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT min(start_wall_ns), max(end_wall_ns) FROM segments "
                "WHERE unit = %s AND camera = %s",
                (unit, camera),
            )
            row = cur.fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def records(
        self, unit: str, camera: str, from_ns: int, to_ns: int
    ) -> tuple[list[StoredSegment], list[bytes], list[tuple[int, int]]]:
        """:meth:`in_range`, the camera's gap records and purged ranges, in one transaction
        under the camera's lock (as the embedded store reads them for an evidence bundle)."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT 1 FROM cameras WHERE unit = %s AND camera = %s FOR SHARE", (unit, camera)
            )
            segments = self._in_range(cur, unit, camera, from_ns, to_ns)
            cur.execute(
                "SELECT raw FROM gaps WHERE unit = %s AND camera = %s AND raw IS NOT NULL "
                "ORDER BY first_sequence",
                (unit, camera),
            )
            gaps = [bytes(r[0]) for r in cur.fetchall()]
            cur.execute(
                "SELECT first_sequence, last_sequence FROM purged "
                "WHERE unit = %s AND camera = %s ORDER BY first_sequence",
                (unit, camera),
            )
            purged = [(int(a), int(b)) for a, b in cur.fetchall()]
        return segments, gaps, purged

    def event(self, unit: str, event_id: str) -> tuple[bytes, int] | None:
        """One stored event: ``(document, arrival)``; None if not stored."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT body, received_ns FROM events WHERE unit = %s AND event_id = %s",
                (unit, event_id),
            )
            row = cur.fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def keep_receipt(self, unit: str, camera: str, sequence: int, raw: bytes) -> bytes:
        """Keep a receipt of a segment unless one is kept already; returns the one kept (the
        first: a delivery sent again, to any receiver, is answered with it)."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO receipts VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (unit, camera, sequence, raw),
            )
            cur.execute(
                "SELECT receipt FROM receipts WHERE unit = %s AND camera = %s AND sequence = %s",
                (unit, camera, sequence),
            )
            row = cur.fetchone()
        return raw if row is None else bytes(row[0])

    def receipts(self, unit: str, camera: str, sequences: list[int]) -> dict[int, bytes]:
        """The receipts kept of those segments, by sequence."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT sequence, receipt FROM receipts "
                "WHERE unit = %s AND camera = %s AND sequence = ANY(%s)",
                (unit, camera, sequences),
            )
            return {int(q): bytes(r) for q, r in cur.fetchall()}

    # --- envelopes, events, status: what any receiver needs to serve any unit -------------------

    def accept_envelope(self, unit: str, camera: str, epoch: str, raw: bytes) -> Verdict:
        """Store a verified epoch envelope once; other bytes under the epoch are refused."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO envelopes VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (unit, camera, epoch, raw, self.receiver),
            )
            if cur.rowcount == 1:
                return Verdict.STORED
            cur.execute(
                "SELECT raw FROM envelopes WHERE unit = %s AND camera = %s AND epoch = %s",
                (unit, camera, epoch),
            )
            row = cur.fetchone()
        if row is not None and bytes(row[0]) == raw:
            return Verdict.DUPLICATE
        raise Refusal(409, f"epoch {epoch} is already stored with other bytes")

    def envelope(self, unit: str, camera: str, epoch: str) -> bytes | None:
        with self._transaction() as cur:
            cur.execute(
                "SELECT raw FROM envelopes WHERE unit = %s AND camera = %s AND epoch = %s",
                (unit, camera, epoch),
            )
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def store_event(self, unit: str, event_id: str, body: bytes, *, to_publish: bool) -> Verdict:
        """Store a verified event once across the cluster: the insert that creates the row is
        the one receiver that publishes it (``published`` false until it has)."""
        with self._transaction() as cur:
            now = time.time_ns()
            cur.execute(
                "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (unit, event_id, body, not to_publish, now, self.receiver, self.receiver, now),
            )
            if cur.rowcount == 1:
                return Verdict.STORED
            cur.execute(
                "SELECT body FROM events WHERE unit = %s AND event_id = %s", (unit, event_id)
            )
            row = cur.fetchone()
        if row is not None and bytes(row[0]) == body:
            return Verdict.DUPLICATE
        raise Refusal(409, f"event {event_id} is already stored with other content")

    def claim_publication(self, unit: str, event_id: str) -> bool | None:
        """Whether this receiver is now the one to publish a stored event: True (claimed:
        not yet published, and unclaimed, claimed by this receiver, or by one silent for
        :data:`PUBLISH_LEASE_S`), False (already published), None (another receiver is
        publishing it right now)."""
        now = time.time_ns()
        with self._transaction() as cur:
            cur.execute(
                "UPDATE events SET publisher = %s, claimed_ns = %s "
                "WHERE unit = %s AND event_id = %s AND NOT published AND (publisher IS NULL "
                "OR publisher = %s OR claimed_ns < %s) RETURNING 1",
                (self.receiver, now, unit, event_id, self.receiver,
                 now - int(PUBLISH_LEASE_S * 1e9)),
            )  # fmt: skip
            if cur.fetchone() is not None:
                return True
            cur.execute(
                "SELECT published FROM events WHERE unit = %s AND event_id = %s",
                (unit, event_id),
            )
            row = cur.fetchone()
        return False if row is None or row[0] else None

    def claim_unpublished(self, limit: int, min_age_s: float) -> list[tuple[str, str, bytes]]:
        """Claim up to ``limit`` stored events not yet published, received at least
        ``min_age_s`` ago, the oldest first, whose claim is free (this receiver's, or older
        than :data:`PUBLISH_LEASE_S`): (unit, event id, body). Receivers claiming at once get
        disjoint batches (rows another is claiming are skipped)."""
        now = time.time_ns()
        with self._transaction() as cur:
            cur.execute(
                "UPDATE events SET publisher = %s, claimed_ns = %s WHERE (unit, event_id) IN ("
                "SELECT unit, event_id FROM events WHERE NOT published AND received_ns <= %s "
                "AND (publisher IS NULL OR publisher = %s OR claimed_ns < %s) "
                "ORDER BY received_ns LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING unit, event_id, body, received_ns",
                (self.receiver, now, now - int(min_age_s * 1e9), self.receiver,
                 now - int(PUBLISH_LEASE_S * 1e9), limit),
            )  # fmt: skip
            rows = sorted(cur.fetchall(), key=lambda r: int(r[3]))
        return [(str(u), str(e), bytes(b)) for u, e, b, _ in rows]

    def mark_published(self, unit: str, event_id: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE events SET published = true WHERE unit = %s AND event_id = %s",
                (unit, event_id),
            )

    def event_ids(self, unit: str) -> list[str]:
        with self._transaction() as cur:
            cur.execute("SELECT event_id FROM events WHERE unit = %s ORDER BY event_id", (unit,))
            return [str(r[0]) for r in cur.fetchall()]

    def write_status(self, unit: str, status: dict[str, Any]) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO unit_status VALUES (%s, %s, %s, %s) ON CONFLICT (unit) DO UPDATE "
                "SET status = excluded.status, updated_ns = excluded.updated_ns, "
                "receiver = excluded.receiver WHERE unit_status.updated_ns < excluded.updated_ns",
                (unit, Jsonb(status), time.time_ns(), self.receiver),
            )

    def read_status(self, unit: str) -> dict[str, Any]:
        with self._transaction() as cur:
            cur.execute("SELECT status, receiver FROM unit_status WHERE unit = %s", (unit,))
            row = cur.fetchone()
        if row is None or not isinstance(row[0], dict):
            return {}
        return {**row[0], "receiver": str(row[1])}

    def units(self) -> list[str]:
        with self._transaction() as cur:
            cur.execute(
                "SELECT unit FROM cameras UNION SELECT unit FROM unit_status "
                "UNION SELECT unit FROM events ORDER BY 1"
            )
            return [str(r[0]) for r in cur.fetchall()]

    def cameras_of(self, unit: str) -> list[str]:
        with self._transaction() as cur:
            cur.execute("SELECT camera FROM cameras WHERE unit = %s ORDER BY camera", (unit,))
            return [str(r[0]) for r in cur.fetchall()]

    def summary(self, unit: str, camera: str) -> dict[str, Any]:
        """First, last and count of a camera's stored sequences, and the missing ranges
        between them (before gap records are taken into account): the unit's cursor."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT min(sequence), max(sequence), count(*) FROM segments "
                "WHERE unit = %s AND camera = %s",
                (unit, camera),
            )
            row = cur.fetchone()
            cur.execute(
                "SELECT prev + 1, sequence - 1 FROM (SELECT sequence, lag(sequence) OVER "
                "(ORDER BY sequence) AS prev FROM segments WHERE unit = %s AND camera = %s) s "
                "WHERE sequence > prev + 1 ORDER BY 1 LIMIT 100",
                (unit, camera),
            )
            holes = [[int(a), int(b)] for a, b in cur.fetchall()]
        first, last, count = row if row is not None else (None, None, 0)
        return {
            "first": None if first is None else int(first),
            "last": None if last is None else int(last),
            "count": int(count),
            "gaps": holes,
        }

    def held(self, keys: list[tuple[str, str, int, str]]) -> set[tuple[str, str, int, str]]:
        """Which of these ``(unit, camera, sequence, hash)`` the index holds (one query)."""
        if not keys:
            return set()
        with self._transaction() as cur:
            cur.execute(
                "SELECT s.unit, s.camera, s.sequence, s.hash FROM segments s JOIN "
                "unnest(%s::text[], %s::text[], %s::bigint[], %s::text[]) AS k(u, c, q, h) "
                "ON s.unit = k.u AND s.camera = k.c AND s.sequence = k.q AND s.hash = k.h",
                [list(col) for col in zip(*keys, strict=True)],
            )
            return {(str(u), str(c), int(q), str(h)) for u, c, q, h in cur.fetchall()}

    # --- retention (:mod:`.cluster_purge`) ------------------------------------------------------

    @contextmanager
    def purge_lock(self) -> Iterator[bool]:
        """The cluster's purge lock, tried (a session advisory lock on this connection): True
        while held, False when another receiver holds it. Released on exit, or by the server
        when this connection dies (a receiver killed mid-purge does not block the others)."""
        with self._transaction() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (_PURGE_LOCK,))
            row = cur.fetchone()
        got = bool(row and row[0])
        try:
            yield got
        finally:
            if got and self._conn is not None and not self._conn.closed:
                with self._transaction() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (_PURGE_LOCK,))

    def aged(self, unit: str, camera: str, limit_ns: int) -> list[StoredSegment]:
        """The camera's segments whose age basis is at or before ``limit_ns`` (the purge's
        candidates; the policy, :func:`.retention.expired`, decides)."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM segments "  # noqa: S608
                "WHERE unit = %s AND camera = %s AND least(end_wall_ns, received_ns) <= %s "
                "ORDER BY sequence",
                (unit, camera, limit_ns),
            )
            return [StoredSegment(*r) for r in cur.fetchall()]

    def delete_segments(
        self, unit: str, camera: str, spans: list[list[int]], sequences: list[int], now_ns: int
    ) -> tuple[list[tuple[int, str]], list[str]]:
        """Delete these segments' rows, record their ranges as purged and delete the epoch
        envelopes no remaining segment needs, in one transaction under the camera's lock
        (an upload to the camera waits). Returns ``(sequence, hash)`` of the rows deleted
        (their objects go next) and the epochs whose envelope went."""
        with self._transaction() as cur:
            self._lock_camera(cur, unit, camera)
            cur.execute(
                "DELETE FROM segments WHERE unit = %s AND camera = %s AND sequence = ANY(%s) "
                "RETURNING sequence, hash, epoch_id",
                (unit, camera, sequences),
            )
            rows = [(int(r[0]), str(r[1]), str(r[2])) for r in cur.fetchall()]
            cur.execute(
                "DELETE FROM receipts WHERE unit = %s AND camera = %s AND sequence = ANY(%s)",
                (unit, camera, [q for q, _, _ in rows]),
            )
            for first, last in spans:
                cur.execute(
                    "INSERT INTO purged VALUES (%s, %s, %s, %s, %s)",
                    (unit, camera, first, last, now_ns),
                )
            cur.execute(
                "DELETE FROM envelopes e WHERE unit = %s AND camera = %s AND epoch = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.unit = e.unit "
                "AND s.camera = e.camera AND s.epoch_id = e.epoch) RETURNING epoch",
                (unit, camera, sorted({e for _, _, e in rows})),
            )
            epochs = [str(r[0]) for r in cur.fetchall()]
        return [(q, h) for q, h, _ in rows], epochs

    def purged(self, unit: str, camera: str) -> list[tuple[int, int]]:
        """Ranges the purge deleted (not gaps in the chain)."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT first_sequence, last_sequence FROM purged "
                "WHERE unit = %s AND camera = %s ORDER BY first_sequence",
                (unit, camera),
            )
            return [(int(a), int(b)) for a, b in cur.fetchall()]

    def events(self, unit: str) -> list[tuple[str, bytes, int]]:
        """The unit's stored events: ``(event id, document, arrival)``."""
        with self._transaction() as cur:
            cur.execute(
                "SELECT event_id, body, received_ns FROM events WHERE unit = %s ORDER BY event_id",
                (unit,),
            )
            return [(str(i), bytes(b), int(t)) for i, b, t in cur.fetchall()]

    def delete_events(self, unit: str, event_ids: list[str]) -> int:
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM events WHERE unit = %s AND event_id = ANY(%s)", (unit, event_ids)
            )
            return int(cur.rowcount)

    def retention_state(self) -> tuple[int, str, int] | None:
        """``(deletion records, head hash, hold-log entries)`` as the last purge left them."""
        with self._transaction() as cur:
            cur.execute("SELECT ledger_count, ledger_head, hold_entries FROM retention_state")
            row = cur.fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]))

    def set_retention_state(self, count: int, head: str, hold_entries: int) -> None:
        """After a purge. The hold count only grows (a hold placed meanwhile counts)."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO retention_state VALUES (1, %s, %s, %s, %s, %s) ON CONFLICT (id) "
                "DO UPDATE SET ledger_count = excluded.ledger_count, ledger_head = "
                "excluded.ledger_head, hold_entries = greatest(retention_state.hold_entries, "
                "excluded.hold_entries), updated_ns = excluded.updated_ns, "
                "receiver = excluded.receiver",
                (count, head, hold_entries, time.time_ns(), self.receiver),
            )

    def note_hold_entries(self, hold_entries: int, zero_head: str) -> None:
        """``edge-csu hold`` in cluster mode, after appending to the shared hold log: a purge
        from a directory whose log has fewer entries then refuses (even before any purge)."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO retention_state VALUES (1, 0, %s, %s, %s, %s) ON CONFLICT (id) "
                "DO UPDATE SET hold_entries = greatest(retention_state.hold_entries, "
                "excluded.hold_entries)",
                (zero_head, hold_entries, time.time_ns(), self.receiver),
            )
