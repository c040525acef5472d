"""Cabinet outputs as the CSU sees them: each output's last known state and the playbooks'
requests still waiting for an agent, replayed from the signed events the units sent (category
``output``, :mod:`edge.outputs.engine`).

Pure policy over parsed events (:func:`output_states`, :func:`waiting_requests`), and a thin
reader of the receiver's store (:func:`read_unit`). The console never acts on an output: an
agent confirms a request with ``edge-csu command confirm``, signed with their own operator key
(:func:`confirm_command` writes the line for them to complete with it).

Everything is ordered by the unit's signed time (``wall_ns``), not by arrival: events of a unit
that was offline arrive late and out of order.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .alerts import EventSource, _source, in_scope
from .roles import Scope

CATEGORY = "output"
DRIVEN = "output-driven"
SAFE = "output-safe"
REQUESTED = "output-confirmation-requested"
LAPSED = "output-confirmation-lapsed"
#: A lapsed request stays in the inbox this long (marked lapsed), then only in the audit logs.
LAPSED_SHOWN_S = 3600
#: An action whose end is this far past with no ``output-safe`` received is flagged.
OVERDUE_GRACE_S = 10
#: What the agent replaces with their own operator key and certificate.
KEY_PLACEHOLDER = "AGENT.key"
CERT_PLACEHOLDER = "AGENT.crt"


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """One stored event of category ``output``, as the unit signed it."""

    id: str
    unit: str
    kind: str
    wall_ns: int
    output: str
    state: str | None = None
    playbook: str | None = None
    event: str | None = None
    """The id of the event that started the playbook (the request's, the action's)."""
    agent: str | None = None
    reason: str = ""
    error: str | None = None
    confirm_within_s: float | None = None
    duration_s: float | None = None


def parse(body: dict[str, Any]) -> OutputEvent | None:
    """The output event in a stored event body; None for any other event."""
    details = body.get("details")
    if body.get("category") != CATEGORY or not isinstance(details, dict):
        return None
    try:

        def text(key: str) -> str | None:
            value = details.get(key)
            return None if value is None else str(value)

        def number(key: str) -> float | None:
            value = details.get(key)
            return None if value is None else float(value)

        return OutputEvent(
            id=str(body["id"]),
            unit=str(body["unit"]),
            kind=str(body["kind"]),
            wall_ns=int(body["wall_ns"]),
            output=str(details["output"]),
            state=text("state"),
            playbook=text("playbook"),
            event=text("event"),
            agent=text("agent"),
            reason=str(details.get("reason") or ""),
            error=text("error"),
            confirm_within_s=number("confirm_within_s"),
            duration_s=number("duration_s"),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class OutputState:
    """An output's last known state: that of its latest ``output-driven`` / ``output-safe``."""

    output: str
    state: str | None
    """The state it was driven to, ``safe``, ``unknown`` (the unit's write failed) or None:
    no change received yet (only requests)."""
    since_ns: int | None
    until_ns: int | None
    """When a driven action ends (the unit returns the output to safe then)."""
    playbook: str | None
    agent: str | None
    reason: str
    error: str | None
    """The controller's error when the unit's last write to it failed."""

    def overdue(self, now_ns: int) -> bool:
        """Driven past its end with no return to safe received (unit offline, or stuck)."""
        return (
            self.error is None
            and self.until_ns is not None
            and now_ns > self.until_ns + OVERDUE_GRACE_S * 10**9
        )


def _ordered(events: Iterable[OutputEvent]) -> list[OutputEvent]:
    return sorted(events, key=lambda e: e.wall_ns)


def output_states(events: Iterable[OutputEvent]) -> list[OutputState]:
    """Each output named by ``events`` (one unit's), by name, in the state of its latest change."""
    states: dict[str, OutputState] = {}
    for e in _ordered(events):
        if e.kind not in (DRIVEN, SAFE):
            states.setdefault(
                e.output, OutputState(e.output, None, None, None, None, None, "", None)
            )
            continue
        if e.error is not None:
            state = "unknown"  # a write that failed: the unit no longer knows, nor do we
        else:
            state = e.state if e.kind == DRIVEN and e.state else "safe"
        until = None
        if e.kind == DRIVEN and e.error is None and e.duration_s is not None:
            until = e.wall_ns + int(e.duration_s * 1e9)
        states[e.output] = OutputState(
            e.output, state, e.wall_ns, until, e.playbook, e.agent, e.reason, e.error
        )
    return [states[name] for name in sorted(states)]


@dataclass(frozen=True, slots=True)
class WaitingRequest:
    """A playbook's request for an agent's confirmation."""

    unit: str
    output: str
    playbook: str
    event: str
    """The id of the event that made the request: what ``--event`` names."""
    requested_ns: int
    deadline_ns: int
    """Signed time of the request plus its ``confirm_within_s``: the unit drops it then."""
    reason: str
    camera: str | None
    """The camera of the event behind it, when that event is stored at the CSU."""
    lapsed: bool
    """The unit said it lapsed, or its time is over by the unit's signed clock."""

    def left_s(self, now_ns: int) -> float:
        return max(0.0, (self.deadline_ns - now_ns) / 1e9)


def waiting_requests(
    events: Iterable[OutputEvent], cameras: dict[str, str], now_ns: int
) -> list[WaitingRequest]:
    """Requests of ``events`` (one unit's) that no ``output-driven`` has answered: waiting ones
    first (the most urgent first), then those that lapsed in the last :data:`LAPSED_SHOWN_S`,
    newest first. ``cameras``: the camera of each stored event, by id."""
    requests: dict[tuple[str, str], WaitingRequest] = {}
    for e in _ordered(events):
        if e.playbook is None or e.event is None:
            continue
        key = (e.playbook, e.event)
        if e.kind == REQUESTED and e.confirm_within_s is not None:
            requests[key] = WaitingRequest(
                e.unit, e.output, e.playbook, e.event, e.wall_ns,
                e.wall_ns + int(e.confirm_within_s * 1e9), e.reason, cameras.get(e.event), False,
            )  # fmt: skip
        elif e.kind == DRIVEN:
            requests.pop(key, None)  # confirmed: the output's state says the rest
        elif e.kind == LAPSED and key in requests:
            r = requests[key]
            requests[key] = WaitingRequest(
                r.unit, r.output, r.playbook, r.event, r.requested_ns,
                min(r.deadline_ns, e.wall_ns), r.reason, r.camera, True,
            )  # fmt: skip
    out = []
    for r in requests.values():
        if now_ns >= r.deadline_ns and not r.lapsed:
            r = WaitingRequest(
                r.unit, r.output, r.playbook, r.event, r.requested_ns, r.deadline_ns, r.reason,
                r.camera, True,
            )  # fmt: skip
        if r.lapsed and now_ns - r.deadline_ns > LAPSED_SHOWN_S * 10**9:
            continue
        out.append(r)
    waiting = sorted((r for r in out if not r.lapsed), key=lambda r: r.deadline_ns)
    lapsed = sorted((r for r in out if r.lapsed), key=lambda r: -r.deadline_ns)
    return waiting + lapsed


def confirm_command(request: WaitingRequest, config: str) -> str:
    """The ``edge-csu command confirm`` line for ``request``, the agent's key and certificate
    left as :data:`KEY_PLACEHOLDER` and :data:`CERT_PLACEHOLDER`."""
    q = shlex.quote
    return (
        f"edge-csu command confirm --config {q(config)} --unit {q(request.unit)} "
        f"--output {q(request.output)} --playbook {q(request.playbook)} "
        f"--event {q(request.event)} --key {KEY_PLACEHOLDER} --cert {CERT_PLACEHOLDER}"
    )


# --- the receiver's store ------------------------------------------------------------------


def read_unit(storage: Path | EventSource, unit: str) -> tuple[list[OutputEvent], dict[str, str]]:
    """The unit's stored output events, and the camera of every stored event by id
    (``storage``: the receiver's store, or a storage directory)."""
    found: list[OutputEvent] = []
    cameras: dict[str, str] = {}
    for stored in _source(storage).events(unit):
        try:
            body = json.loads(stored.body)["event"]
            cameras[str(body["id"])] = str(body["camera"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # verified when it arrived; one going away is not an event
        parsed = parse(body)
        if parsed is not None and parsed.unit == unit:
            found.append(parsed)
    return found, cameras


def requests_in_scope(
    storage: Path | EventSource, scope: Scope, now_ns: int
) -> list[WaitingRequest]:
    """Requests of every unit in ``scope``, those whose event's camera is out of it left out
    (the agent could not see what the request is about); waiting ones first."""
    units = sorted(_source(storage).units())
    out: list[WaitingRequest] = []
    for unit in units:
        if not scope.allows_unit(unit):
            continue
        events, cameras = read_unit(storage, unit)
        out += [
            r
            for r in waiting_requests(events, cameras, now_ns)
            if in_scope(scope, unit, r.camera or "unit")
        ]
    waiting = sorted((r for r in out if not r.lapsed), key=lambda r: r.deadline_ns)
    lapsed = sorted((r for r in out if r.lapsed), key=lambda r: -r.deadline_ns)
    return waiting + lapsed
