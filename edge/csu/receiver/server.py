"""The CSU receiver: an aiohttp application serving units over mutual TLS 1.3.

Requests are authenticated three times (see :mod:`edge.csu.receiver.registry`): the handshake, the
certificate's unit against the registry and the current CRL, the segment's signature. The
event loop only parses HTTP; verification, hashing and the fsync'd writes run in a thread pool
so one slow disk does not stall other units' connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import mqtt_relay
from edge.csu.receiver.access_log import AuditLog
from edge.csu.receiver.archive import Refusal, SegmentStore, Verdict
from edge.csu.receiver.base import SegmentReader
from edge.csu.receiver.cluster import ClusterStore
from edge.csu.receiver.commands import CommandQueue
from edge.csu.receiver.mqtt_relay import EventPublisher
from edge.csu.receiver.pgaudit import PgAuditLog
from edge.csu.receiver.settings import ServeConfig
from edge.uplink import event_checks as wire_events

from ...errors import ConfigError, EdgeError, IntegrityError, StorageUnavailableError
from ...uplink.protocol import (
    API_PREFIX,
    CERTIFICATE_CONTENT_TYPE,
    DIGEST_HEADER,
    EVENT_CONTENT_TYPE,
    GAP_CONTENT_TYPE,
    MASK_SET_CONTENT_TYPE,
    MAX_EVENT_BYTES,
    MAX_SNAPSHOT_BYTES,
    SEGMENT_CONTENT_TYPE,
    SNAPSHOT_CONTENT_TYPE,
)
from ...vault import recipient_keys as vault_keys
from . import receipts
from .limits import AdmissionGate, peer_of, read_body, start_gated_server
from .registry import RevocationList, UnitRegistry, server_context, unit_id_of
from .trust import MAX_CERTIFICATE_BYTES

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ID = r"[a-z0-9][a-z0-9-]{0,62}"
BACKLOG_HEADER = "X-Edge-Backlog"
FLEET_HEADER = "X-Edge-Fleet"
#: How often a unit's status file (last contact, backlog) is rewritten while it talks to us:
#: often enough for ``edge-csu units``, rare enough for thousands of units (no fsync).
STATUS_FLUSH_S = 2.0
UNIT_KEY = web.AppKey("receiver", object)
#: The unit a request comes from (its certificate, checked by the middleware) and the signing
#: key the registry trusts for it (None on the one route that presents a certificate).
UNIT_ID: web.RequestKey[str] = web.RequestKey("unit", str)
UNIT_SIGNING_KEY: web.RequestKey[ed25519.Ed25519PublicKey | None] = web.RequestKey("key")
#: The one route a unit may use before its signing key is trusted: presenting its certificate.
SIGNING_CERTIFICATE_ROUTE = "signing-certificate"
#: After a refused body, what the client still sends is read and discarded this long (so it
#: sees the answer rather than a reset), then the connection is closed.
LINGER_S = 2.0
#: What a 503 (cluster storage out of reach) asks the unit to wait before retrying.
RETRY_AFTER_S = 2


def _trusted_key(request: web.Request) -> ed25519.Ed25519PublicKey:
    key = request[UNIT_SIGNING_KEY]
    # None only on the signing-certificate route, which runs before the key is trusted.
    assert key is not None, request.path
    return key


def refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _fleet_report(header: str | None) -> dict[str, Any] | None:
    """A unit's ``X-Edge-Fleet`` header (``edge.snapshot.FleetReport``), kept only when every
    field has its type and a bounded size: the CSU shows it, so nothing else is taken."""
    if not header or len(header) > 4096:
        return None
    try:
        value = json.loads(header)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None

    def text(v: Any, limit: int) -> str | None:
        return v if isinstance(v, str) and len(v) <= limit else None

    docs = value.get("config_documents")
    update = value.get("last_update")
    groups = value.get("groups")
    report = {
        "version": text(value.get("version"), 64),
        "slot": value.get("slot") if value.get("slot") in ("A", "B") else None,
        "config_digest": text(value.get("config_digest"), 64),
        "config_refused": str(value["config_refused"])[:300]
        if isinstance(value.get("config_refused"), str)
        else None,
        "config_documents": {
            str(k)[:80]: v
            for k, v in (docs.items() if isinstance(docs, dict) else [])
            if isinstance(v, int) and not isinstance(v, bool)
        },
        "last_update": {
            str(k)[:40]: v if not isinstance(v, str) else v[:300]
            for k, v in list(update.items())[:12]
            if isinstance(v, str | int | float | bool) or v is None
        }
        if isinstance(update, dict)
        else None,
        "groups": [
            g
            for g in (groups if isinstance(groups, list) else [])[:16]
            if isinstance(g, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", g)
        ],
    }
    return report if report["version"] is not None else None


class Receiver:
    """Everything one ``edge-csu serve`` process holds. Runs on one asyncio loop.

    ``contacts`` is only touched from the loop thread; the store, registry, CRL and audit log
    are thread-safe and used from the pool.
    """

    def __init__(
        self, cfg: ServeConfig, *, workers: int = 16, config_path: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        """The configuration file, when known (the console's command lines name it)."""
        # What the units' routes store into: the embedded directory or the cluster's stores.
        self.intake: SegmentStore | ClusterStore
        if cfg.storage == "cluster":
            assert cfg.cluster is not None  # the configuration's schema requires it
            self.intake = ClusterStore(cfg.cluster)
        else:
            self.intake = SegmentStore(cfg.storage_dir)
        self.crl = RevocationList(cfg.tls.crl_file, cfg.tls.client_ca_file)
        self.registry = UnitRegistry(cfg.registry_dir, ca_file=cfg.tls.client_ca_file, crl=self.crl)
        # The receiver signs every record or does not start (ConfigError names the key file).
        # In cluster mode the chain is the cluster's, shared by every receiver (:mod:`.pgaudit`),
        # each record naming the receiver that served it and signed with that one's key.
        audit_key = receipts.load_or_create(cfg.audit_key_file, "audit key")
        self.audit: AuditLog
        if isinstance(self.intake, ClusterStore):
            self.audit = PgAuditLog(self.intake.index, self.intake.receiver_id, audit_key)
        else:
            self.audit = AuditLog(cfg.audit_log, audit_key)
        self.commands = CommandQueue(cfg.commands_dir)
        # An event is marked published once the broker has acknowledged it (at least once).
        self.publisher = (
            EventPublisher(cfg.mqtt, on_acked=self._mark_published) if cfg.mqtt.enabled else None
        )
        #: The authority's HPKE key (the one viewing opens segments with): the snapshot route
        #: opens each sealed snapshot to check it is the picture its event names.
        self.authority: vault_keys.RecipientPrivate | None = (
            vault_keys.load_private(cfg.authority_key_file)
            if cfg.authority_key_file is not None and cfg.storage != "cluster"
            else None
        )
        # Workers mostly wait on fsync (the GIL is released): more of them overlap the flushes.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csu-store")
        self.contacts: dict[str, dict[str, Any]] = {}
        self._status_flushed: dict[str, float] = {}
        self._unit_of_cert: dict[bytes, str] = {}
        self.counters = {
            "stored": 0,
            "duplicates": 0,
            "refused": 0,
            "events": 0,
            "unavailable": 0,
        }
        self.receipter = (
            None
            if cfg.receipt_key_file is None
            else receipts.Receipter(receipts.load_or_create(cfg.receipt_key_file))
        )

    @property
    def store(self) -> SegmentReader:
        """What the operators' side (viewing, console, export) reads: the embedded directory
        or, in cluster mode, the shared database and object store (any receiver serves any
        camera)."""
        return self.intake

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _mark_published(self, unit: str, event_id: str) -> None:
        await self.run_blocking(self.intake.mark_published, unit, event_id)

    # --- authentication -------------------------------------------------------------------------

    def _peer_unit(self, request: web.Request) -> str:
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        der: bytes | None = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise Refusal(403, "no client certificate")
        unit = self._unit_of_cert.get(der)
        if unit is None:
            try:
                unit = unit_id_of(der)
            except (EdgeError, ValueError) as exc:
                raise Refusal(403, str(exc)) from None
            if len(self._unit_of_cert) > 10_000:
                self._unit_of_cert.clear()
            self._unit_of_cert[der] = unit
        if self.crl.is_revoked(der):
            raise Refusal(403, f"certificate of {unit} is revoked")
        return unit

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            unit = self._peer_unit(request)
            url_unit = request.match_info.get("unit")
            if url_unit is not None and url_unit != unit:
                raise Refusal(403, f"certificate is {unit}'s, URL names {url_unit}")
            if request.match_info.route.name == SIGNING_CERTIFICATE_ROUTE:
                # The TLS certificate (same CA, same CN) vouches for the unit here; the
                # certificate it presents is judged by the registry before it is trusted.
                key = None
            else:
                # Inline like the CRL check: a few stat() calls once the verdict is cached.
                trusted = self.registry.trust(unit)
                key = trusted.key
                if key is None:
                    raise Refusal(403, trusted.refusal)
        except Refusal as exc:
            self.counters["refused"] += 1
            log.warning("refused %s %s: %s", request.method, request.path, exc.reason)
            return refuse(exc.status, exc.reason)
        request[UNIT_ID] = unit
        request[UNIT_SIGNING_KEY] = key
        self._touch(unit, request)
        try:
            return await handler(request)
        except StorageUnavailableError as exc:
            # Cluster mode: the database or the object store is out of reach. Nothing was
            # half-stored (the database decides last); the unit keeps the item and retries.
            self.counters["unavailable"] += 1
            log.warning("503 for %s %s: %s", request.method, request.path, exc)
            response = refuse(503, "storage unavailable, retry later")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response

    def _touch(self, unit: str, request: web.Request) -> None:
        contact = self.contacts.setdefault(unit, {})
        contact["last_contact_ns"] = time.time_ns()
        peer = peer_of(request.transport)
        if peer:
            contact["peer"] = peer[0]
        backlog = request.headers.get(BACKLOG_HEADER)
        if backlog:
            try:
                value = json.loads(backlog)
                if isinstance(value, dict):
                    contact["backlog"] = {
                        k: v for k, v in value.items() if isinstance(v, int | float)
                    }
            except ValueError:
                pass
        fleet = _fleet_report(request.headers.get(FLEET_HEADER))
        if fleet is not None:
            contact["fleet"] = fleet
        now = time.monotonic()
        last = self._status_flushed.get(unit)
        if last is None or now - last >= STATUS_FLUSH_S:
            self._status_flushed[unit] = now
            self.pool.submit(self._write_status, unit, dict(contact))

    def _write_status(self, unit: str, contact: dict[str, Any]) -> None:
        try:
            self.intake.write_status(unit, contact)
        except StorageUnavailableError as exc:  # diagnostics: the next contact writes it
            log.debug("status of %s not written: %s", unit, exc)

    # --- request bodies ---------------------------------------------------------------------------

    async def read_body(self, request: web.Request, limit: int) -> bytes:
        """The route's body within its own limit, chunked or not (see :mod:`.limits`)."""
        return await read_body(request, limit, self.cfg.limits.body_timeout_s)

    def refuse_body(self, request: web.Request, exc: Refusal) -> web.Response:
        self.counters["refused"] += 1
        log.warning("refused %s %s: %s", request.method, request.path, exc.reason)
        response = refuse(exc.status, exc.reason)
        # The rest of the body is not wanted: the connection ends after this answer (what the
        # client still sends meanwhile is discarded for LINGER_S at most, never stored).
        response.force_close()
        return response

    # --- handlers -------------------------------------------------------------------------------

    async def put_segment(self, request: web.Request) -> web.Response:
        unit, camera = request[UNIT_ID], request.match_info["camera"]
        sequence = int(request.match_info["sequence"])
        if request.content_type != SEGMENT_CONTENT_TYPE:
            return refuse(415, f"content type must be {SEGMENT_CONTENT_TYPE}")
        if request.content_length is None:
            return refuse(411, "Content-Length required")
        try:
            body = await self.read_body(request, self.cfg.max_segment_bytes)
        except Refusal as exc:
            return self.refuse_body(request, exc)
        try:
            verdict, meta = await self.run_blocking(
                self.intake.accept_segment, unit, camera, sequence, body, _trusted_key(request)
            )
        except Refusal as exc:
            self.counters["refused"] += 1
            log.warning("refused %s/%s#%d: %s", unit, camera, sequence, exc.reason)
            return refuse(exc.status, exc.reason)
        self.counters["stored" if verdict.value == 201 else "duplicates"] += 1
        answer = {"status": verdict.name.lower(), "sha256": meta.hash}
        if self.receipter is not None:
            # Of what this CSU holds under that sequence (a duplicate: the first bytes stored),
            # kept before it is answered; a duplicate is answered with the first one kept.
            answer["receipt"] = await self.run_blocking(
                self._keep_receipt, self.receipter, unit, camera, sequence, meta.hash
            )
        return web.json_response(
            answer,
            status=verdict.value,
            headers={DIGEST_HEADER: meta.hash},
        )

    def _keep_receipt(
        self, receipter: receipts.Receipter, unit: str, camera: str, sequence: int, chain: str
    ) -> str:
        """Sign the receipt and keep it (embedded mode); base64 of the one kept."""
        signed = receipter.sign(unit, camera, sequence, chain)
        return base64.b64encode(self.intake.keep_receipt(unit, camera, sequence, signed)).decode()

    async def put_envelope(self, request: web.Request) -> web.Response:
        unit, camera = request[UNIT_ID], request.match_info["camera"]
        try:
            body = await self.read_body(request, MAX_EVENT_BYTES)
        except Refusal as exc:
            return self.refuse_body(request, exc)
        try:
            verdict = await self.run_blocking(
                self.intake.accept_envelope,
                unit,
                camera,
                request.match_info["epoch"],
                body,
                _trusted_key(request),
            )
        except Refusal as exc:
            self.counters["refused"] += 1
            return refuse(exc.status, exc.reason)
        return web.json_response({"status": verdict.name.lower()}, status=verdict.value)

    async def put_gap(self, request: web.Request) -> web.Response:
        unit, camera = request[UNIT_ID], request.match_info["camera"]
        first, last = int(request.match_info["first"]), int(request.match_info["last"])
        if request.content_type != GAP_CONTENT_TYPE:
            return refuse(415, f"content type must be {GAP_CONTENT_TYPE}")
        if (request.content_length or 0) > MAX_EVENT_BYTES:
            return refuse(413, "gap record too large")
        body = await request.read()
        try:
            verdict, held = await self.run_blocking(
                self.intake.accept_gap, unit, camera, first, last, body, _trusted_key(request)
            )
        except Refusal as exc:
            self.counters["refused"] += 1
            return refuse(exc.status, exc.reason)
        if verdict.value == 201:
            log.error(
                "%s/%s: the unit reports sequences %d..%d lost%s",
                unit,
                camera,
                first,
                last,
                f"; this CSU holds {len(held)} of them: CONFLICT" if held else "",
            )
            what = {"camera": camera, "first": first, "last": last, "held_here": held[:100]}
            action = "unit-gap-conflict" if held else "unit-gap"
            await self.run_blocking(lambda: self.audit.record(unit, action, **what))
        return web.json_response(
            {"status": verdict.name.lower(), "held_here": held[:100]}, status=verdict.value
        )

    async def put_mask_set(self, request: web.Request) -> web.Response:
        if not isinstance(self.intake, SegmentStore):
            return refuse(404, "this CSU keeps mask sets in embedded storage only")
        return await self._keep_once(
            request, MASK_SET_CONTENT_TYPE, MAX_EVENT_BYTES, self.intake.accept_mask_set,
            request.match_info["camera"], request.match_info["digest"],
        )  # fmt: skip

    async def put_snapshot(self, request: web.Request) -> web.Response:
        if not isinstance(self.intake, SegmentStore):
            return refuse(404, "this CSU keeps snapshots in embedded storage only")
        if self.authority is None:
            return refuse(404, "this CSU keeps no snapshots: no authority key to check them")
        return await self._keep_once(
            request, SNAPSHOT_CONTENT_TYPE, MAX_SNAPSHOT_BYTES, self.intake.accept_snapshot,
            request.match_info["event"], extra=(self.authority,),
        )  # fmt: skip

    async def _keep_once(
        self,
        request: web.Request,
        content_type: str,
        max_bytes: int,
        accept: Callable[..., Verdict],
        *names: str,
        extra: tuple[Any, ...] = (),
    ) -> web.Response:
        """A signed record the unit sends beside its segments (a mask set, an alert's
        snapshot), checked and kept once by ``accept(unit, *names, body, key, *extra)``."""
        unit = request[UNIT_ID]
        if request.content_type != content_type:
            return refuse(415, f"content type must be {content_type}")
        try:
            body = await self.read_body(request, max_bytes)
        except Refusal as exc:
            return self.refuse_body(request, exc)
        try:
            verdict = await self.run_blocking(
                accept, unit, *names, body, _trusted_key(request), *extra
            )
        except Refusal as exc:
            self.counters["refused"] += 1
            log.warning("refused %s of %s (%s): %s", content_type, unit, "/".join(names),
                        exc.reason)  # fmt: skip
            return refuse(exc.status, exc.reason)
        return web.json_response({"status": verdict.name.lower()}, status=verdict.value)

    async def post_event(self, request: web.Request) -> web.Response:
        unit = request[UNIT_ID]
        if request.content_type != EVENT_CONTENT_TYPE:
            return refuse(415, f"content type must be {EVENT_CONTENT_TYPE}")
        try:
            body = await self.read_body(request, MAX_EVENT_BYTES)
        except Refusal as exc:
            return self.refuse_body(request, exc)
        try:
            event = wire_events.parse_event(body)
        except IntegrityError as exc:
            return refuse(400, str(exc))
        if event["unit"] != unit:
            return refuse(400, f"event names unit {event['unit']!r}")
        event_id = str(event["id"])
        try:
            wire_events.verify_event(body, _trusted_key(request))
            verdict = await self.run_blocking(
                partial(
                    self.intake.store_event,
                    unit,
                    event_id,
                    body,
                    to_publish=self.publisher is not None,
                )
            )
        except IntegrityError as exc:
            return refuse(422, str(exc))
        except Refusal as exc:
            return refuse(exc.status, exc.reason)
        if verdict.value == 201:
            self.counters["events"] += 1
        # Marked published (by the publisher's on_acked) once the broker acknowledged it.
        if (
            self.publisher is not None
            and (
                verdict.value == 201
                or await self.run_blocking(self.intake.is_unpublished, unit, event_id)
            )
            and not await self.publisher.publish(unit, str(event["camera"]), event_id, body)
        ):
            # Stored, not acknowledged in time: the unit keeps it and sends it again (the
            # retry waits for the same message while paho still holds it); if the unit goes
            # silent, the periodic republication publishes it.
            return refuse(503, f"event {event_id} stored but not yet published; send again")
        return web.json_response({"status": verdict.name.lower()}, status=verdict.value)

    async def put_signing_certificate(self, request: web.Request) -> web.Response:
        unit = request[UNIT_ID]
        if request.content_type != CERTIFICATE_CONTENT_TYPE:
            return refuse(415, f"content type must be {CERTIFICATE_CONTENT_TYPE}")
        try:
            body = await self.read_body(request, MAX_CERTIFICATE_BYTES)
        except Refusal as exc:
            return self.refuse_body(request, exc)
        verdict = await self.run_blocking(self.registry.install_certificate, unit, body)
        if verdict.status >= 400:
            self.counters["refused"] += 1
            return refuse(verdict.status, verdict.reason)
        trusted = await self.run_blocking(self.registry.trust, unit)
        return web.json_response(
            {"status": verdict.reason, "signing_key": trusted.to_json()}, status=verdict.status
        )

    async def get_cursor(self, request: web.Request) -> web.Response:
        unit = request[UNIT_ID]

        return web.json_response(await self.run_blocking(self.intake.cursor, unit))

    async def get_commands(self, request: web.Request) -> web.Response:
        """Signed commands waiting for this unit (the unit judges them, not the receiver)."""
        pending = await self.run_blocking(self.commands.pending, request[UNIT_ID])
        return web.json_response(
            {"commands": [{"nonce": n, "command": json.loads(data)} for n, data in pending]}
        )

    async def delete_command(self, request: web.Request) -> web.Response:
        done = await self.run_blocking(
            self.commands.done, request[UNIT_ID], request.match_info["nonce"]
        )
        return web.json_response({"status": "done" if done else "unknown"})

    async def get_config(self, request: web.Request) -> web.Response:
        """The signed configuration documents for this unit: its own and those of the groups
        it reports (``X-Edge-Fleet``). The unit checks each one; the CSU only sorts them by
        the scope they claim, so that no unit reads another district's masks."""
        unit = request[UNIT_ID]
        directory = self.cfg.config_dir
        fleet = _fleet_report(request.headers.get(FLEET_HEADER)) or {}
        groups = set(fleet.get("groups", []))

        def offered() -> list[str]:
            from edge.signedconfig import MAX_ENVELOPE_BYTES, peek_scope

            out = []
            for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
                data = path.read_bytes()[: MAX_ENVELOPE_BYTES + 1]
                scope = peek_scope(data)
                if scope is not None and scope.name in (
                    groups if scope.kind == "group" else {unit}
                ):
                    out.append(data.decode("utf-8", "replace"))
            return out

        return web.json_response({"documents": await self.run_blocking(offered)})

    async def get_crl(self, request: web.Request) -> web.Response:
        """The CRL this receiver checks units against, as it verified it: units keep it to
        refuse orders from revoked operators and configuration signers. 404 without one."""
        _version, pem = await self.run_blocking(self.crl.verified_pem)
        if pem is None:
            raise web.HTTPNotFound(text="this CSU checks no CRL")
        return web.Response(body=pem, content_type="application/x-pem-file")

    def _offer(self, unit: str) -> dict[str, Any] | None:
        """The offer for ``unit``: an offer naming its units (a roll-out in waves, ``edge-csu
        fleet offer --group``) is for those only; one naming none is for every unit."""
        try:
            offer = json.loads((self.cfg.update_dir / "offer.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(offer, dict) or not isinstance(offer.get("bundle"), str):
            return None
        units = offer.get("units")
        if units is not None and (not isinstance(units, list) or unit not in units):
            return None
        return {k: v for k, v in offer.items() if k != "units"}  # no unit learns the others

    async def get_update_offer(self, request: web.Request) -> web.Response:
        """The update bundle offered (name, version, size, SHA-256), or 404 when none is."""
        offer = await self.run_blocking(self._offer, request[UNIT_ID])
        if offer is None:
            return refuse(404, "no update offered")
        return web.json_response(offer)

    async def get_update_bundle(self, request: web.Request) -> web.StreamResponse:
        """The offered bundle's bytes (the unit checks its SHA-256, RAUC its signature)."""
        offer = await self.run_blocking(self._offer, request[UNIT_ID])
        if offer is None:
            return refuse(404, "no update offered")
        path = self.cfg.update_dir / Path(offer["bundle"]).name
        if not path.is_file():
            return refuse(404, "the offered bundle is missing at the CSU")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    # --- application ----------------------------------------------------------------------------

    def units_app(self) -> web.Application:
        # client_max_size bounds what aiohttp buffers even for a lying Content-Length.
        app = web.Application(
            middlewares=[self.authenticate], client_max_size=self.cfg.max_segment_bytes
        )
        base = f"{API_PREFIX}/units/{{unit:{_ID}}}"
        app.router.add_put(
            f"{base}/cameras/{{camera:{_ID}}}/segments/{{sequence:[0-9]{{1,18}}}}",
            self.put_segment,
        )
        app.router.add_put(
            f"{base}/cameras/{{camera:{_ID}}}/epochs/{{epoch:[0-9a-f]{{32}}}}", self.put_envelope
        )
        app.router.add_put(
            f"{base}/cameras/{{camera:{_ID}}}/gaps/{{first:[0-9]{{1,18}}}}-{{last:[0-9]{{1,18}}}}",
            self.put_gap,
        )
        app.router.add_put(
            f"{base}/cameras/{{camera:{_ID}}}/mask-sets/{{digest:[0-9a-f]{{64}}}}",
            self.put_mask_set,
        )
        app.router.add_post(f"{base}/events", self.post_event)
        app.router.add_put(
            f"{base}/events/{{event:[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}}}/snapshot",
            self.put_snapshot,
        )
        app.router.add_put(
            f"{base}/signing-certificate",
            self.put_signing_certificate,
            name=SIGNING_CERTIFICATE_ROUTE,
        )
        app.router.add_get(f"{base}/cursor", self.get_cursor)
        app.router.add_get(f"{base}/commands", self.get_commands)
        app.router.add_delete(f"{base}/commands/{{nonce:[0-9a-f]{{32}}}}", self.delete_command)
        app.router.add_get(f"{base}/config", self.get_config)
        app.router.add_get(f"{base}/crl", self.get_crl)
        app.router.add_get(f"{base}/update", self.get_update_offer)
        app.router.add_get(f"{base}/update/bundle", self.get_update_bundle)
        return app

    def close(self) -> None:
        for unit, contact in self.contacts.items():
            self._write_status(unit, dict(contact))
        if isinstance(self.intake, ClusterStore):
            self.intake.close()
        if self.publisher is not None:
            self.publisher.stop()
        self.pool.shutdown(wait=True)


async def serve(
    cfg: ServeConfig,
    stop: asyncio.Event,
    ready: Callable[[int, int], None],
    *,
    config_path: Path | None = None,
) -> None:
    """Run both listeners until ``stop`` is set; ``ready(units_port, operators_port)``.
    ``config_path``: the file ``cfg`` came from (the console names it in commands)."""
    from . import purge

    # Embedded: one receiver per storage, taken before anything is read (cluster mode: the
    # database decides, receivers are meant to run side by side).
    exclusive: contextlib.AbstractContextManager[object] = (
        purge.receiver_lock(cfg.retention) if cfg.storage != "cluster" else contextlib.nullcontext()
    )
    with exclusive:
        await _serve(cfg, stop, ready, config_path)


async def _serve(
    cfg: ServeConfig,
    stop: asyncio.Event,
    ready: Callable[[int, int], None],
    config_path: Path | None,
) -> None:
    from . import purge
    from .hls import operators_app  # local: viewing is optional (authority key)
    from .registry import operator_context

    receiver = Receiver(cfg, config_path=config_path)
    cluster = receiver.intake if isinstance(receiver.intake, ClusterStore) else None
    if cluster is not None:
        # Migrations run under the database's advisory lock: receivers may start together.
        try:
            version = await receiver.run_blocking(cluster.prepare)
        except BaseException:
            receiver.close()
            raise
        log.info(
            "cluster mode: receiver %s, schema version %d, bucket %s",
            cluster.receiver_id,
            version,
            cluster.objects.bucket,
        )
        # The bundles being built (anonymous temporary files) are the only files viewing
        # writes: in cluster mode too, in storage_dir.
        cfg.storage_dir.mkdir(parents=True, exist_ok=True)
    ledger = purge.open_ledger(cfg.retention)
    if receiver.publisher is not None:
        receiver.publisher.start()
    runners: list[web.AppRunner] = []
    servers: list[asyncio.Server] = []
    try:
        ports = [0, 0]
        listeners = [
            (receiver.units_app(), cfg.units, server_context(cfg.tls, receiver.crl), "units"),
            (
                operators_app(receiver),
                cfg.operators_listen,
                operator_context(cfg.tls, receiver.crl),
                "operators",
            ),
        ]
        for slot, (app, listen, ctx, name) in enumerate(listeners):
            refused = _audit_refused_certificate(receiver) if name == "operators" else None
            server, runner = await _listen(
                app, listen.host, listen.port, ctx, cfg, name, on_certificate_refused=refused
            )
            runners.append(runner)
            servers.append(server)
            ports[slot] = server.sockets[0].getsockname()[1]
        log.info(
            "receiving units on %s:%d, operators on %s:%d",
            cfg.units.host,
            ports[0],
            cfg.operators_listen.host,
            ports[1],
        )
        ready(ports[0], ports[1])
        cycle: Callable[[int], object]
        if cluster is not None:
            from . import cluster_purge

            # no receiver.lock: the database's purge lock keeps the cycles apart
            def cycle(now_ns: int) -> object:
                return cluster_purge.purge_once(cluster, cfg.retention, ledger, now_ns=now_ns)

        else:
            store = receiver.intake
            assert isinstance(store, SegmentStore)

            def cycle(now_ns: int) -> object:
                return purge.purge_once(store, cfg.retention, ledger, now_ns=now_ns)

        purging = asyncio.create_task(
            purge.run_periodically(cycle, cfg.retention, stop, receiver.run_blocking)
        )
        republishing = (
            None
            if receiver.publisher is None
            else asyncio.create_task(
                mqtt_relay.republish_periodically(
                    receiver.publisher, receiver.intake, receiver.run_blocking, stop
                )
            )
        )
        await stop.wait()
        await purging
        if republishing is not None:
            await republishing
    finally:
        for server in servers:
            server.close()
        for runner in runners:
            await runner.cleanup()
        receiver.close()


def _audit_refused_certificate(receiver: Receiver) -> Callable[[str, str], None]:
    """What the operators' listener does with a client certificate its handshake refused: a
    ``login-refused`` record in the audit log (written from the pool, not the loop)."""

    def refused(source: str, reason: str) -> None:
        log.warning("refused an operator's client certificate from %s: %s", source, reason)
        # RuntimeError: the receiver is stopping (pool shut down); the log line above stays.
        with contextlib.suppress(RuntimeError):
            receiver.pool.submit(
                receiver.audit.record,
                "-",
                "login-refused",
                remote=source,
                reason=f"client certificate refused at the TLS handshake: {reason}",
            )

    return refused


async def _listen(
    app: web.Application,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    cfg: ServeConfig,
    name: str,
    *,
    on_certificate_refused: Callable[[str, str], None] | None = None,
) -> tuple[asyncio.Server, web.AppRunner]:
    """One listener: connections counted and TLS-handshaken by :mod:`.limits`, then served by
    aiohttp, which closes a connection idle (no request, not even a first one) for too long."""
    limits = cfg.limits
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.idle_timeout_s,
        lingering_time=LINGER_S,
    )
    await runner.setup()
    assert runner.server is not None
    gate = AdmissionGate(limits.max_connections, limits.max_connections_per_source)
    try:
        server = await start_gated_server(
            runner.server,
            host,
            port,
            ctx,
            gate=gate,
            handshake_timeout_s=limits.handshake_timeout_s,
            name=name,
            proxy_from=frozenset(limits.proxy_protocol_from if name == "units" else ()),
            on_certificate_refused=on_certificate_refused,
        )
    except OSError as exc:
        await runner.cleanup()
        key = "units.port" if name == "units" else "operators_listen.port"
        if exc.errno == errno.EADDRINUSE:
            holder = _port_holder(port)
            by = f" by {holder}" if holder else ""
            raise ConfigError(
                f"port {port} on {host} is already in use{by}: stop that process, or set "
                f"another {key} in the receiver's configuration",
                key=key,
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"port {port} on {host}: permission denied (ports under 1024 need root or "
                "CAP_NET_BIND_SERVICE): choose a port from 1024 up",
                key=key,
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"{host} is not an address of this machine: set another host", key=key
            ) from None
        raise
    except BaseException:
        await runner.cleanup()
        raise
    return server, runner


def _port_holder(port: int) -> str | None:
    """``pid N (name)`` of the process listening on TCP ``port``, when /proc tells (Linux, and
    the process visible to us); None otherwise. Only for an error message."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    name = (proc / "comm").read_text().strip()
                    return f"pid {proc.name} ({name})"
        except OSError:
            continue
    return None
