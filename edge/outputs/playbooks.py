"""Playbooks as pure policy: events, confirmations, commands and the clock in; decisions out.

No thread, file or socket here: :class:`edge.outputs.engine.OutputEngine` feeds it and carries
out what it decides (drive an output, return one to safe), auditing each decision. Times are
the engine's monotonic clock, passed in, so an hour-long action is a unit test.

Rules, as the city's configuration states them:

- an event matches a playbook by kind (and camera and rule name where the playbook names
  them); a cleared condition or an event older than ``max_event_age_s`` starts nothing;
- ``confirmation = "required"`` (the default) makes a *request* that waits for an agent's
  confirmation for ``confirm_within_s``, then lapses; ``"immediate"`` drives at once;
- every action ends: at the playbook's ``duration_s`` (or a command's, never beyond the
  output's ``max_duration_s``) the output returns to its safe state;
- one action per output: a newer one replaces the older (its own state and end);
- ``safe_on_uplink_loss`` playbooks end when the uplink is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge.config import Confirmation, OutputConfig, PlaybookConfig

DecisionKind = Literal["drive", "safe", "request", "restored", "lapsed", "ignored"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine must do (``drive``, ``safe``) or record (``request``, ``restored``,
    ``lapsed``, ``ignored``), with who and what is behind it for the audit log."""

    kind: DecisionKind
    output: str
    reason: str
    state: str | None = None
    until: float | None = None
    playbook: str | None = None
    event_id: str | None = None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Active:
    """An output away from its safe state."""

    output: str
    state: str
    started: float
    until: float
    playbook: str | None
    event_id: str | None
    agent: str | None


@dataclass(frozen=True, slots=True)
class Request:
    """A playbook waiting for an agent's confirmation."""

    playbook: str
    event_id: str
    camera: str
    made: float
    expires: float


class PlaybookPolicy:
    def __init__(self, outputs: Sequence[OutputConfig], playbooks: Sequence[PlaybookConfig]):
        self.outputs: Mapping[str, OutputConfig] = {o.name: o for o in outputs}
        self.playbooks: Mapping[str, PlaybookConfig] = {p.name: p for p in playbooks}
        self.active: dict[str, Active] = {}
        # By (event id, playbook): one event may wait for several playbooks' confirmations.
        self.requests: dict[tuple[str, str], Request] = {}

    # --- inputs ----------------------------------------------------------------------------

    def on_event(self, body: Mapping[str, Any], now: float, now_wall_ns: int) -> list[Decision]:
        """A signed event the unit raised (analytics rule, unit alarm)."""
        out: list[Decision] = []
        if body.get("state") == "cleared":
            return out
        event_id = str(body.get("id", ""))
        camera = str(body.get("camera", ""))
        age_s = (now_wall_ns - int(body.get("wall_ns", now_wall_ns))) / 1e9
        for pb in self.playbooks.values():
            if pb.event != body.get("kind"):
                continue
            if pb.camera is not None and pb.camera != camera:
                continue
            if pb.rule is not None and pb.rule != body.get("rule"):
                continue
            if age_s > pb.max_event_age_s:
                reason = f"event {age_s:.1f} s old, over max_event_age_s"
                out.append(
                    Decision("ignored", pb.output, reason, playbook=pb.name, event_id=event_id)
                )
                continue
            if pb.confirmation is Confirmation.IMMEDIATE:
                out.append(self._drive(pb, now, event_id, None, f"{pb.event} on {camera}"))
            else:
                self.requests[(event_id, pb.name)] = Request(
                    pb.name, event_id, camera, now, now + pb.confirm_within_s
                )
                reason = f"{pb.event} on {camera}: waits for an agent's confirmation"
                out.append(
                    Decision(
                        "request",
                        pb.output,
                        reason,
                        playbook=pb.name,
                        event_id=event_id,
                        until=now + pb.confirm_within_s,
                    )
                )
        return out

    def confirm(self, event_id: str, playbook: str, agent: str, now: float) -> list[Decision]:
        """An agent confirmed a request (the command's signature was checked already).
        Raises KeyError when no such request is waiting (lapsed, never made, done)."""
        if self.requests.pop((event_id, playbook), None) is None:
            raise KeyError(f"no request of playbook {playbook!r} for event {event_id!r} waits")
        pb = self.playbooks[playbook]
        return [self._drive(pb, now, event_id, agent, f"confirmed by {agent}")]

    def restore(
        self, playbook: str, event_id: str, camera: str, now: float, left_s: float
    ) -> Decision:
        """A request kept over a restart of edged waits again, ``left_s`` more seconds
        (:mod:`edge.outputs.pending` decides which and for how long)."""
        pb = self.playbooks[playbook]
        until = now + min(left_s, pb.confirm_within_s)
        self.requests[(event_id, playbook)] = Request(playbook, event_id, camera, now, until)
        return Decision(
            "restored",
            pb.output,
            f"{pb.event} on {camera}: still waits for an agent's confirmation after a restart",
            playbook=playbook,
            event_id=event_id,
            until=until,
        )

    def manual(
        self, output: str, state: str, duration_s: float, agent: str, now: float
    ) -> list[Decision]:
        """An agent's manual command; ``state`` "safe" ends any action on the output."""
        cfg = self.outputs[output]
        if state == "safe":
            return self._end(output, f"returned to safe by {agent}", agent=agent)
        if state not in cfg.states:
            raise KeyError(f"output {output!r} has no state {state!r}")
        until = now + min(duration_s, cfg.max_duration_s)
        self.active[output] = Active(output, state, now, until, None, None, agent)
        return [
            Decision(
                "drive", output, f"manual command of {agent}", state=state, until=until, agent=agent
            )
        ]

    def on_uplink(self, connected: bool) -> list[Decision]:
        if connected:
            return []
        out: list[Decision] = []
        for act in list(self.active.values()):
            pb = self.playbooks.get(act.playbook or "")
            if pb is not None and pb.safe_on_uplink_loss:
                out += self._end(act.output, "uplink lost (safe_on_uplink_loss)")
        return out

    def tick(self, now: float) -> list[Decision]:
        """Actions past their end return to safe; requests past their time lapse."""
        out: list[Decision] = []
        for act in list(self.active.values()):
            if now >= act.until:
                out += self._end(act.output, f"duration over ({act.until - act.started:g} s)")
        for key, req in list(self.requests.items()):
            if now >= req.expires:
                del self.requests[key]
                event_id = req.event_id
                pb = self.playbooks[req.playbook]
                out.append(
                    Decision(
                        "lapsed",
                        pb.output,
                        "no confirmation in time",
                        playbook=req.playbook,
                        event_id=event_id,
                    )
                )
        return out

    def end_all(self, reason: str) -> list[Decision]:
        """Every output back to safe (edged stopping): every output, active or not, so an
        output left in a state by a previous life of edged is also made safe."""
        self.requests.clear()
        self.active.clear()
        return [Decision("safe", name, reason) for name in self.outputs]

    # --- helpers ---------------------------------------------------------------------------

    def _drive(
        self, pb: PlaybookConfig, now: float, event_id: str, agent: str | None, reason: str
    ) -> Decision:
        until = now + min(pb.duration_s, self.outputs[pb.output].max_duration_s)
        self.active[pb.output] = Active(pb.output, pb.state, now, until, pb.name, event_id, agent)
        return Decision(
            "drive",
            pb.output,
            reason,
            state=pb.state,
            until=until,
            playbook=pb.name,
            event_id=event_id,
            agent=agent,
        )

    def _end(self, output: str, reason: str, *, agent: str | None = None) -> list[Decision]:
        act = self.active.pop(output, None)
        if act is None and agent is None:
            return []
        return [
            Decision(
                "safe",
                output,
                reason,
                playbook=act.playbook if act else None,
                event_id=act.event_id if act else None,
                agent=agent,
            )
        ]
