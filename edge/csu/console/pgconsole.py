"""The console's state in cluster mode: accounts, sessions and alert decisions in the cluster's
PostgreSQL database (tables of migration 6 in :data:`edge.csu.receiver.pgindex.MIGRATIONS`),
so that every receiver behind HAProxy sees the same ones.

A session opened through one receiver is valid through every other (its SHA-256 is a row of
the shared ``sessions``); the failure count of an account, hence its lock-out, is one count
whichever receivers the guesses went to; a one-time code used through one receiver is refused
through the others; an alert is settled once.

How the races are decided, by the database, never by a read then a write on two receivers:

- a log-in reads its account ``FOR UPDATE`` (:class:`PgOperatorStore`): log-ins to one account
  are serialised across receivers for the time of the check (≈0.1 s of scrypt), those to
  different accounts run in parallel; the next one reads the count and last code step the
  previous one wrote;
- a decision takes a transaction-scoped advisory lock on its alert (:class:`PgDecisions`):
  the second agent reads the first's decision, as in embedded mode; a unique index admitting
  one settling decision per alert is the last guard.

Connections: the receiver's own, one per worker thread (:meth:`edge.csu.receiver.cluster.
ClusterStore.index`), so the console adds none to the database's count; ``edge-csu operator``
opens one. A lost database is :class:`StorageUnavailableError` (the console answers 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from ...errors import ConfigError, StorageUnavailableError
from ..receiver.pgindex import PgSegmentIndex
from .accounts import DEFAULT_LOCKOUT, DEFAULT_SESSIONS, OperatorStore, Transaction
from .alerts import Alert, Decision, DecisionRecord
from .roles import LockoutPolicy, SessionPolicy

if TYPE_CHECKING:
    from ..receiver.settings import ServeConfig

#: Advisory lock class of the alert decisions (the two-key form: apart from pgindex's locks).
_DECISION_LOCK = 0x65646164  # "edad"


class _Cursor:
    """A psycopg cursor spoken to with the ``?`` parameters of :mod:`.accounts`' SQL."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self._cur.execute(sql.replace("?", "%s"), parameters)


class PgConsoleDatabase:
    """Transactions on the cluster's database, on the calling thread's connection.

    ``connection``: this thread's index (the receiver's :meth:`~edge.csu.receiver.cluster.
    ClusterStore.index`, or one index of its own)."""

    def __init__(self, connection: Callable[[], PgSegmentIndex], receiver: str) -> None:
        self.connection = connection
        self.receiver = receiver

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self.connection().transaction() as cur:
            try:
                yield cur
            except psycopg.errors.UniqueViolation as exc:  # a concurrent change got there first
                diag = exc.diag.constraint_name or "a unique key"
                raise ConfigError(
                    f"changed meanwhile by another receiver ({diag}): try again"
                ) from None


class PgOperatorStore(OperatorStore):
    """:class:`.accounts.OperatorStore`'s rules on the cluster's database (see the module
    docstring). Nothing is kept on the receiver."""

    _FOR_UPDATE = " FOR UPDATE"

    def __init__(
        self,
        database: PgConsoleDatabase,
        *,
        clock: Callable[[], float] = time.time,
        lockout: LockoutPolicy = DEFAULT_LOCKOUT,
        sessions: SessionPolicy = DEFAULT_SESSIONS,
    ) -> None:
        # Not OperatorStore.__init__: no file; the schema is the cluster's (migrated at start).
        self.database = database
        self.clock = clock
        self.lockout = lockout
        self.session_policy = sessions

    @contextmanager
    def _db(self) -> Iterator[Transaction]:
        with self.database.transaction() as cur:
            yield _Cursor(cur)


class PgDecisions:
    """The alert decisions in the cluster's database (:class:`.alerts.DecisionLog`)."""

    def __init__(self, database: PgConsoleDatabase) -> None:
        self.database = database

    def record(self, alert: Alert, record: DecisionRecord) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_DECISION_LOCK, alert.id)
            )
            cur.execute(
                "SELECT decision, who FROM alert_decisions WHERE event_id = %s "
                "ORDER BY id DESC LIMIT 1",
                (alert.id,),
            )
            last = cur.fetchone()
            if last is not None and last[0] != Decision.ESCALATE:
                raise ConfigError(f"alert {alert.id} already decided ({last[0]} by {last[1]})")
            cur.execute(
                "INSERT INTO alert_decisions (event_id, unit, camera, rule, decision, comment, "
                "who, decided, time_to_decide_s, receiver) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (alert.id, alert.unit, alert.camera, alert.rule, record.decision.value,
                 record.comment, record.who, record.decided, record.time_to_decide_s,
                 self.database.receiver),
            )  # fmt: skip

    def settled(self) -> list[tuple[str, Decision]]:
        with self.database.transaction() as cur:
            cur.execute("SELECT rule, decision FROM alert_decisions ORDER BY id")
            return [(str(rule), Decision(d)) for rule, d in cur.fetchall()]

    def of(self, ids: list[str]) -> dict[str, list[DecisionRecord]]:
        out: dict[str, list[DecisionRecord]] = {}
        if not ids:
            return out
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT event_id, decision, comment, who, decided, time_to_decide_s "
                "FROM alert_decisions WHERE event_id = ANY(%s) ORDER BY id",
                (ids,),
            )
            for event_id, d, comment, who, decided, ttd in cur.fetchall():
                out.setdefault(str(event_id), []).append(
                    DecisionRecord(Decision(d), str(comment), str(who), float(decided), float(ttd))
                )
        return out


def database(cfg: ServeConfig, intake: object = None) -> PgConsoleDatabase:
    """The cluster's database for the console of ``cfg``: through the receiver's store
    ``intake`` (its connections, migrated at its start), or else through a connection of
    its own, the schema migrated first (``edge-csu operator`` before any receiver started)."""
    from ..receiver.cluster import ClusterStore, conninfo_of

    assert cfg.cluster is not None  # the configuration's schema requires it in cluster mode
    receiver = cfg.cluster.receiver_id
    if isinstance(intake, ClusterStore):
        return PgConsoleDatabase(intake.index, receiver)
    db = cfg.cluster.database
    index = PgSegmentIndex(conninfo_of(db), receiver, connect_timeout_s=db.connect_timeout_s)
    try:
        index.migrate()
    except StorageUnavailableError as exc:
        detail = str(exc).removeprefix("segment index: ")
        raise StorageUnavailableError(
            f"the console's accounts are in the cluster's database, out of reach: {detail}"
        ) from None
    return PgConsoleDatabase(lambda: index, receiver)
