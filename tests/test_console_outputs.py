"""Cabinet outputs as the console derives them from stored event sequences: each output's last
known state, and the requests still waiting for an agent (answered, lapsed by the unit, lapsed
by the signed clock), with the exact command that confirms one."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.console import outputs
from edge.csu.console.outputs import (
    DRIVEN,
    LAPSED,
    REQUESTED,
    SAFE,
    OutputEvent,
    OutputState,
    confirm_command,
    output_states,
    read_unit,
    requests_in_scope,
    waiting_requests,
)
from edge.csu.console.roles import Scope
from edge.events import EventSigner

T0 = 1_800_000_000_000_000_000
S = 10**9
EV = "2c1f0d4e-1111-4222-8333-444455556666"


def ev(kind: str, at: int, output: str = "sign-north", **details: Any) -> OutputEvent:
    """An event as edged's outputs engine notifies it (edge/outputs/engine.py)."""
    body = {
        "id": f"{kind}-{at}", "unit": "unit-a", "camera": "unit", "category": "output",
        "kind": kind, "rule": "outputs", "wall_ns": at,
        "details": {"output": output, "reason": "r", "agent": "edged", **details},
    }  # fmt: skip
    parsed = outputs.parse(body)
    assert parsed is not None
    return parsed


def test_an_output_is_in_the_state_of_its_latest_change_by_the_units_clock() -> None:
    events = [
        # arrived in this order; the unit's signed time says the drive came last
        ev(SAFE, T0 + 5 * S, reason="duration over (60 s)"),
        ev(DRIVEN, T0 + 9 * S, state="wrong-way", playbook="wrong-way-warning", event=EV,
           duration_s=60.0),
        ev(SAFE, T0, output="speaker"),
        ev(REQUESTED, T0, output="relay-barrier", playbook="lane-closure", event=EV,
           confirm_within_s=300.0),
    ]  # fmt: skip
    states = {s.output: s for s in output_states(events)}
    assert list(states) == ["relay-barrier", "sign-north", "speaker"]
    north = states["sign-north"]
    assert (north.state, north.since_ns, north.until_ns) == ("wrong-way", T0 + 9 * S, T0 + 69 * S)
    assert (north.playbook, north.agent, north.error) == ("wrong-way-warning", "edged", None)
    assert not north.overdue(T0 + 69 * S) and north.overdue(T0 + 80 * S)
    assert states["speaker"].state == "safe" and states["speaker"].until_ns is None
    # only a request so far: the output is known, its state is not
    assert states["relay-barrier"] == OutputState(
        "relay-barrier", None, None, None, None, None, "", None
    )
    assert output_states([]) == []


def test_a_failed_write_leaves_the_output_unknown_and_flagged_until_a_safe_succeeds() -> None:
    failed = ev(SAFE, T0 + S, error="sign-north: Modbus 10.20.0.5:502: connection refused")
    [state] = output_states([ev(DRIVEN, T0, state="wrong-way", duration_s=60.0), failed])
    assert state.state == "unknown" and state.error is not None and "refused" in state.error
    assert not state.overdue(T0 + 3600 * S)  # flagged as an error, not as overdue
    retried = ev(SAFE, T0 + 2 * S, reason="retried after: duration over")
    [state] = output_states([failed, retried, ev(DRIVEN, T0, state="wrong-way")])
    assert (state.state, state.error, state.since_ns) == ("safe", None, T0 + 2 * S)
    # a drive the controller refused is not a state either
    [state] = output_states([ev(DRIVEN, T0, state="wrong-way", duration_s=9.0, error="timeout")])
    assert (state.state, state.until_ns) == ("unknown", None)


def test_a_request_waits_until_driven_lapsed_or_past_its_signed_deadline() -> None:
    other = "9d8e7f60-aaaa-4bbb-8ccc-ddddeeeeffff"
    req = ev(REQUESTED, T0, output="relay-barrier", playbook="lane-closure", event=EV,
             confirm_within_s=300.0, reason="gathering on park: waits for an agent")  # fmt: skip
    cameras = {EV: "park"}
    [r] = waiting_requests([req], cameras, T0 + 60 * S)
    assert (r.unit, r.output, r.playbook, r.event, r.camera) == (
        "unit-a",
        "relay-barrier",
        "lane-closure",
        EV,
        "park",
    )
    assert not r.lapsed and r.deadline_ns == T0 + 300 * S and r.left_s(T0 + 60 * S) == 240.0
    assert r.reason == "gathering on park: waits for an agent"
    # confirmed: the drive names the same playbook and event
    drive = ev(DRIVEN, T0 + 70 * S, output="relay-barrier", state="closed",
               playbook="lane-closure", event=EV, agent="agent-dupont")  # fmt: skip
    assert waiting_requests([drive, req], cameras, T0 + 80 * S) == []
    # a drive of another playbook or event answers nothing
    unrelated = ev(DRIVEN, T0 + 70 * S, output="relay-barrier", state="closed",
                   playbook="lane-closure", event=other)  # fmt: skip
    assert len(waiting_requests([req, unrelated], cameras, T0 + 80 * S)) == 1
    # past its deadline by the signed time: lapsed, even though the unit's word is not in
    [r] = waiting_requests([req], cameras, T0 + 300 * S)
    assert r.lapsed and r.left_s(T0 + 300 * S) == 0.0
    # the unit said so itself
    lapsed = ev(LAPSED, T0 + 299 * S, output="relay-barrier", playbook="lane-closure", event=EV)
    [r] = waiting_requests([req, lapsed], cameras, T0 + 100 * S)
    assert r.lapsed and r.deadline_ns == T0 + 299 * S
    # an hour after it lapsed it is only in the audit logs
    assert waiting_requests([req], cameras, T0 + (300 + 3601) * S) == []
    # waiting ones first, the most urgent first; then lapsed ones, newest first
    soon = ev(REQUESTED, T0 + 10 * S, playbook="p2", event=other, confirm_within_s=20.0)
    old = ev(REQUESTED, T0 - 400 * S, playbook="p3", event=other, confirm_within_s=30.0)
    order = waiting_requests([req, soon, old], {}, T0 + 15 * S)
    assert [(r.playbook, r.lapsed) for r in order] == [
        ("p2", False), ("lane-closure", False), ("p3", True),
    ]  # fmt: skip


def test_the_confirm_command_is_the_one_edge_csu_takes_with_the_agents_key_left_to_fill() -> None:
    req = ev(REQUESTED, T0, output="relay-barrier", playbook="lane-closure", event=EV,
             confirm_within_s=300.0)  # fmt: skip
    [r] = waiting_requests([req], {}, T0)
    line = confirm_command(r, "/etc/edge-csu/csu 1.toml")
    assert shlex.split(line) == [
        "edge-csu", "command", "confirm", "--config", "/etc/edge-csu/csu 1.toml",
        "--unit", "unit-a", "--output", "relay-barrier", "--playbook", "lane-closure",
        "--event", EV, "--key", "AGENT.key", "--cert", "AGENT.crt",
    ]  # fmt: skip


def test_stored_events_are_read_per_unit_and_requests_kept_to_the_scope(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-a")

    def put(camera: str, category: str, kind: str, at: int, **details: Any) -> str:
        event = signer.sign(
            camera=camera, category=category, kind=kind, rule="outputs", wall_ns=at,
            frame_index=-1, details=details,
        )  # fmt: skip
        directory = storage / "unit-a" / "events"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{event.body['id']}.json").write_bytes(event.wire())
        return str(event.body["id"])

    park = put("park", "alert", "gathering", T0, message="gathering")
    street = put("street", "alert", "wrong_way", T0, message="wrong way")
    put("unit", "output", REQUESTED, T0 + S, output="relay-barrier", playbook="lane-closure",
        event=park, confirm_within_s=300.0, reason="gathering on park")  # fmt: skip
    put("unit", "output", REQUESTED, T0 + S, output="sign-north", playbook="sign-confirm",
        event=street, confirm_within_s=300.0, reason="wrong_way on street")  # fmt: skip
    put("unit", "output", SAFE, T0 - S, output="sign-north", reason="edged starting")
    (storage / "unit-a" / "events" / "torn.json").write_bytes(b'{"event": {')  # skipped
    events, cameras = read_unit(storage, "unit-a")
    assert sorted(e.kind for e in events) == [REQUESTED, REQUESTED, SAFE]
    assert cameras[park] == "park" and cameras[street] == "street"
    assert [s.output for s in output_states(events)] == ["relay-barrier", "sign-north"]
    now = T0 + 10 * S
    everything = requests_in_scope(storage, Scope(), now)
    assert {(r.playbook, r.camera) for r in everything} == {
        ("lane-closure", "park"), ("sign-confirm", "street"),
    }  # fmt: skip
    # a viewer of the street camera gets the request about the street, not the park's
    mine = requests_in_scope(storage, Scope.parse("unit-a/street"), now)
    assert [r.playbook for r in mine] == ["sign-confirm"]
    assert requests_in_scope(storage, Scope.parse("unit-b"), now) == []
    assert read_unit(storage, "unit-b") == ([], {})
