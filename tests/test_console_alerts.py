"""The alerts inbox's policy and book: false-alarm rates, scope of unit alarms, one settled
decision per alert (escalation then a final one), time to decide from arrival; decisions on
SQLite (embedded) and on PostgreSQL (cluster: settled once across receivers)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.console.alerts import (
    DOOR_KIND,
    AlertBook,
    Decision,
    UnitConditions,
    false_alarm_rates,
    in_scope,
    unit_conditions,
)
from edge.csu.console.roles import Scope
from edge.errors import ConfigError
from edge.events import EventSigner

from .pg_util import ConsoleDb


def test_false_alarm_rate_counts_settled_decisions_per_rule() -> None:
    rates = false_alarm_rates(
        [
            ("line", Decision.DISMISS),
            ("line", Decision.CONFIRM),
            ("line", Decision.ESCALATE),  # not settled: not counted
            ("door", Decision.DISMISS),
        ]
    )
    assert [(r.rule, r.decided, r.dismissed, r.false_alarm_rate) for r in rates] == [
        ("door", 1, 1, 1.0),
        ("line", 2, 1, 0.5),
    ]


def test_unit_alarms_go_to_whoever_watches_a_camera_of_the_unit() -> None:
    scope = Scope.parse("unit-a/street")
    assert in_scope(scope, "unit-a", "unit") and in_scope(scope, "unit-a", "street")
    assert not in_scope(scope, "unit-a", "door") and not in_scope(scope, "unit-b", "unit")


def _store_event(storage: Path, signer: EventSigner, camera: str, **kw: str) -> str:
    event = signer.sign(
        camera=camera, category=kw.get("category", "alert"), kind="line-crossing",
        rule=kw.get("rule", "line"), wall_ns=1_800_000_000_000_000_000, frame_index=3,
        details={"message": "someone crossed"},
    )  # fmt: skip
    directory = storage / signer.unit_id / "events"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{event.body['id']}.json"
    path.write_bytes(event.wire())
    os.utime(path, (1_800_000_000.0, 1_800_000_000.0))  # arrived at the CSU then
    return str(event.body["id"])


def test_decisions_are_scoped_timed_and_settled_once(tmp_path: Path, console: ConsoleDb) -> None:
    storage = tmp_path / "storage"
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-a")
    street = _store_event(storage, signer, "street")
    door = _store_event(storage, signer, "door")
    _store_event(storage, signer, "street", category="count")  # counts are not alerts
    now = [1_800_000_042.0]
    book = AlertBook(
        storage,
        tmp_path / "operators.db" if console.kind == "embedded" else console.decisions(),
        clock=lambda: now[0],
    )
    scope = Scope.parse("unit-a/street")
    assert [a.id for a in book.alerts(scope)] == [street]
    assert book.find(scope, "unit-a", door) is None  # outside the scope: as if absent
    alert = book.find(scope, "unit-a", street)
    assert alert is not None and alert.open
    first = book.decide(alert, Decision.ESCALATE, "à vérifier", "j.martin")
    assert first.time_to_decide_s == 42.0
    now[0] += 60
    alert = book.find(scope, "unit-a", street)
    assert alert is not None and alert.open  # escalated: still waiting for a final word
    book.decide(alert, Decision.CONFIRM, "", "s.chef")
    with pytest.raises(ConfigError, match=r"already decided \(confirm by s\.chef\)"):
        book.decide(alert, Decision.DISMISS, "", "j.martin")
    shown = {a.id: a for a in book.alerts(Scope())}
    assert set(shown) == {street, door}  # the whole fleet sees the door camera too
    assert [d.decision for d in shown[street].decisions] == [Decision.ESCALATE, Decision.CONFIRM]
    assert not shown[street].open and shown[door].open
    assert book.settled() == [("line", Decision.ESCALATE), ("line", Decision.CONFIRM)]


def test_the_units_page_reads_door_and_tamper_from_the_latest_events(tmp_path: Path) -> None:
    """Replayed in the unit's order (wall_ns), not by file time: a door opened then closed is
    closed, a tamper condition cleared is gone, one raised again is back."""
    storage = tmp_path / "storage"
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-a")
    assert unit_conditions(storage, "unit-a") == UnitConditions(None, ())

    def put(kind: str, camera: str, category: str, state: str, at: int) -> None:
        event = signer.sign(
            camera=camera, category=category, kind=kind, rule=kind, wall_ns=at,
            frame_index=-1, details={"message": kind}, state=state,
        )  # fmt: skip
        directory = storage / "unit-a" / "events"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{event.body['id']}.json").write_bytes(event.wire())

    t0 = 1_800_000_000_000_000_000
    put(DOOR_KIND, "unit", "alert", "cleared", t0 + 20)  # arrived first, happened last
    put(DOOR_KIND, "unit", "alert", "raised", t0 + 10)
    put("camera-covered", "street", "tamper", "raised", t0)
    put("camera-moved", "street", "tamper", "raised", t0 + 1)
    put("camera-moved", "street", "tamper", "cleared", t0 + 2)
    (storage / "unit-a" / "events" / "torn.json").write_bytes(b'{"event": {')  # skipped
    assert unit_conditions(storage, "unit-a") == UnitConditions(
        "closed", ("camera-covered (street)",)
    )
    put(DOOR_KIND, "unit", "alert", "raised", t0 + 30)
    assert unit_conditions(storage, "unit-a").door == "open"
    assert unit_conditions(storage, "unit-b") == UnitConditions(None, ())


def test_two_receivers_racing_to_decide_one_alert_settle_it_once(
    tmp_path: Path, pg_server: str
) -> None:
    """Cluster mode: two agents on two receivers decide the same alerts at the same moment;
    for each alert exactly one decision is kept, the other agent is told whose it is (the
    console's 409). An escalation then two final decisions at once: one final decision."""
    storage = tmp_path / "storage"
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-a")
    ids = [_store_event(storage, signer, "street") for _ in range(8)]
    cluster = ConsoleDb("cluster", tmp_path / "unused.db", pg_server)
    try:
        books = [AlertBook(storage, cluster.decisions(r)) for r in ("r1", "r2")]
        escalated = books[0].find(Scope(), "unit-a", ids[-1])
        assert escalated is not None
        books[0].decide(escalated, Decision.ESCALATE, "", "j.martin")
        outcomes: dict[tuple[str, str], str] = {}
        start = threading.Barrier(len(books))

        def decide(book: AlertBook, who: str, decision: Decision) -> None:
            start.wait()
            for event_id in ids:
                alert = book.find(Scope(), "unit-a", event_id)
                assert alert is not None
                try:
                    book.decide(alert, decision, "", who)
                    outcomes[(event_id, who)] = "kept"
                except ConfigError as exc:
                    outcomes[(event_id, who)] = str(exc)

        threads = [
            threading.Thread(target=decide, args=(books[0], "a.agent", Decision.CONFIRM)),
            threading.Thread(target=decide, args=(books[1], "b.agent", Decision.DISMISS)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for event_id in ids:
            mine = [outcomes[(event_id, who)] for who in ("a.agent", "b.agent")]
            assert mine.count("kept") == 1, mine
            assert "already decided" in next(o for o in mine if o != "kept")
            for book in books:  # both receivers see the one settling decision
                alert = book.find(Scope(), "unit-a", event_id)
                assert alert is not None and not alert.open
                final = [d for d in alert.decisions if d.decision is not Decision.ESCALATE]
                assert len(final) == 1
        assert len([d for _, d in books[1].settled() if d is not Decision.ESCALATE]) == len(ids)
    finally:
        cluster.close()
