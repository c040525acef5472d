"""A fleet of simulated units that behave, on the wire, like ``edged``'s uplink: what the
cluster lab's tests and ``edge-csu bench --cluster`` drive through HAProxy.

Each unit (:class:`.bench_cmd.SimUnit`: its own certificate, signing key and chain of real
signed sealed segments) closes a segment every ``segment_s`` whatever the network does and
keeps it in its outbox until the CSU acknowledges it (201 stored, 200 duplicate). It sends the
newest segment first (live), then the oldest waiting (backfill), one request at a time on one
mutual-TLS connection. A connection that breaks (its receiver killed) is opened again after a
back-off, and the segment that was in flight is sent again: the CSU recognises it if it had
stored it. A 503 (the cluster's database or object store out of reach) keeps the segment and
backs off. A final refusal (4xx) is counted and the segment set aside, as the unit does.

Timed actions (kill a receiver, stop the database…) run in a thread at their moment, so the
fleet keeps going meanwhile. The failover time of a unit is from a kill to the first segment
the fleet had acknowledged after it, for the units whose connection the kill broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..uplink.protocol import segment_path
from .bench_cmd import CSU_NAME, SimUnit, _put

#: Back-off after a broken connection or a 503: short, like a unit's first retries.
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
#: One request (a segment up, the answer back) may take this long before it counts as broken.
REQUEST_TIMEOUT_S = 30.0


@dataclass
class UnitState:
    unit: SimUnit
    outbox: dict[int, bytes] = field(default_factory=dict)
    produced: int = 0
    acknowledged: set[int] = field(default_factory=set)
    refused: dict[int, int] = field(default_factory=dict)
    broken_at: list[float] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    closed_at: dict[int, float] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FleetReport:
    units: int
    seconds: float
    produced: int
    acknowledged: int
    waiting: int
    refused: int
    statuses: dict[str, int]
    reconnects: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    failover_s: list[float]
    actions: list[tuple[str, float]]
    per_unit: dict[str, UnitState]

    def figures(self) -> dict[str, Any]:
        fo = sorted(self.failover_s)
        return {
            "units": self.units,
            "seconds": self.seconds,
            "segments_produced": self.produced,
            "segments_acknowledged": self.acknowledged,
            "segments_waiting": self.waiting,
            "segments_refused": self.refused,
            "statuses": self.statuses,
            "reconnects": self.reconnects,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "failover_units": len(fo),
            "failover_p50_s": round(fo[len(fo) // 2], 3) if fo else None,
            "failover_max_s": round(fo[-1], 3) if fo else None,
        }


class SimFleet:
    def __init__(
        self,
        units: list[SimUnit],
        port: int,
        *,
        segment_s: float,
        flat_out: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.states = [UnitState(u) for u in units]
        self.port = port
        self.host = host
        self.segment_s = segment_s
        self.flat_out = flat_out
        """Instead of pacing: each unit sends its next segment as soon as the last is
        acknowledged (capacity, not latency)."""
        self.statuses: Counter[str] = Counter()
        self.reconnects = 0
        self.producing = True
        self.kills: list[float] = []
        self.actions: list[tuple[str, float]] = []
        self._start = 0.0

    def _stopped(self) -> bool:
        return not self.producing

    # --- one unit -------------------------------------------------------------------------------

    async def _produce(self, s: UnitState, start: float, offset: float) -> None:
        next_at = start + offset
        while self.producing:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._stopped():  # the flag changed while this unit slept
                return
            seq, raw = s.unit.next_segment(self.segment_s)
            s.outbox[seq] = raw
            s.closed_at[seq] = time.monotonic()
            s.produced += 1
            s.wake.set()
            next_at += self.segment_s

    def _next(self, s: UnitState) -> int | None:
        if not s.outbox:
            return None
        newest = max(s.outbox)
        if newest not in s.refused and time.monotonic() - s.closed_at[newest] < self.segment_s:
            return newest  # live first
        return min(s.outbox)  # then the oldest waiting

    async def _send_loop(self, s: UnitState, deadline: float) -> None:
        attempt = 0
        while time.monotonic() < deadline and (self.producing or s.outbox):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, ssl=s.unit.ctx, server_hostname=CSU_NAME
                    ),
                    REQUEST_TIMEOUT_S,
                )
            except (OSError, ssl.SSLError, TimeoutError):
                self.statuses["connect-failed"] += 1
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1
                continue
            try:
                attempt = await self._stream(s, reader, writer, deadline)
            except (
                OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError, ValueError,
                IndexError,  # the connection closed before a status line
            ):  # fmt: skip
                self.statuses["broken"] += 1
                s.broken_at.append(time.monotonic())
                self.reconnects += 1
                await asyncio.sleep(BACKOFF_S[0])
            finally:
                writer.close()

    async def _stream(
        self,
        s: UnitState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
    ) -> int:
        backoff = 0
        while time.monotonic() < deadline and (self.producing or s.outbox):
            seq = self._next(s)
            if seq is None:
                s.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.wake.wait(), 1.0)
                continue
            path = segment_path(s.unit.unit_id, "cam1", seq)
            status = await asyncio.wait_for(
                _put(reader, writer, path, s.outbox[seq]), REQUEST_TIMEOUT_S
            )
            self.statuses[str(status)] += 1
            if status in (200, 201):
                now = time.monotonic()
                s.latencies.append(now - s.closed_at[seq])
                s.acknowledged.add(seq)
                s.acked_at.append(now)
                del s.outbox[seq]
                backoff = 0
                if self.flat_out and self.producing and not s.outbox:
                    seq2, raw = s.unit.next_segment(self.segment_s)
                    s.outbox[seq2] = raw
                    s.closed_at[seq2] = time.monotonic()
                    s.produced += 1
            elif status >= 500:
                await asyncio.sleep(BACKOFF_S[min(backoff, len(BACKOFF_S) - 1)])
                backoff += 1
            else:  # a final refusal: set aside (the unit keeps it in its vault)
                s.refused[seq] = status
                del s.outbox[seq]
        return 0

    # --- the fleet ------------------------------------------------------------------------------

    async def _act(self, at: float, name: str, action: Callable[[], object]) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        started = time.monotonic()
        if name.startswith("kill"):
            self.kills.append(started)
        await asyncio.get_running_loop().run_in_executor(None, action)
        self.actions.append((name, round(started - self._start, 3)))

    async def run(
        self,
        seconds: float,
        *,
        actions: list[tuple[float, str, Callable[[], object]]] | None = None,
        drain_s: float = 60.0,
    ) -> FleetReport:
        """Produce for ``seconds``, running ``actions`` (at seconds from the start), then let
        the outboxes drain for at most ``drain_s``."""
        self._start = start = time.monotonic()
        deadline = start + seconds + drain_s
        n = len(self.states)
        producers = (
            []
            if self.flat_out
            else [
                asyncio.create_task(self._produce(s, start, self.segment_s * i / n))
                for i, s in enumerate(self.states)
            ]
        )
        if self.flat_out:
            for s in self.states:
                seq, raw = s.unit.next_segment(self.segment_s)
                s.outbox[seq], s.closed_at[seq] = raw, time.monotonic()
                s.produced += 1
        senders = [asyncio.create_task(self._send_loop(s, deadline)) for s in self.states]
        acting = [
            asyncio.create_task(self._act(start + t, name, f)) for t, name, f in actions or []
        ]
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        self.producing = False
        for s in self.states:
            s.wake.set()
        await asyncio.gather(*producers, *acting)
        await asyncio.gather(*senders)
        return self._report(time.monotonic() - start if self.flat_out else seconds)

    def _report(self, seconds: float) -> FleetReport:
        latencies = sorted(x for s in self.states for x in s.latencies)
        failover = []
        for kill in self.kills:
            for s in self.states:
                if any(kill <= b < kill + REQUEST_TIMEOUT_S for b in s.broken_at):
                    after = [a for a in s.acked_at if a > kill]
                    if after:
                        failover.append(min(after) - kill)
        return FleetReport(
            units=len(self.states),
            seconds=round(seconds, 3),
            produced=sum(s.produced for s in self.states),
            acknowledged=sum(len(s.acknowledged) for s in self.states),
            waiting=sum(len(s.outbox) for s in self.states),
            refused=sum(len(s.refused) for s in self.states),
            statuses=dict(self.statuses),
            reconnects=self.reconnects,
            latency_p50_s=round(latencies[len(latencies) // 2], 4) if latencies else None,
            latency_p95_s=round(latencies[int(len(latencies) * 0.95)], 4) if latencies else None,
            failover_s=failover,
            actions=self.actions,
            per_unit={s.unit.unit_id: s for s in self.states},
        )
