"""The CSU client of ``edged``: store-and-forward of the vault's outbox over mutual TLS 1.3.

Runs in its own thread and only ever *reads* the vault's outbox, so recording never waits for
the network: when the CSU is away the outbox grows, and when it comes back the backlog drains
oldest-first within its share of the bandwidth budget while live segments go first
(:mod:`edge.uplink.policy`). An item leaves the outbox only when the CSU acknowledged it and
the SHA-256 it reports equals that of the bytes sent; a crash between sending and marking
just sends it again, which the CSU acknowledges without storing twice.

States (every transition logged with its reason)::

    STOPPED -> WAITING_GATE (802.1X port not authorised) -> CONNECTING -> SYNCING -> STREAMING
    any failure -> BACKOFF (jittered exponential) -> CONNECTING;  stop() -> STOPPED
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import http.client
import json
import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.snapshot import FleetReport, UplinkStatus

from .. import jsonlimits
from ..backoff import Backoff
from ..config import EdgeConfig
from ..errors import ConfigError, EdgeError, IntegrityError, UplinkError
from ..identity.unitkeys import load_public_pem
from ..vault import format as fmt
from ..vault.base import Outbox, OutboxItem, OutboxKind
from ..vault.layout import GAP_RE
from ..vault.receipt import verify_receipt
from . import policy, protocol, signing_cert
from .spool import EventSpool
from .tls import CsuConnection, client_context, endpoint

log = logging.getLogger(__name__)

BACKLOG_HEADER = "X-Edge-Backlog"
#: The unit's version, slot, last update and configuration (``FleetReport``), every request.
FLEET_HEADER = "X-Edge-Fleet"
#: How often an idle client looks at the outbox: bounds the live latency it adds (an indexed
#: SQLite query of the live edge, cheap at this rate).
IDLE_POLL_S = 0.25
#: How often the CSU is asked for signed commands to the cabinet outputs (an agent's
#: confirmation reaches the outputs within about this long).
COMMAND_POLL_S = 1.0
#: Largest command list accepted in one answer (16 commands of at most 16 KiB, with room).
COMMANDS_MAX_BYTES = 512 * 1024
#: An event's snapshot the vault does not hold this long after the event was queued is given
#: up (the vault writes it just after queueing the event; later, it was never written or purged).
SNAPSHOT_GRACE_S = 60.0
#: A snapshot the CSU could not take now (5xx) is offered again after this long.
SNAPSHOT_RETRY_S = 30.0


class Gate(Protocol):
    """May the uplink send now? (:class:`edge.uplink.gate.UplinkGate`: the 802.1X port state,
    or ``OpenGate`` when the configuration disables 802.1X; :func:`edge.uplink.gate.make_gate`
    chooses, never this client)."""

    def is_open(self) -> bool: ...

    def reason(self) -> str: ...


class UplinkState(enum.Enum):
    STOPPED = "stopped"
    WAITING_GATE = "waiting-gate"
    CONNECTING = "connecting"
    SYNCING = "syncing"
    STREAMING = "streaming"
    BACKOFF = "backoff"


def _pending_item(item: OutboxItem) -> policy.PendingItem:
    return policy.PendingItem(
        camera_id=item.camera_id,
        sequence=item.sequence,
        size=item.size,
        start_wall_ns=item.start_wall_ns,
        end_wall_ns=item.end_wall_ns,
    )


class UplinkClient:
    """``start()``/``stop()``/``snapshot()``; everything else runs in the uplink thread.

    Concurrency: ``_lock`` protects the fields :meth:`snapshot` reads (state, reason, counters,
    latencies, backlog), written by the uplink thread and read by the daemon's status thread.
    ``_wake`` lets :meth:`stop` (any thread) cut a wait short.
    """

    def __init__(
        self,
        cfg: EdgeConfig,
        outbox: Outbox,
        gate: Gate,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        batch: int = 256,
        events: EventSpool | None = None,
        commands: Callable[[bytes], bool] | None = None,
        on_config: Callable[[bytes], None] | None = None,
        on_crl: Callable[[bytes], None] | None = None,
        fleet_report: Callable[[], FleetReport] | None = None,
    ) -> None:
        self.cfg = cfg
        #: Judges each signed command pulled from the CSU (the outputs' CommandInbox).
        self.commands = commands
        self._next_command_poll = 0.0
        self._csu_has_commands = True
        self.outbox = outbox
        self.events = events
        #: Given each signed configuration document the CSU offers (it checks and applies).
        self.on_config = on_config
        self.on_crl = on_crl
        self.fleet_report = fleet_report
        self._next_config_mono = 0.0
        self.gate = gate
        self.unit_id = cfg.unit.id
        self._wall_ns = wall_ns
        self._batch = batch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: CsuConnection | None = None
        self._state = UplinkState.STOPPED
        self._reason = "not started"
        self._since_ns = time.time_ns()
        self._counters = {
            "sent": 0,
            "duplicates": 0,
            "events": 0,
            "refused": 0,
            "bytes": 0,
            "failures": 0,
            "commands": 0,
        }
        self._latencies: deque[float] = deque(maxlen=200)
        self._last_ack_mono: float | None = None
        self._set_aside: set[tuple[str, str, int, bytes]] = set()
        #: Mask sets (camera, digest) whose signed record the CSU has, or never will get.
        self._mask_sets_sent: set[tuple[str, bytes]] = set()
        #: Snapshots waiting for a later turn: spool file name -> monotonic time to try again.
        self._snapshots_later: dict[str, float] = {}
        #: Snapshots and segments take turns, so that a backlog of snapshots never holds up video.
        self._snapshot_turn = True
        self._backlog = policy.Backlog(0, 0, 0.0, 0.0)
        self._certificate = signing_cert.Presenter(self.unit_id, cfg.unit.data_dir)
        up = cfg.uplink
        self._receipt_key = None
        if up.csu_receipt_key is not None:
            try:
                self._receipt_key = load_public_pem(
                    up.csu_receipt_key.read_bytes(), origin=str(up.csu_receipt_key)
                )
            except (OSError, EdgeError) as exc:
                raise ConfigError(f"uplink.csu_receipt_key: {exc}") from None
        self._backoff = Backoff(
            up.backoff_initial_s, up.backoff_max_s, jitter=policy.RECONNECT_JITTER
        )
        self._scheduler = policy.Scheduler(
            budget_bytes_per_s=up.bandwidth_kbps * 1000 / 8,
            backfill_share=up.backfill_share,
            live_window_s=up.live_window_s,
            now=time.monotonic(),
        )

    # --- public API -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._set_state(UplinkState.STOPPED, "stop requested")

    def wake(self) -> None:
        """A new segment was sealed: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def snapshot(self) -> UplinkStatus:
        with self._lock:
            lat = sorted(self._latencies)
            return {
                "state": self._state.value,
                "reason": self._reason,
                "since_ns": self._since_ns,
                "csu": self.cfg.uplink.csu_url,
                # A str written by the uplink thread only: reading it needs no lock.
                "signing_certificate": self._certificate.last,
                "counters": dict(self._counters),
                "backlog_s": self._backlog.seconds,
                "last_ack_age_s": (
                    round(time.monotonic() - self._last_ack_mono, 1)
                    if self._last_ack_mono is not None
                    else None
                ),
                "backlog": {
                    "items": self._backlog.items,
                    "bytes": self._backlog.bytes,
                    "seconds": self._backlog.seconds,
                    "oldest_age_s": self._backlog.oldest_age_s,
                },
                "live_latency_s": {
                    "p50": round(lat[len(lat) // 2], 3) if lat else None,
                    "p95": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 3) if lat else None,
                },
            }

    @property
    def state(self) -> UplinkState:
        with self._lock:
            return self._state

    # --- state machine --------------------------------------------------------------------------

    def _set_state(self, state: UplinkState, reason: str) -> None:
        with self._lock:
            if state is self._state and reason == self._reason:
                return
            old = self._state
            self._state, self._reason, self._since_ns = state, reason, time.time_ns()
        log.info("uplink[%s] %s -> %s: %s", self.unit_id, old.value, state.value, reason)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self.gate.is_open():
                self._close()
                self._set_state(UplinkState.WAITING_GATE, self.gate.reason())
                self._refresh_backlog()
                self._sleep(1.0)
                continue
            try:
                self._connect()
                self._stream()
            except (OSError, http.client.HTTPException, ValueError, EdgeError) as exc:
                failure: BaseException = exc
            except Exception as exc:  # the uplink thread must outlive any bug
                log.exception("uplink[%s] unexpected failure", self.unit_id)
                failure = exc
            else:
                continue
            self._close()
            if self._stopping.is_set():
                break
            with self._lock:
                self._counters["failures"] += 1
            delay = self._backoff.next_delay()
            self._set_state(UplinkState.BACKOFF, f"{_describe(failure)}; retry in {delay:.1f}s")
            self._refresh_backlog()
            self._sleep(delay)
        self._close()

    def _connect(self) -> None:
        host, port, name = endpoint(self.cfg)
        self._set_state(UplinkState.CONNECTING, f"{host}:{port} as {name}")
        conn = CsuConnection(
            host, port, name, client_context(self.cfg), self.cfg.uplink.connect_timeout_s
        )
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self.cfg.uplink.request_timeout_s)
        self._conn = conn
        # Before the cursor: a unit the CSU does not know yet is enrolled by its certificate.
        presented = self._certificate.on_connect(self._request)
        self._set_state(UplinkState.SYNCING, f"TLS 1.3 established; {presented}; reading cursor")
        status, body = self._request("GET", protocol.cursor_path(self.unit_id), None, None)
        if status != 200:
            raise UplinkError(f"CSU refused the cursor request: {status} {body[:200]!r}")
        cursor = json.loads(body)
        held = {cam: c.get("last") for cam, c in cursor.get("cameras", {}).items()}
        self._backoff.reset()
        self._csu_has_commands = True
        self._next_command_poll = 0.0
        self._set_state(UplinkState.STREAMING, f"CSU holds up to {held or 'nothing'}")
        self._next_config_mono = 0.0  # asked at every connection

    def _fetch_config(self) -> None:
        """Hand the documents the CSU offers to ``on_config`` (which checks and applies them),
        and its CRL to ``on_crl``: at each connection and every ``uplink.config_poll_s``."""
        if time.monotonic() < self._next_config_mono:
            return
        self._next_config_mono = time.monotonic() + self.cfg.uplink.config_poll_s
        self._fetch_crl()  # first: a document signed by a revoked signer is then refused
        if self.on_config is None:
            return
        status, body = self._request("GET", protocol.config_path(self.unit_id), None, None)
        if status == 404:
            return  # a CSU that offers no configuration
        if status != 200:
            raise UplinkError(f"CSU refused the configuration request: {status} {body[:200]!r}")
        documents = json.loads(body).get("documents", [])
        for document in documents if isinstance(documents, list) else []:
            if isinstance(document, str):
                self.on_config(document.encode())

    def _fetch_crl(self) -> None:
        """Hand the city's CRL the CSU serves to ``on_crl`` (which keeps it only when the
        city's CA signed it and it is newer); asked with the configuration."""
        if self.on_crl is None:
            return
        status, body = self._request("GET", protocol.crl_path(self.unit_id), None, None)
        if status == 404:
            return  # a CSU that checks no CRL
        if status != 200:
            raise UplinkError(f"CSU refused the CRL request: {status} {body[:200]!r}")
        self.on_crl(body)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- sending --------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes | None, content_type: str | None
    ) -> tuple[int, bytes]:
        assert self._conn is not None
        headers = {BACKLOG_HEADER: self._backlog_header()}
        if self.fleet_report is not None:
            headers[FLEET_HEADER] = json.dumps(self.fleet_report(), separators=(",", ":"))
        if content_type is not None:
            headers["Content-Type"] = content_type
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def _backlog_header(self) -> str:
        with self._lock:
            b = self._backlog
        return json.dumps({"items": b.items, "bytes": b.bytes, "seconds": b.seconds})

    def _pending(self) -> list[OutboxItem]:
        """Oldest undelivered items plus, when the vault can list them, the live ones."""
        items = self.outbox.outbox(limit=self._batch)
        since = getattr(self.outbox, "outbox_since", None)
        if since is not None:
            horizon = self._wall_ns() - int(self.cfg.uplink.live_window_s * 1e9)
            seen = {_key(i) for i in items}
            for item in since(horizon, self._batch):
                if _key(item) not in seen:
                    items.append(item)
        return [
            i for i in items if (i.kind, i.camera_id, i.sequence, i.epoch_id) not in self._set_aside
        ]

    def _refresh_backlog(self, items: list[OutboxItem] | None = None) -> None:
        try:
            vault_backlog = self.outbox.backlog()
        except Exception:  # diagnostics only: never stop the uplink for it
            log.debug("uplink[%s] backlog not refreshed", self.unit_id, exc_info=True)
            return
        ends = [i.end_wall_ns for i in items or () if i.kind is OutboxKind.SEGMENT]
        oldest = max(0.0, (self._wall_ns() - min(ends)) / 1e9) if ends else 0.0
        with self._lock:
            self._backlog = policy.Backlog(
                items=vault_backlog.segments,
                bytes=vault_backlog.bytes,
                seconds=round(vault_backlog.seconds, 3),
                oldest_age_s=round(oldest, 3),
            )

    def _stream(self) -> None:
        while not self._stopping.is_set():
            if not self.gate.is_open():
                raise UplinkError(f"802.1X gate closed: {self.gate.reason()}")
            self._certificate.if_changed(self._request)
            if self.commands is not None and time.monotonic() >= self._next_command_poll:
                self._pull_commands()
                self._next_command_poll = time.monotonic() + COMMAND_POLL_S
            self._fetch_config()
            after_snapshot = False
            if self.events is not None:
                queued = self.events.pending(limit=1)
                if queued:
                    # Events are small and time-critical (alerts): before any video.
                    self._send_event(queued[0])
                    continue
                if self._snapshot_turn and self._send_snapshot():
                    self._snapshot_turn = False  # the video's turn next, if any waits
                    continue
                after_snapshot = not self._snapshot_turn
                self._snapshot_turn = True
            items = self._pending()
            self._refresh_backlog(items)
            envelopes = [i for i in items if i.kind is not OutboxKind.SEGMENT]
            if envelopes:
                # Tiny, and a segment cannot be opened at the CSU without its envelope, nor
                # accepted after a loss without the gap record its chain goes through.
                self._send(envelopes[0], live=True)
                continue
            segments = {(i.camera_id, i.sequence): i for i in items}
            decision = self._scheduler.next(
                [_pending_item(i) for i in segments.values()], time.monotonic(), self._wall_ns()
            )
            if decision.item is None:
                if after_snapshot:
                    continue  # no video waits: the next snapshot without a pause
                self._sleep(
                    min(decision.wait_s, IDLE_POLL_S) if decision.wait_s > 0 else IDLE_POLL_S
                )
                continue
            item = segments[(decision.item.camera_id, decision.item.sequence)]
            self._send(item, live=decision.live)
            self._scheduler.sent(decision.item, decision.live, time.monotonic())

    def _pull_commands(self) -> None:
        """Signed commands waiting at the CSU: each judged (the inbox audits it), then
        acknowledged so that it is offered once. The unit listens on no port for them."""
        assert self.commands is not None
        if not self._csu_has_commands:
            return
        status, body = self._request("GET", protocol.commands_path(self.unit_id), None, None)
        if status == 404:
            log.info("uplink[%s] this CSU offers no commands to cabinet outputs", self.unit_id)
            self._csu_has_commands = False
            return
        if status != 200:
            raise UplinkError(f"CSU answered {status} to the commands request")
        try:
            offered = jsonlimits.loads(body, max_bytes=COMMANDS_MAX_BYTES)["commands"]
            items = [(str(c["nonce"]), c["command"]) for c in offered]
        except (EdgeError, ValueError, KeyError, TypeError) as exc:
            raise UplinkError(f"CSU sent a malformed command list: {exc}") from None
        for nonce, command in items:
            self.commands(json.dumps(command).encode())
            with self._lock:
                self._counters["commands"] += 1
            if re.fullmatch(r"[0-9a-f]{32}", nonce):
                self._request(
                    "DELETE", f"{protocol.commands_path(self.unit_id)}/{nonce}", None, None
                )

    def _send_event(self, path: Path) -> None:
        assert self.events is not None
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return
        status, answer = self._request(
            "POST", protocol.events_path(self.unit_id), body, protocol.EVENT_CONTENT_TYPE
        )
        if status in (200, 201):
            # Its snapshot, if it names one, follows (the spool keeps the event until then).
            self.events.done_with_snapshot(path, _event_body(body))
            with self._lock:
                self._counters["events"] += 1
        elif protocol.is_final_refusal(status):
            log.error(
                "uplink[%s] CSU refused event %s: %d %s",
                self.unit_id,
                path.name,
                status,
                answer[:300],
            )
            self.events.reject(path)
            with self._lock:
                self._counters["refused"] += 1
        else:
            raise UplinkError(f"CSU answered {status} to an event")

    def _send_snapshot(self) -> bool:
        """Send the sealed snapshot of the oldest acknowledged event still waiting for it
        (its turn come); False when none is to be sent now. A snapshot the vault does not
        hold (yet) waits up to :data:`SNAPSHOT_GRACE_S`; one the CSU refuses for good is
        given up, one it cannot take now waits :data:`SNAPSHOT_RETRY_S`: neither stops
        the segments."""
        assert self.events is not None
        now = time.monotonic()
        for path in self.events.snapshots_pending(limit=64):
            if self._snapshots_later.get(path.name, 0.0) > now:
                continue
            self._snapshots_later.pop(path.name, None)
            try:
                body = _event_body(path.read_bytes())
                camera, wall_ns, event_id = body["camera"], int(body["wall_ns"]), body["id"]
            except FileNotFoundError:
                continue
            except (KeyError, TypeError, ValueError):
                log.error("uplink[%s] %s: no snapshot to send for it", self.unit_id, path.name)
                self.events.snapshot_done(path, refused=True)
                continue
            sealed = self.outbox.event_snapshot(str(camera), wall_ns, str(event_id))
            if sealed is None:
                age_s = (time.time_ns() - self.events.queued_ns(path)) / 1e9
                if age_s < SNAPSHOT_GRACE_S:
                    self._snapshots_later[path.name] = now + 1.0
                    continue
                log.warning(
                    "uplink[%s] the vault holds no snapshot of event %s: the CSU will not get it",
                    self.unit_id,
                    event_id,
                )
                self.events.snapshot_done(path)
                continue
            url = protocol.snapshot_path(self.unit_id, str(event_id))
            status, answer = self._request("PUT", url, sealed, protocol.SNAPSHOT_CONTENT_TYPE)
            if status in (200, 201):
                self.events.snapshot_done(path)
                with self._lock:
                    self._counters["bytes"] += len(sealed)
            elif protocol.is_final_refusal(status):
                log.error(
                    "uplink[%s] CSU refused the snapshot of event %s: %d %s",
                    self.unit_id,
                    event_id,
                    status,
                    answer[:300],
                )
                self.events.snapshot_done(path, refused=True)
                with self._lock:
                    self._counters["refused"] += 1
            else:
                log.warning(
                    "uplink[%s] CSU answered %d to the snapshot of event %s; offered again "
                    "in %.0f s",
                    self.unit_id,
                    status,
                    event_id,
                    SNAPSHOT_RETRY_S,
                )
                self._snapshots_later[path.name] = now + SNAPSHOT_RETRY_S
            return True
        return False

    def _send(self, item: OutboxItem, *, live: bool) -> None:
        try:
            data = item.read()
        except EdgeError as exc:
            log.warning("uplink[%s] skipping %s: %s", self.unit_id, item.kind, exc)
            self._set_aside.add(_key(item))
            return
        if item.kind is OutboxKind.ENVELOPE:
            path = protocol.envelope_path(self.unit_id, item.camera_id, item.epoch_id.hex())
            content_type = protocol.ENVELOPE_CONTENT_TYPE
        elif item.kind is OutboxKind.GAP:
            m = GAP_RE.match(item.path.name)
            if m is None:
                raise UplinkError(f"{item.path}: not a gap record name")
            path = protocol.gap_path(self.unit_id, item.camera_id, item.sequence, int(m.group(2)))
            content_type = protocol.GAP_CONTENT_TYPE
        else:
            self._send_mask_sets(item.camera_id, data)
            path = protocol.segment_path(self.unit_id, item.camera_id, item.sequence)
            content_type = protocol.SEGMENT_CONTENT_TYPE
        status, body = self._request("PUT", path, data, content_type)
        if status in (200, 201):
            if item.kind is OutboxKind.SEGMENT:
                reported = _json_field(body, "sha256")
                if reported != hashlib.sha256(data).hexdigest():
                    raise UplinkError(f"CSU acknowledged {path} with another digest: {reported}")
                self._keep_receipt(item, data, body)
                self.outbox.mark_delivered(item.camera_id, item.sequence)
            elif item.kind is OutboxKind.GAP:
                self.outbox.mark_gap_delivered(item.camera_id, item.sequence)
            else:
                self.outbox.mark_envelope_delivered(item.camera_id, item.epoch_id)
            with self._lock:
                self._last_ack_mono = time.monotonic()
                self._counters["sent" if status == 201 else "duplicates"] += 1
                self._counters["bytes"] += len(data)
                if live and item.kind is OutboxKind.SEGMENT:
                    self._latencies.append((self._wall_ns() - item.end_wall_ns) / 1e9)
            return
        if protocol.is_final_refusal(status):
            # Retrying cannot help; keep it in the vault (evidence) but stop blocking the queue.
            log.error(
                "uplink[%s] CSU refused %s with %d: %s", self.unit_id, path, status, body[:300]
            )
            self._set_aside.add(_key(item))
            with self._lock:
                self._counters["refused"] += 1
            return
        raise UplinkError(f"CSU answered {status} to {path}")

    def _send_mask_sets(self, camera_id: str, data: bytes) -> None:
        """Before a segment, the signed record of each mask set it commits to that this
        client has not yet handed over, so that the CSU's bundles can show the polygons in
        force. A set without a record, or one the CSU refuses, is said and not asked again
        (the segment itself still goes: its video is the evidence)."""
        try:
            header, _ = fmt.parse_segment_header(data)
        except IntegrityError:
            return  # the CSU refuses the segment and says why
        for entry in header.masks:
            digest = entry.committed.mask_set
            if (camera_id, digest) in self._mask_sets_sent:
                continue
            raw = self.outbox.mask_set_record(camera_id, digest)
            if raw is None:
                log.warning(
                    "uplink[%s] no signed record of mask set %s of %s to send: the CSU's "
                    "bundles will say its polygons are unknown",
                    self.unit_id,
                    digest.hex()[:16],
                    camera_id,
                )
                self._mask_sets_sent.add((camera_id, digest))
                continue
            path = protocol.mask_set_path(self.unit_id, camera_id, digest.hex())
            status, body = self._request("PUT", path, raw, protocol.MASK_SET_CONTENT_TYPE)
            if status not in (200, 201) and not protocol.is_final_refusal(status):
                raise UplinkError(f"CSU answered {status} to {path}")
            if status not in (200, 201):
                log.error(
                    "uplink[%s] CSU refused mask set %s: %d %s",
                    self.unit_id,
                    path,
                    status,
                    body[:300],
                )
            self._mask_sets_sent.add((camera_id, digest))

    def _keep_receipt(self, item: OutboxItem, data: bytes, body: bytes) -> None:
        """Check the CSU's receipt of a delivered segment and keep it in the vault.

        A receipt that does not check (forged, for another unit, of other bytes) is refused
        and said loudly; delivery itself stands, since the CSU reported the right digest."""
        if self._receipt_key is None:
            return
        encoded = _json_field(body, "receipt")
        where = f"{item.camera_id}#{item.sequence}"
        if not isinstance(encoded, str):
            log.warning("uplink[%s] CSU sent no receipt for %s", self.unit_id, where)
            return
        try:
            raw = base64.b64decode(encoded, validate=True)
            verify_receipt(
                raw,
                self._receipt_key,
                device_id=self.unit_id,
                camera_id=item.camera_id,
                sequence=item.sequence,
                chain_hash=hashlib.sha256(data).digest(),
            )
        except (binascii.Error, IntegrityError) as exc:
            log.error("uplink[%s] CSU receipt for %s refused: %s", self.unit_id, where, exc)
            with self._lock:
                self._counters["receipts_refused"] = self._counters.get("receipts_refused", 0) + 1
            return
        try:
            self.outbox.store_receipt(item, raw)
        except EdgeError as exc:
            log.error("uplink[%s] receipt for %s not kept: %s", self.unit_id, where, exc)
            return
        with self._lock:
            self._counters["receipts"] = self._counters.get("receipts", 0) + 1


def _key(item: OutboxItem) -> tuple[str, str, int, bytes]:
    return (item.kind, item.camera_id, item.sequence, item.epoch_id)


def _json_field(body: bytes, name: str) -> object:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get(name) if isinstance(doc, dict) else None


def _event_body(wire: bytes) -> dict[str, Any]:
    """The body of a wire event this unit signed (already checked when it was queued)."""
    try:
        body = json.loads(wire)["event"]
    except (ValueError, KeyError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"CSU certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
