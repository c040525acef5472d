"""The vault's index: SQLite in WAL mode, a cache of what the files say.

Why SQLite (WAL) rather than an append-only journal: range look-ups by time over 1.3 million
rows must take milliseconds (a B-tree does that; a journal must be loaded or scanned), the
outbox needs a "not yet delivered" view and updates in place, and WAL gives atomic commits
that survive ``kill -9``. The known weakness (corruption after power loss on bad media) is
contained: the sealed files are the truth, every file is self-describing and signed, and an
index that fails to open or check is rebuilt from the files alone (:meth:`Vault.rebuild_index`).
``synchronous=NORMAL``: a power cut may lose the last commits, never consistency; recovery
re-adds segments found on disk past the index's tail, and a lost "delivered" mark only means
the uplink sends that segment again (the CSU deduplicates by camera and sequence).

Threading: one connection shared by the vault's threads; every use holds :attr:`lock`.

Corruption found while running (SQLite's "database disk image is malformed", a row that fails
its checks) surfaces as :class:`~edge.errors.IndexCorruptError` from whichever call met it, so
the vault can quarantine the file and rebuild it from the sealed files (:meth:`replace`)
instead of the recording thread dying on a foreign exception.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import IndexCorruptError, VaultError
from .retention import SegmentInfo

if TYPE_CHECKING:
    from .format import SealedSegment

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    size INTEGER NOT NULL,
    epoch BLOB NOT NULL,
    hash BLOB NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segments_by_time ON segments (start_ns);
CREATE INDEX IF NOT EXISTS segments_pending ON segments (start_ns) WHERE delivered = 0;
-- Running totals kept by triggers, so start-up never has to scan 1.3 M rows to know them.
CREATE TABLE IF NOT EXISTS totals (
    k INTEGER PRIMARY KEY CHECK (k = 0),
    segments INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals
    SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM segments;
CREATE TRIGGER IF NOT EXISTS totals_insert AFTER INSERT ON segments BEGIN
    UPDATE totals SET segments = segments + 1, bytes = bytes + NEW.size WHERE k = 0;
END;
CREATE TRIGGER IF NOT EXISTS totals_delete AFTER DELETE ON segments BEGIN
    UPDATE totals SET segments = segments - 1, bytes = bytes - OLD.size WHERE k = 0;
END;
CREATE TABLE IF NOT EXISTS epochs (
    camera TEXT NOT NULL,
    epoch BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera, epoch)
) WITHOUT ROWID;
-- The envelopes' bytes and the uplink backlog, kept the same way: the vault's byte count
-- changes in the transaction that adds or removes the row (one lock, no separate counter to
-- drift), and the uplink reads its backlog from one row for every item it sends instead of
-- summing every undelivered row (240 ms with 300 k of them).
CREATE TABLE IF NOT EXISTS running (
    k INTEGER PRIMARY KEY CHECK (k = 0),
    epoch_bytes INTEGER NOT NULL,
    pending_segments INTEGER NOT NULL,
    pending_ns INTEGER NOT NULL,
    pending_bytes INTEGER NOT NULL
);
-- Counted once, when the table is new (an index written by an older version); the scalar
-- subqueries are not run when the row already exists.
INSERT INTO running SELECT 0,
    (SELECT COALESCE(SUM(size), 0) FROM epochs),
    (SELECT COUNT(*) FROM segments WHERE delivered = 0),
    (SELECT COALESCE(SUM(end_ns - start_ns), 0) FROM segments WHERE delivered = 0),
    (SELECT COALESCE(SUM(size), 0) FROM segments WHERE delivered = 0)
    WHERE NOT EXISTS (SELECT 1 FROM running);
CREATE TRIGGER IF NOT EXISTS pending_insert AFTER INSERT ON segments WHEN NEW.delivered = 0
BEGIN
    UPDATE running SET pending_segments = pending_segments + 1,
        pending_ns = pending_ns + NEW.end_ns - NEW.start_ns,
        pending_bytes = pending_bytes + NEW.size WHERE k = 0;
END;
CREATE TRIGGER IF NOT EXISTS pending_delete AFTER DELETE ON segments WHEN OLD.delivered = 0
BEGIN
    UPDATE running SET pending_segments = pending_segments - 1,
        pending_ns = pending_ns - (OLD.end_ns - OLD.start_ns),
        pending_bytes = pending_bytes - OLD.size WHERE k = 0;
END;
CREATE TRIGGER IF NOT EXISTS pending_delivered AFTER UPDATE OF delivered ON segments
    WHEN OLD.delivered = 0 AND NEW.delivered != 0
BEGIN
    UPDATE running SET pending_segments = pending_segments - 1,
        pending_ns = pending_ns - (OLD.end_ns - OLD.start_ns),
        pending_bytes = pending_bytes - OLD.size WHERE k = 0;
END;
CREATE TRIGGER IF NOT EXISTS epochs_insert AFTER INSERT ON epochs BEGIN
    UPDATE running SET epoch_bytes = epoch_bytes + NEW.size WHERE k = 0;
END;
-- Gap records (files under gaps/) the CSU has not acknowledged yet.
CREATE TABLE IF NOT EXISTS gaps (
    camera TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera, first)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS epochs_delete AFTER DELETE ON epochs BEGIN
    UPDATE running SET epoch_bytes = epoch_bytes - OLD.size WHERE k = 0;
END;
"""


@dataclass(frozen=True, slots=True)
class IndexRow:
    camera_id: str
    sequence: int
    start_wall_ns: int
    end_wall_ns: int
    frame_count: int
    size: int
    epoch_id: bytes
    chain_hash: bytes
    delivered: bool = False

    # Interpolated into SQL: a constant, never user data.
    COLUMNS = "camera, seq, start_ns, end_ns, frames, size, epoch, hash, delivered"

    @classmethod
    def of_segment(cls, camera_id: str, seg: SealedSegment, size: int) -> IndexRow:
        """The row of a parsed sealed segment (``size`` bytes on disk)."""
        h = seg.header
        return cls(
            camera_id,
            h.sequence,
            h.start_wall_ns,
            h.end_wall_ns,
            h.frame_count,
            size,
            h.epoch_id,
            seg.chain_hash,
        )

    @classmethod
    def from_sql(cls, row: tuple[object, ...]) -> IndexRow:
        """Check and convert one row; :class:`IndexCorruptError` for anything malformed."""
        if len(row) != 9:
            raise IndexCorruptError(f"index row has {len(row)} columns, expected 9")
        camera, seq, start, end, frames, size, epoch, digest, delivered = row
        if not isinstance(camera, str) or not camera:
            raise IndexCorruptError("index row: bad camera")
        ints = (seq, start, end, frames, size, delivered)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise IndexCorruptError("index row: non-integer field")
        assert isinstance(seq, int) and isinstance(start, int) and isinstance(end, int)
        assert isinstance(frames, int) and isinstance(size, int) and isinstance(delivered, int)
        if seq < 0 or size <= 0 or frames < 0 or end < start:
            raise IndexCorruptError("index row: value out of range")
        if not (isinstance(epoch, bytes) and len(epoch) == 16):
            raise IndexCorruptError("index row: bad epoch id")
        if not (isinstance(digest, bytes) and len(digest) == 32):
            raise IndexCorruptError("index row: bad hash")
        return cls(camera, seq, start, end, frames, size, epoch, digest, bool(delivered))

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.camera_id, self.sequence, self.start_wall_ns, self.end_wall_ns, self.size
        )


class _ConnectionLock:
    """The connection's lock; leaving it with SQLite's "corrupt" errors raises
    :class:`IndexCorruptError` (the one translation point for every query of the index)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
        # OperationalError (full disk, busy, I/O) is not corruption; the rest of
        # DatabaseError is (SQLITE_CORRUPT, SQLITE_NOTADB).
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            raise IndexCorruptError(f"{self._path}: {exc}") from exc


class Index:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """``readonly``: for tools (``edgectl export``) reading beside a running edged; they
        never take the write lock the recording threads need."""
        self.path = path
        # Protects the connection: the recording threads (insert), the purge thread (delete),
        # the uplink (outbox reads, delivered marks) all go through it, briefly.
        self.lock = _ConnectionLock(path)
        #: Incremented by :meth:`replace`: a caller that met corruption compares it to know
        #: whether another thread replaced the index meanwhile.
        self.generation = 0
        if readonly:
            try:
                self.db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10
                )
                self.db.execute("SELECT 1 FROM segments LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                raise VaultError(f"{path}: index unusable: {exc}") from None
            return
        self.db = self._connect(path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # INSERT OR REPLACE deletes first; the totals triggers must see that delete.
            db.execute("PRAGMA recursive_triggers=ON")
            # Bound the write-ahead log (default: up to 4 MB between checkpoints, never
            # shrunk): on a nearly full card the space belongs to recordings.
            db.execute("PRAGMA wal_autocheckpoint=128")
            db.execute("PRAGMA journal_size_limit=1048576")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return db
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                # Not the index's fault: it must not be quarantined as unusable for it.
                raise OSError(errno.ENOSPC, f"index: {exc}", str(path)) from None
            raise VaultError(f"{path}: index unusable: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise VaultError(f"{path}: index unusable: {exc}") from None

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def replace(self, set_aside: Callable[[Path], None]) -> None:
        """Close the damaged file, hand it (and its WAL) to ``set_aside``, start an empty one.

        Callers rebuild the rows from the sealed files afterwards; meanwhile other threads see
        an index that fills up, never a closed connection.
        """
        with self.lock:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            for suffix in ("", "-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    set_aside(side)
            self.db = self._connect(self.path)
            self.generation += 1

    def quick_check(self) -> bool:
        with self.lock:
            try:
                row = self.db.execute("PRAGMA quick_check").fetchone()
            except sqlite3.DatabaseError:
                return False
        return bool(row) and row[0] == "ok"

    def insert(self, row: IndexRow) -> None:
        """Add one row; a full disk surfaces as ``OSError(ENOSPC)`` so the caller can purge."""
        try:
            self._insert(row)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise OSError(errno.ENOSPC, f"index: {exc}") from None
            raise VaultError(f"{self.path}: {exc}") from None

    def _insert(self, row: IndexRow) -> None:
        with self.lock:
            self.db.execute(
                f"INSERT OR REPLACE INTO segments ({IndexRow.COLUMNS}) "  # noqa: S608 - constant column list
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.camera_id,
                    row.sequence,
                    row.start_wall_ns,
                    row.end_wall_ns,
                    row.frame_count,
                    row.size,
                    row.epoch_id,
                    row.chain_hash,
                    int(row.delivered),
                ),
            )

    def insert_many(self, rows: list[IndexRow]) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany(
                f"INSERT OR REPLACE INTO segments ({IndexRow.COLUMNS}) "  # noqa: S608 - constant column list
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.camera_id,
                        r.sequence,
                        r.start_wall_ns,
                        r.end_wall_ns,
                        r.frame_count,
                        r.size,
                        r.epoch_id,
                        r.chain_hash,
                        int(r.delivered),
                    )
                    for r in rows
                ],
            )
            self.db.execute("COMMIT")

    def add_epoch(self, camera: str, epoch_id: bytes, created_ns: int, size: int) -> None:
        try:
            with self.lock:
                self.db.execute(
                    "INSERT OR IGNORE INTO epochs VALUES (?, ?, ?, ?, 0)",
                    (camera, epoch_id, created_ns, size),
                )
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise OSError(errno.ENOSPC, f"index: {exc}") from None
            raise VaultError(f"{self.path}: {exc}") from None

    def cameras(self) -> list[str]:
        """Camera ids, by skipping through the primary key (a handful of seeks, no scan)."""
        found: set[str] = set()
        with self.lock:
            for table in ("segments", "epochs"):
                row = self.db.execute(f"SELECT MIN(camera) FROM {table}").fetchone()  # noqa: S608
                while row is not None and row[0] is not None:
                    found.add(str(row[0]))
                    row = self.db.execute(
                        f"SELECT MIN(camera) FROM {table} WHERE camera > ?",  # noqa: S608
                        (row[0],),
                    ).fetchone()
        return sorted(found)

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[IndexRow]:
        with self.lock:
            raw = self.db.execute(sql, args).fetchall()
        return [IndexRow.from_sql(tuple(r)) for r in raw]

    def last(self, camera: str, count: int = 1) -> list[IndexRow]:
        """The newest ``count`` rows of a camera, newest first."""
        return self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE camera = ? ORDER BY seq DESC LIMIT ?",  # noqa: S608 - constant column list
            (camera, count),
        )

    def first(self, camera: str) -> IndexRow | None:
        rows = self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE camera = ? ORDER BY seq LIMIT 1",  # noqa: S608 - constant column list
            (camera,),
        )
        return rows[0] if rows else None

    def get(self, camera: str, seq: int) -> IndexRow | None:
        rows = self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE camera = ? AND seq = ?",  # noqa: S608
            (camera, seq),
        )
        return rows[0] if rows else None

    def range(self, start_ns: int, end_ns: int, camera: str | None = None) -> list[IndexRow]:
        """Segments overlapping [start_ns, end_ns), by camera then sequence."""
        # Segments last at most 10 s, so "start < end_ns and start > start_ns - 1 min" lets the
        # time index bound the scan; end_ns filters exactly.
        sql = (
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE start_ns < ? AND start_ns > ? "  # noqa: S608 - constant column list
            "AND end_ns > ?"
        )
        args: tuple[object, ...] = (end_ns, start_ns - 60_000_000_000, start_ns)
        if camera is not None:
            sql += " AND camera = ?"
            args += (camera,)
        # Ordered by time in SQL so the time index drives the query; then by camera here.
        rows = self._rows(sql + " ORDER BY start_ns", args)
        return sorted(rows, key=lambda r: (r.camera_id, r.sequence))

    def oldest_first(self, batch: int = 512) -> Iterator[SegmentInfo]:
        """Every segment by start time, fetched in batches (the purge planner stops early)."""
        after: tuple[int, str, int] = (-(2**63), "", -1)
        while True:
            with self.lock:
                raw = self.db.execute(
                    "SELECT camera, seq, start_ns, end_ns, size FROM segments "
                    "WHERE (start_ns, camera, seq) > (?, ?, ?) "
                    "ORDER BY start_ns, camera, seq LIMIT ?",
                    (after[0], after[1], after[2], batch),
                ).fetchall()
            if not raw:
                return
            for camera, seq, start, end, size in raw:
                yield SegmentInfo(str(camera), int(seq), int(start), int(end), int(size))
            last = raw[-1]
            after = (int(last[2]), str(last[0]), int(last[1]))

    def rows_through(self, camera: str, seq: int) -> list[IndexRow]:
        """The rows of ``camera`` up to ``seq``."""
        return self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE camera = ? AND seq <= ?",  # noqa: S608
            (camera, seq),
        )

    def delete_through(self, camera: str, seq: int) -> list[IndexRow]:
        """Remove and return the rows of ``camera`` up to ``seq``."""
        with self.lock:
            raw = self.db.execute(
                f"SELECT {IndexRow.COLUMNS} FROM segments WHERE camera = ? AND seq <= ?",  # noqa: S608 - constant column list
                (camera, seq),
            ).fetchall()
            self.db.execute("DELETE FROM segments WHERE camera = ? AND seq <= ?", (camera, seq))
        return [IndexRow.from_sql(tuple(r)) for r in raw]

    def delete(self, camera: str, seq: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM segments WHERE camera = ? AND seq = ?", (camera, seq))

    def unused_epochs(self, camera: str, keep: bytes | None) -> list[tuple[bytes, int]]:
        """Epochs of ``camera`` no remaining segment uses (except ``keep``, the live one)."""
        with self.lock:
            raw = self.db.execute(
                "SELECT epoch, created_ns FROM epochs e WHERE camera = ? AND NOT EXISTS "
                "(SELECT 1 FROM segments s WHERE s.camera = e.camera AND s.epoch = e.epoch)",
                (camera,),
            ).fetchall()
        return [(bytes(e), int(c)) for e, c in raw if bytes(e) != keep]

    def has_epochs(self, camera: str) -> bool:
        with self.lock:
            row = self.db.execute("SELECT 1 FROM epochs WHERE camera = ? LIMIT 1", (camera,))
            return row.fetchone() is not None

    def delete_epoch(self, camera: str, epoch_id: bytes) -> None:
        with self.lock:
            self.db.execute("DELETE FROM epochs WHERE camera = ? AND epoch = ?", (camera, epoch_id))

    def epoch_created(self, camera: str, epoch_id: bytes) -> int | None:
        with self.lock:
            row = self.db.execute(
                "SELECT created_ns FROM epochs WHERE camera = ? AND epoch = ?", (camera, epoch_id)
            ).fetchone()
        return int(row[0]) if row else None

    def pending(self, limit: int) -> list[IndexRow]:
        return self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE delivered = 0 "  # noqa: S608 - constant column list
            "ORDER BY start_ns, camera, seq LIMIT ?",
            (limit,),
        )

    def pending_since(self, start_ns: int, limit: int) -> list[IndexRow]:
        """Undelivered segments that started at or after ``start_ns`` (the uplink's live edge)."""
        return self._rows(
            f"SELECT {IndexRow.COLUMNS} FROM segments WHERE delivered = 0 AND start_ns >= ? "  # noqa: S608
            "ORDER BY start_ns, camera, seq LIMIT ?",
            (start_ns, limit),
        )

    def pending_epochs(self) -> set[tuple[str, bytes]]:
        with self.lock:
            raw = self.db.execute("SELECT camera, epoch FROM epochs WHERE delivered = 0").fetchall()
        return {(str(c), bytes(e)) for c, e in raw}

    def mark_delivered(self, camera: str, seq: int) -> bool:
        with self.lock:
            cur = self.db.execute(
                "UPDATE segments SET delivered = 1 WHERE camera = ? AND seq = ?", (camera, seq)
            )
        return cur.rowcount > 0

    def mark_epoch_delivered(self, camera: str, epoch_id: bytes) -> bool:
        with self.lock:
            cur = self.db.execute(
                "UPDATE epochs SET delivered = 1 WHERE camera = ? AND epoch = ?", (camera, epoch_id)
            )
        return cur.rowcount > 0

    def backlog(self) -> tuple[int, int, int]:
        """(segments, nanoseconds of video, bytes) not yet delivered: one row, kept by triggers."""
        with self.lock:
            row = self.db.execute(
                "SELECT pending_segments, pending_ns, pending_bytes FROM running WHERE k = 0"
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def total_bytes(self) -> int:
        """Bytes of every indexed segment and envelope: two rows, kept by triggers."""
        with self.lock:
            row = self.db.execute(
                "SELECT t.bytes + r.epoch_bytes FROM totals t, running r WHERE t.k = 0 AND r.k = 0"
            ).fetchone()
        return int(row[0])

    def add_gap(self, camera: str, first: int, last: int) -> None:
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO gaps VALUES (?, ?, ?, 0)", (camera, first, last))

    def pending_gaps(self) -> list[tuple[str, int, int]]:
        with self.lock:
            raw = self.db.execute(
                "SELECT camera, first, last FROM gaps WHERE delivered = 0 ORDER BY camera, first"
            ).fetchall()
        return [(str(c), int(f), int(la)) for c, f, la in raw]

    def mark_gap_delivered(self, camera: str, first: int) -> bool:
        with self.lock:
            cur = self.db.execute(
                "UPDATE gaps SET delivered = 1 WHERE camera = ? AND first = ?", (camera, first)
            )
        return cur.rowcount > 0

    def delete_gaps_through(self, camera: str, seq: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM gaps WHERE camera = ? AND last <= ?", (camera, seq))

    def clear(self) -> None:
        with self.lock:
            self.db.execute("DELETE FROM segments")
            self.db.execute("DELETE FROM epochs")
