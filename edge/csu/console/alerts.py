"""The alerts inbox: alerts and tamper events the units sent, and the decision a person takes on
each (decree 2023-828: the algorithm only signals; an agent confirms, dismisses or escalates).

Events are read from the receiver's store (already verified against the unit's key when they
arrived). Decisions go to the console database (one row per decision, never updated: an
escalated alert gets a second, final decision later) and, by the caller, to the CSU's
hash-chained audit log. That database is a :class:`DecisionLog`: the operators' SQLite file
(:class:`SqliteDecisions`, embedded mode) or the cluster's PostgreSQL database
(:class:`.pgconsole.PgDecisions`), where an alert is settled once across every receiver.
Time to decide runs from the alert's arrival at the CSU (the file's modification time; in
cluster mode the arrival the database recorded), the moment an agent could first see it.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ...errors import ConfigError
from ..receiver.archive import EventFiles, StoredEvent
from .roles import Scope

#: Newest alerts listed; older ones stay in the store and the audit log.
MAX_LISTED = 300
COMMENT_MAX = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    event_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    camera TEXT NOT NULL,
    rule TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT NOT NULL,
    who TEXT NOT NULL,
    decided REAL NOT NULL,
    time_to_decide_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_event ON decisions(event_id);
"""


class Decision(enum.StrEnum):
    CONFIRM = "confirm"
    DISMISS = "dismiss"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    decision: Decision
    comment: str
    who: str
    decided: float
    time_to_decide_s: float


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    unit: str
    camera: str
    category: str
    kind: str
    rule: str
    wall_ns: int
    received: float
    message: str
    has_snapshot: bool
    decisions: tuple[DecisionRecord, ...] = ()
    snapshot_held: bool = False
    """The CSU holds the sealed snapshot the event names (the unit sent it)."""

    @property
    def open(self) -> bool:
        """Waiting for a person: never decided, or escalated and not yet settled."""
        return not self.decisions or self.decisions[-1].decision is Decision.ESCALATE


@dataclass(frozen=True, slots=True)
class RuleRate:
    rule: str
    decided: int
    dismissed: int

    @property
    def false_alarm_rate(self) -> float:
        return self.dismissed / self.decided if self.decided else 0.0


def false_alarm_rates(settled: Iterable[tuple[str, Decision]]) -> list[RuleRate]:
    """Per rule, the share of settled alerts a person dismissed (escalations are not settled)."""
    counts: dict[str, list[int]] = {}
    for rule, decision in settled:
        if decision is Decision.ESCALATE:
            continue
        c = counts.setdefault(rule, [0, 0])
        c[0] += 1
        c[1] += decision is Decision.DISMISS
    return [RuleRate(rule, n, d) for rule, (n, d) in sorted(counts.items())]


def in_scope(scope: Scope, unit: str, camera: str) -> bool:
    """Unit alarms (camera "unit": door, camera lost) go to whoever watches a camera of it."""
    return scope.allows_unit(unit) if camera == "unit" else scope.allows_camera(unit, camera)


class EventSource(Protocol):
    """Where the units' events are read (:class:`edge.csu.receiver.base.SegmentReader`)."""

    def units(self) -> list[str]: ...

    def events(self, unit_id: str) -> list[StoredEvent]: ...

    def event(self, unit_id: str, event_id: str) -> StoredEvent | None: ...

    def has_snapshot(self, unit_id: str, event_id: str) -> bool: ...


def _source(storage: Path | EventSource) -> EventSource:
    return EventFiles(storage) if isinstance(storage, Path) else storage


class DecisionLog(Protocol):
    """Where decisions are kept (one row per decision, never updated)."""

    def record(self, alert: Alert, record: DecisionRecord) -> None:
        """Add ``record`` to ``alert``'s decisions, unless the alert is settled (its last
        decision is not an escalation): then :class:`ConfigError` naming that decision. Two
        agents deciding at once are serialised: the second sees the first's decision."""
        ...

    def of(self, ids: list[str]) -> dict[str, list[DecisionRecord]]:
        """The decisions on these alerts, in the order they were taken."""
        ...

    def settled(self) -> list[tuple[str, Decision]]:
        """(rule, decision) of every decision, for :func:`false_alarm_rates`."""
        ...


class SqliteDecisions:
    """The decisions in the operators' SQLite database: a connection per call (thread-safe),
    writers serialised by ``BEGIN IMMEDIATE``."""

    def __init__(self, db: Path) -> None:
        self.db_path = db
        conn = sqlite3.connect(db, timeout=10)
        try:
            conn.executescript(_SCHEMA)
        finally:
            conn.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def record(self, alert: Alert, record: DecisionRecord) -> None:
        with self._db() as conn:
            last = conn.execute(
                "SELECT decision, who FROM decisions WHERE event_id=? ORDER BY decided DESC",
                (alert.id,),
            ).fetchone()
            if last is not None and last[0] != Decision.ESCALATE:
                raise ConfigError(f"alert {alert.id} already decided ({last[0]} by {last[1]})")
            conn.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alert.id, alert.unit, alert.camera, alert.rule, record.decision.value,
                 record.comment, record.who, record.decided, record.time_to_decide_s),
            )  # fmt: skip

    def settled(self) -> list[tuple[str, Decision]]:
        with self._db() as conn:
            rows = conn.execute("SELECT rule, decision FROM decisions").fetchall()
        return [(rule, Decision(d)) for rule, d in rows]

    def of(self, ids: list[str]) -> dict[str, list[DecisionRecord]]:
        out: dict[str, list[DecisionRecord]] = {}
        if not ids:
            return out
        with self._db() as conn:
            rows = conn.execute(
                "SELECT event_id, decision, comment, who, decided, time_to_decide_s FROM "
                "decisions WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY decided",
                (json.dumps(ids),),
            ).fetchall()
            for event_id, d, comment, who, decided, ttd in rows:
                out.setdefault(event_id, []).append(
                    DecisionRecord(Decision(d), comment, who, decided, ttd)
                )
        return out


class AlertBook:
    """Thread-safe as its :class:`DecisionLog` is (both kinds are).

    ``storage``: the receiver's store, or a storage directory (read only). ``db``: the
    operators' SQLite database (embedded mode), or a :class:`DecisionLog`."""

    def __init__(
        self,
        storage: Path | EventSource,
        db: Path | DecisionLog,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.storage = _source(storage)
        self.decisions: DecisionLog = SqliteDecisions(db) if isinstance(db, Path) else db
        self.clock = clock

    def _stored(self, scope: Scope) -> list[tuple[float, str, str, bytes]]:
        out = [
            (e.received, unit, e.event_id, e.body)
            for unit in self.storage.units()
            if scope.allows_unit(unit)
            for e in self.storage.events(unit)
        ]
        return sorted(out, reverse=True)

    def alerts(self, scope: Scope) -> list[Alert]:
        """Alerts and raised tamper conditions in ``scope``, newest first."""
        found: list[Alert] = []
        for received, _unit, _id, document in self._stored(scope):
            try:
                body = json.loads(document)["event"]
            except (ValueError, KeyError):
                continue  # verified when it arrived
            if body.get("category") not in ("alert", "tamper") or body.get("state") == "cleared":
                continue
            if not in_scope(scope, str(body["unit"]), str(body["camera"])):
                continue
            found.append(_with_snapshot(_alert(body, received), self.storage))
            if len(found) >= MAX_LISTED:
                break
        decided = self.decisions.of([a.id for a in found])
        return [replace(a, decisions=tuple(decided.get(a.id, ()))) for a in found]

    def find(self, scope: Scope, unit: str, event_id: str) -> Alert | None:
        stored = self.storage.event(unit, event_id) if scope.allows_unit(unit) else None
        if stored is None:
            return None
        body = json.loads(stored.body)["event"]
        if not in_scope(scope, unit, str(body["camera"])):
            return None
        alert = _with_snapshot(_alert(body, stored.received), self.storage)
        return replace(alert, decisions=tuple(self.decisions.of([event_id]).get(event_id, ())))

    def decide(self, alert: Alert, decision: Decision, comment: str, who: str) -> DecisionRecord:
        """Record ``who``'s decision; an alert already settled is refused (two agents on one
        alert: the second sees the first's decision instead of overwriting it)."""
        now = self.clock()
        record = DecisionRecord(
            decision, comment[:COMMENT_MAX], who, now, max(0.0, now - alert.received)
        )
        self.decisions.record(alert, record)
        return record

    def settled(self) -> list[tuple[str, Decision]]:
        """(rule, decision) of every decision, for :func:`false_alarm_rates`."""
        return self.decisions.settled()


#: The unit alarm a cabinet door switch raises (edge/app/daemon.py) and clears.
DOOR_KIND = "cabinet-door-open"


@dataclass(frozen=True, slots=True)
class UnitConditions:
    """What a unit's latest events say of it now, for the units page."""

    door: str | None
    """"open" or "closed" by the door switch's latest event; None: no door event stored."""
    tamper: tuple[str, ...]
    """Tamper conditions raised and not cleared since, as "kind (camera)"."""


def unit_conditions(storage: Path | EventSource, unit: str) -> UnitConditions:
    """Replay the unit's stored door and tamper events in the unit's own order (``wall_ns``)."""
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for stored in _source(storage).events(unit):
        try:
            body = json.loads(stored.body)["event"]
            kind, camera = str(body["kind"]), str(body["camera"])
            wall_ns, state = int(body["wall_ns"]), str(body.get("state") or "")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # verified when it arrived; one going away is not a condition
        if kind != DOOR_KIND and body.get("category") != "tamper":
            continue
        if state in ("raised", "cleared") and wall_ns >= latest.get((kind, camera), (-1, ""))[0]:
            latest[(kind, camera)] = (wall_ns, state)
    door_state = latest.get((DOOR_KIND, "unit"))
    door = None if door_state is None else ("open" if door_state[1] == "raised" else "closed")
    tamper = tuple(
        f"{kind} ({camera})"
        for (kind, camera), (_, state) in sorted(latest.items())
        if kind != DOOR_KIND and state == "raised"
    )
    return UnitConditions(door, tamper)


def _with_snapshot(alert: Alert, source: EventSource) -> Alert:
    held = alert.has_snapshot and source.has_snapshot(alert.unit, alert.id)
    return replace(alert, snapshot_held=held) if held else alert


def _alert(body: dict[str, Any], received: float) -> Alert:
    details = body.get("details") or {}
    return Alert(
        id=str(body["id"]),
        unit=str(body["unit"]),
        camera=str(body["camera"]),
        category=str(body["category"]),
        kind=str(body["kind"]),
        rule=str(body.get("rule", "")),
        wall_ns=int(body["wall_ns"]),
        received=received,
        message=str(details.get("message", "")) if isinstance(details, dict) else "",
        has_snapshot="snapshot" in body,
    )
