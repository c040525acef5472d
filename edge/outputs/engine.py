"""The outputs engine: edged's side of cabinet outputs (one thread, one queue).

Events (from the :class:`edge.app.alerts.AlertHub`), agents' confirmations and manual
commands (from the uplink's command pull), and the uplink's state arrive on a queue; the
engine's thread feeds them to the pure :class:`edge.outputs.playbooks.PlaybookPolicy`, carries
out its decisions through the drivers, and writes each one to the signed audit log with the
event and the agent behind it. Callers never wait on a controller: they only queue.

Fail-safe, in three layers:

1. the engine returns every output to safe at the end of each action, when edged stops, and
   at start (a previous life may have died with an output driven);
2. the guard process (:mod:`edge.outputs.guard`), started here, holds the read end of a pipe
   whose write end only edged holds: when edged dies, however (``kill -9`` included), the
   kernel closes it and the guard drives every output safe;
3. controllers that watch a heartbeat register fall back on their own (power cut, board hung).

Requests waiting for an agent outlive a restart (:mod:`edge.outputs.pending`): written to the
data directory whenever they change, read back at start, after the outputs were made safe.
Those still in their window wait again (``output-confirmation-restored``), the others lapse
(``output-confirmation-lapsed``); a restart never drives an output by itself.

Threads: the engine thread alone touches the drivers and the policy. ``_lock`` protects the
published status (read by the control thread and the metrics writer).
"""

from __future__ import annotations

import functools
import logging
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config import EdgeConfig
from edge.errors import OutputError
from edge.events import SignedEvent
from edge.outputs.base import OutputDriver, make_driver
from edge.outputs.pending import KeptRequest, PendingStore, pending_path, restore
from edge.outputs.playbooks import Decision, PlaybookPolicy
from edge.snapshot import OutputsStatus, OutputStatus, PendingRequestStatus

log = logging.getLogger(__name__)

#: audit(action, details, actor)
Audit = Callable[[str, dict[str, Any], str], None]
#: notify(kind, details): a signed event for the CSU (kind as the audit action)
Notify = Callable[[str, dict[str, Any]], None]

#: How often an output that failed to return to safe is tried again.
_RETRY_S = 1.0
#: How long the guard may take to say it is armed.
_GUARD_START_S = 15.0


@dataclass(frozen=True, slots=True)
class _Event:
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Confirm:
    event_id: str
    playbook: str
    agent: str


@dataclass(frozen=True, slots=True)
class _Manual:
    output: str
    state: str
    duration_s: float
    agent: str


@dataclass(frozen=True, slots=True)
class _Uplink:
    connected: bool


@dataclass(frozen=True, slots=True)
class _Tick:
    """Nothing arrived before the next deadline: only time has passed."""


@dataclass(frozen=True, slots=True)
class _Refused:
    """A command the unit refused before it reached the engine (already audited)."""

    details: dict[str, Any]
    agent: str


_Item = _Event | _Confirm | _Manual | _Uplink | _Tick | _Refused | None


class OutputEngine:
    def __init__(
        self,
        cfg: EdgeConfig,
        audit: Audit,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        drivers: dict[str, OutputDriver] | None = None,
        guard: bool = True,
        notify: Notify | None = None,
        keep_pending: bool = True,
    ) -> None:
        self.cfg = cfg
        self._audit = audit
        self._notify = notify
        self._clock = clock
        self._wall_ns = wall_ns
        self.policy = PlaybookPolicy(cfg.outputs, cfg.playbooks)
        self.drivers = drivers if drivers is not None else {
            o.name: make_driver(o) for o in cfg.outputs
        }  # fmt: skip
        self._use_guard = guard
        self.guard: subprocess.Popen[bytes] | None = None
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._heartbeat = 0
        self._beat_failing: set[str] = set()
        self._problems: dict[str, str] = {}  # found by the drivers' checks at start
        self._stopped = False
        self._unsafe: dict[str, str] = {}  # outputs whose return to safe failed: reason
        self._lock = threading.Lock()
        self._status: dict[str, OutputStatus] = {
            o.name: {
                "kind": o.kind.value,
                "meaning": o.meaning,
                "state": "unknown",
                "since_ns": wall_ns(),
                "until_s": None,
                "playbook": None,
                "agent": None,
                "error": None,
                "changes": 0,
                "errors": 0,
            }
            for o in cfg.outputs
        }
        self._pending: list[PendingRequestStatus] = []
        # Requests kept over a restart (None: not kept, the benchmark's engine): what was
        # written, by event id, with wall-clock times; written only between the reload at start
        # and stop (the safe states of start and stop end requests only in memory).
        self._store = PendingStore(pending_path(cfg.unit.data_dir)) if keep_pending else None
        self._kept: dict[str, KeptRequest] = {}
        self._saved: frozenset[tuple[str, str]] | None = None
        self._keeping = False
        self._save_failing = False

    # --- what other threads call (never blocks) ---------------------------------------------

    def on_event(self, event: SignedEvent) -> None:
        """AlertHub listener: every signed event of the unit."""
        # Counts never start anything; the engine's own notices must not feed it back.
        if event.body.get("category") not in ("count", "output"):
            self._queue.put(_Event(event.body))

    def confirm(self, event_id: str, playbook: str, agent: str) -> None:
        self._queue.put(_Confirm(event_id, playbook, agent))

    def manual(self, output: str, state: str, duration_s: float, agent: str) -> None:
        self._queue.put(_Manual(output, state, duration_s, agent))

    def uplink_state(self, connected: bool) -> None:
        self._queue.put(_Uplink(connected))

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for name, driver in self.drivers.items():
            problems = driver.check()
            for problem in problems:
                log.error("%s", problem)
            if problems:
                # Shown until fixed (a restart), whatever the writes do meanwhile.
                self._problems[name] = "; ".join(problems)
        if self._use_guard:
            try:
                self._start_guard()
            except (OSError, OutputError, ValueError) as exc:
                # Recording must not stop for it: the status shows the guard missing (FAIL).
                log.error("output guard not started: outputs are not made safe if edged dies: %s",
                          exc)  # fmt: skip
                self.guard = None
        kept = self._store.load() if self._store is not None else []
        if self._store is not None and self._store.damaged is not None:
            self._audit("output-pending-damaged", {"reason": self._store.damaged}, "edged")
        self._carry_out(self.policy.end_all("edged started"))
        self._reload(kept)
        self._thread = threading.Thread(target=self._run, name="outputs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Every output safe, drivers closed, the guard told; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10.0)
            self._thread = None
        # The requests stay on disk: the next start offers them again (or lapses them).
        self._keeping = False
        self._carry_out(self.policy.end_all("edged stopping"))
        for driver in self.drivers.values():
            driver.close()
        if self.guard is not None:
            # EOF tells the guard edged is gone: it drives every output safe again and exits.
            assert self.guard.stdin is not None
            self.guard.stdin.close()
            try:
                self.guard.wait(10.0)
            except subprocess.TimeoutExpired:
                log.error("output guard did not exit; killing it")
                self.guard.kill()
                self.guard.wait()
            self.guard = None

    def _reload(self, kept: list[KeptRequest]) -> None:
        """The requests the previous life of edged kept: waiting again or lapsed, audited."""
        restored, lapsed = restore(kept, self.policy.playbooks, self._wall_ns())
        now = self._clock()
        decisions = []
        for gone in lapsed:
            r = gone.request
            decisions.append(Decision("lapsed", r.output, gone.reason, playbook=r.playbook,
                                      event_id=r.event))  # fmt: skip
        for back in restored:
            r = back.request
            decisions.append(self.policy.restore(r.playbook, r.event, r.camera, now, back.left_s))
            self._kept[r.event] = r
        self._saved = frozenset((r.event, r.playbook) for r in kept)
        self._keeping = self._store is not None
        self._carry_out(decisions)  # rewrites the file: the lapsed ones leave it

    def _save_pending(self, *, only_new: bool = False) -> None:
        """Write the waiting requests when they changed since the last write (``only_new``:
        only when a request is not on disk yet)."""
        if not self._keeping or self._store is None:
            return
        now, wall = self._clock(), self._wall_ns()
        current = {}
        for r in self.policy.requests.values():
            k = self._kept.get(r.event_id)
            if k is None or k.playbook != r.playbook:
                # Wall-clock times taken once, when first written: later clock steps do not
                # move a deadline already on disk.
                made_ns = wall - round((now - r.made) * 1e9)
                k = KeptRequest(
                    playbook=r.playbook,
                    event=r.event_id,
                    camera=r.camera,
                    output=self.policy.playbooks[r.playbook].output,
                    made_ns=made_ns,
                    expires_ns=made_ns + round((r.expires - r.made) * 1e9),
                )
            current[r.event_id] = k
        self._kept = current
        keys = frozenset((k.event, k.playbook) for k in current.values())
        if keys == self._saved or (only_new and self._saved is not None and keys <= self._saved):
            return
        try:
            self._store.save(current.values())
        except OSError as exc:
            if not self._save_failing:  # once per outage; tried again on each change or tick
                log.error("pending output requests not written (a restart would lose them): "
                          "%s", exc)  # fmt: skip
            self._save_failing = True
            return
        if self._save_failing:
            log.warning("pending output requests written again")
        self._save_failing = False
        self._saved = keys

    def _start_guard(self) -> None:
        # Its own session: Ctrl-C on edged's terminal must not take the guard first.
        self.guard = subprocess.Popen(
            [sys.executable, "-m", "edge.outputs.guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.guard.stdin is not None and self.guard.stdout is not None
        payload = "[" + ",".join(o.model_dump_json() for o in self.cfg.outputs) + "]\n"
        self.guard.stdin.write(payload.encode())
        self.guard.stdin.flush()
        # A guard that hangs at start must not hang edged's start (and recording) with it.
        readable, _, _ = select.select([self.guard.stdout], [], [], _GUARD_START_S)
        ready = self.guard.stdout.readline() if readable else b"(nothing in time)"
        if ready.strip() != b"armed":
            self.guard.kill()
            self.guard.wait()
            raise OutputError(f"output guard did not start (said {ready!r})")
        log.info("output guard armed (pid %d)", self.guard.pid)

    # --- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        period = self.cfg.outputs_heartbeat_s
        next_beat = next_retry = self._clock()
        while True:
            now = self._clock()
            deadlines = [a.until for a in self.policy.active.values()]
            deadlines += [r.expires for r in self.policy.requests.values()]
            deadlines.append(next_beat)
            if self._unsafe:
                deadlines.append(next_retry)
            try:
                item = self._queue.get(timeout=max(0.0, min(deadlines) - now))
            except queue.Empty:
                item = _Tick()
            if item is None:
                return
            try:
                self._handle(item)
                now = self._clock()
                self._carry_out(self.policy.tick(now))
                if self._unsafe and now >= next_retry:
                    # Paced: a dead controller costs one connection attempt a second, not
                    # one per event.
                    self._retry_unsafe()
                    next_retry = now + _RETRY_S
                if now >= next_beat:
                    self._beat()
                    next_beat = now + period
            except Exception:  # the engine must outlive a bad item; the guard is still there
                log.exception("outputs engine")
            self._publish()

    def _handle(self, item: _Item) -> None:
        now = self._clock()
        if isinstance(item, _Event):
            self._carry_out(self.policy.on_event(item.body, now, self._wall_ns()))
        elif isinstance(item, _Confirm):
            try:
                decisions = self.policy.confirm(item.event_id, item.playbook, item.agent, now)
            except KeyError as exc:
                details = {"reason": str(exc.args[0]), "playbook": item.playbook,
                           "event": item.event_id}  # fmt: skip
                self._audit("output-command-refused", details, item.agent)
                self._tell_refused(details, item.agent)
                return
            self._carry_out(decisions)
        elif isinstance(item, _Manual):
            try:
                decisions = self.policy.manual(
                    item.output, item.state, item.duration_s, item.agent, now
                )
            except KeyError as exc:
                details = {"reason": str(exc.args[0]), "output": item.output, "state": item.state}
                self._audit("output-command-refused", details, item.agent)
                self._tell_refused(details, item.agent)
                return
            self._carry_out(decisions)
        elif isinstance(item, _Refused):
            self._tell_refused(item.details, item.agent)
        elif isinstance(item, _Uplink) and not item.connected:
            self._carry_out(self.policy.on_uplink(False))

    def command_refused(self, details: dict[str, Any], agent: str) -> None:
        """Tell the CSU about a command refused before it reached the engine (a forged,
        replayed, expired or out-of-scope one: the caller has audited it)."""
        self._queue.put(_Refused(dict(details), agent))

    def _tell_refused(self, details: dict[str, Any], agent: str) -> None:
        if self._notify is None:
            return
        try:
            message = f"command of {agent} refused: {details['reason']}"
            self._notify("output-command-refused", {**details, "agent": agent, "message": message})
        except Exception:
            log.exception("output event not published")

    def _carry_out(self, decisions: list[Decision]) -> None:
        # The policy has already changed. A new request is on disk before it is audited and
        # shown to the CSU (written then, so that a drive of the same event is not kept
        # waiting on the disk); one confirmed leaves the disk only once its output was driven
        # (a crash in between leaves it waiting again for a new confirmation, never lost).
        for d in decisions:
            if d.kind == "request":
                self._save_pending(only_new=True)
            details: dict[str, Any] = {"output": d.output, "reason": d.reason}
            for key in ("state", "playbook", "event_id"):
                if getattr(d, key) is not None:
                    details[key if key != "event_id" else "event"] = getattr(d, key)
            if d.until is not None:
                left = "confirm_within_s" if d.kind in ("request", "restored") else "duration_s"
                details[left] = round(d.until - self._clock(), 3)
            actor = d.agent or "edged"
            if d.kind == "drive":
                assert d.state is not None and d.until is not None
                driver = self.drivers[d.output]
                self._do(d, functools.partial(driver.drive, d.state, d.until - self._clock()))
            elif d.kind == "safe":
                self._do(d, self.drivers[d.output].safe)
            action = {
                "drive": "output-driven",
                "safe": "output-safe",
                "request": "output-confirmation-requested",
                "restored": "output-confirmation-restored",
                "lapsed": "output-confirmation-lapsed",
                "ignored": "output-event-ignored",
            }[d.kind]
            with self._lock:
                # A lapsed request's output may have left the configuration since.
                st = self._status.get(d.output)
                error = st["error"] if st is not None else None
            if error is not None and d.kind in ("drive", "safe"):
                details["error"] = error
            self._audit(action, details, actor)
            if self._notify is not None:
                try:
                    message = f"{d.output}: {action.removeprefix('output-')} ({d.reason})"
                    self._notify(action, {**details, "agent": actor, "message": message})
                except Exception:  # the CSU's view must not stop an output's return to safe
                    log.exception("output event not published")
        self._save_pending()
        self._publish()

    def _do(self, d: Decision, act: Callable[[], None]) -> None:
        try:
            act()
        except OutputError as exc:
            log.error("%s", exc)
            with self._lock:
                st = self._status[d.output]
                st["error"] = str(exc)
                st["errors"] += 1
                st["state"] = "unknown"
            if d.kind == "safe":
                self._unsafe[d.output] = d.reason
            else:
                # A state half-reached is not a state: back to safe (retried until it is).
                self.policy.active.pop(d.output, None)
                self._unsafe[d.output] = f"{d.state} failed"
            return
        self._unsafe.pop(d.output, None)
        log.warning(
            "output %s -> %s (%s)", d.output, d.state if d.kind == "drive" else "safe", d.reason
        )
        with self._lock:
            st = self._status[d.output]
            st["state"] = d.state if d.kind == "drive" and d.state else "safe"
            st["since_ns"] = self._wall_ns()
            st["playbook"] = d.playbook
            st["agent"] = d.agent
            st["error"] = None
            st["changes"] += 1

    def _retry_unsafe(self) -> None:
        for name, reason in list(self._unsafe.items()):
            try:
                self.drivers[name].safe()
            except OutputError:
                continue
            self._unsafe.pop(name, None)
            self._carry_out([Decision("safe", name, f"retried after: {reason}")])

    def _beat(self) -> None:
        self._heartbeat += 1
        for name, driver in self.drivers.items():
            try:
                driver.heartbeat(self._heartbeat)
            except OutputError as exc:
                if name not in self._beat_failing:  # once per outage, not every period
                    log.warning("heartbeat: %s", exc)
                self._beat_failing.add(name)
            else:
                self._beat_failing.discard(name)

    def _publish(self) -> None:
        now = self._clock()
        with self._lock:
            for name, st in self._status.items():
                act = self.policy.active.get(name)
                st["until_s"] = None if act is None else round(max(0.0, act.until - now), 1)
            self._pending = [
                {
                    "playbook": r.playbook,
                    "event": r.event_id,
                    "camera": r.camera,
                    "expires_in_s": round(max(0.0, r.expires - now), 1),
                }
                for r in self.policy.requests.values()
            ]

    def snapshot(self) -> OutputsStatus:
        with self._lock:
            return {
                "outputs": {
                    name: {**st, "error": st["error"] or self._problems.get(name)}
                    for name, st in self._status.items()
                },
                "pending": list(self._pending),
                "guard_pid": self.guard.pid if self.guard is not None else None,
            }
