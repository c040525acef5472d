"""Operators' video: live and recorded HLS (fMP4) per camera, decrypted in memory.

Operators authenticate with a bearer token (``Authorization: Bearer …``; only its SHA-256 is
in the configuration; a token fits every HLS player and ``ffprobe -headers``, where client
certificates would not) or with a console session (:mod:`edge.csu.console.web`); either way
the role and the scope (units, cameras) are checked before anything is read, and a refusal is
audited. Every playlist opened, segment served and export made is written to
the audit log before the bytes leave. Sealed segments are opened with the authority's HPKE key
(the epoch envelope gives the data key); plaintext never touches the disk.

Routes (operator listener)::

    GET /v1/view/{unit}/{camera}/live.m3u8
    GET /v1/view/{unit}/{camera}/recorded.m3u8?from=UNIX_S&to=UNIX_S
    GET /v1/view/{unit}/{camera}/init/{sequence}.mp4
    GET /v1/view/{unit}/{camera}/media/{sequence}.m4s
    GET /v1/export/{unit}/{camera}.mp4?from=UNIX_S&to=UNIX_S&case=REF
    GET /v1/export/{unit}/{camera}.tar?from=UNIX_S&to=UNIX_S&case=REF   (:mod:`.evidence`)
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge.csu.receiver.archive import StoredSegment
from edge.vault import recipient_keys as vault_keys

from ...errors import EdgeError, IntegrityError, StorageUnavailableError
from ...vault import format as sealed
from ..console import web as console
from ..console.roles import Permission
from . import evidence

if TYPE_CHECKING:
    from .server import Handler, Receiver

log = logging.getLogger(__name__)

_ID = r"[a-z0-9][a-z0-9-]{0,62}"
MAX_EXPORT_SEGMENTS = 1800  # one hour of 2 s segments per request
MAX_CACHED_KEYS = 4096  # epoch data keys kept open (6 an hour per camera by default)
PLAIN_CACHED = 32  # decrypted segments kept (embedded mode: live viewers share them)


#: A pause longer than this between two segments is a time gap: a new run in the playlist.
TIME_GAP_NS = 1_000_000_000


def continues(prev: StoredSegment, seg: StoredSegment) -> bool:
    """Whether ``seg`` plays on from ``prev`` without a discontinuity (same recording run).

    A camera outage keeps the frame count going but not the clock: a time gap is a
    discontinuity too, so players and exports never close it up.
    """
    return (
        seg.sequence == prev.sequence + 1
        and seg.first_frame_index == prev.first_frame_index + prev.frame_count
        and seg.start_wall_ns - prev.end_wall_ns <= TIME_GAP_NS
    )


def playlist(segments: Sequence[StoredSegment], *, live: bool) -> str:
    """An HLS media playlist (version 7, fMP4) over stored segments sorted by sequence."""
    longest = max((s.end_wall_ns - s.start_wall_ns for s in segments), default=2_000_000_000)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest / 1e9))}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
    ]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    prev: StoredSegment | None = None
    for seg in segments:
        if prev is None or not continues(prev, seg):
            if prev is not None:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="init/{seg.sequence}.mp4"')
            # Each run says when it was recorded: the player's clock shows true times.
            when = datetime.fromtimestamp(seg.start_wall_ns / 1e9, UTC)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{when.isoformat(timespec='milliseconds')}")
        duration = max(0.001, (seg.end_wall_ns - seg.start_wall_ns) / 1e9)
        lines.append(f"#EXTINF:{duration:.3f},")
        lines.append(f"media/{seg.sequence}.m4s")
        prev = seg
    if not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class Viewer:
    """Opens stored sealed segments with the authority key. Thread-safe (pool threads).

    The lock protects the caches: data keys per epoch and the last decrypted segments (live
    viewers fetch the same few segments). In cluster mode only the data keys are kept: every
    segment is read from the shared stores and checked each time it is served, so that what
    one receiver serves is what any other would (a segment retention deleted, or an object
    altered in the store, is refused by all of them at once).
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        path = receiver.cfg.authority_key_file
        self.private = vault_keys.load_private(path) if path is not None else None
        self._lock = threading.Lock()
        self._data_keys: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._plain: OrderedDict[tuple[str, str, int], tuple[bytes, bytes]] = OrderedDict()
        self._plain_max = 0 if receiver.cfg.storage == "cluster" else PLAIN_CACHED

    def open(self, unit: str, camera: str, sequence: int) -> tuple[bytes, bytes]:
        """(init, media) of a stored segment, after verifying it again."""
        cache_key = (unit, camera, sequence)
        with self._lock:
            hit = self._plain.get(cache_key)
            if hit is not None:
                return hit
        if self.private is None:
            raise web.HTTPServiceUnavailable(text="no authority key configured for viewing")
        unit_key = self.receiver.registry.signing_key(unit)
        if unit_key is None:
            raise web.HTTPNotFound(text="unit not enrolled")
        try:
            raw = self.receiver.store.read_segment(unit, camera, sequence)
        except FileNotFoundError:
            raise web.HTTPNotFound(text=f"{unit}/{camera}#{sequence} not stored") from None
        except IntegrityError as exc:  # cluster mode: altered in the object store
            raise web.HTTPUnprocessableEntity(text=f"cannot open segment: {exc}") from None
        try:
            seg = sealed.verify_segment(raw, unit_key, device_id=unit)
            epoch = seg.header.epoch_id.hex()
            with self._lock:
                data_key = self._data_keys.get((unit, camera, epoch))
            if data_key is None:
                env_raw = self.receiver.store.read_envelope(unit, camera, epoch)
                if env_raw is None:
                    raise web.HTTPNotFound(text=f"epoch {epoch} envelope not received yet")
                env = sealed.verify_envelope(env_raw, unit_key)
                data_key = vault_keys.open_envelope(env, self.private)
                with self._lock:
                    self._data_keys[(unit, camera, epoch)] = data_key
                    while len(self._data_keys) > MAX_CACHED_KEYS:
                        self._data_keys.popitem(last=False)
            init, media = vault_keys.decrypt_segment(seg, data_key)
        except EdgeError as exc:
            raise web.HTTPUnprocessableEntity(text=f"cannot open segment: {exc}") from None
        with self._lock:
            self._plain[cache_key] = (init, media)
            while len(self._plain) > self._plain_max:
                self._plain.popitem(last=False)
        return init, media


def _time_arg(request: web.Request, name: str) -> int:
    try:
        return int(float(request.query[name]) * 1e9)
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f"query parameter {name}=UNIX_SECONDS required") from None


def operators_app(receiver: Receiver) -> web.Application:
    viewer = Viewer(receiver)
    audit = receiver.audit

    @web.middleware
    async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StorageUnavailableError as exc:  # cluster mode: the shared stores out of reach
            log.warning("503 for %s %s: %s", request.method, request.path[:512], exc)
            return web.Response(
                status=503, text="storage unavailable, retry later", headers={"Retry-After": "2"}
            )

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(console.PREFIX):
            return await handler(request)  # the console checks its own routes
        principal, why = await receiver.run_blocking(
            console.authenticate, receiver, request.app[console.STORE_KEY], request
        )
        unit, camera = request.match_info.get("unit"), request.match_info.get("camera")
        if principal is not None:
            need = Permission.EXPORT if request.path.startswith("/v1/export/") else Permission.VIEW
            refusal = console.check_scope(principal, unit, camera) or (
                None if principal.may(need) else f"role {principal.role} may not {need}"
            )
            if refusal is not None:
                await receiver.run_blocking(
                    lambda: audit.record(
                        principal.name,
                        "refused",
                        reason=refusal,
                        method=request.method,
                        path=request.path[:512],
                        remote=console.remote_of(request),
                    )
                )
                return web.Response(status=403, text="outside your scope or role")
            request[evidence.OPERATOR] = principal.name
            return await handler(request)
        # Refused attempts are audited like granted ones: guessing tokens, or an expired
        # token still in use, must show in the log (never the token itself).
        await receiver.run_blocking(
            lambda: audit.record(
                "-",
                "refused",
                reason=why,
                method=request.method,
                path=request.path[:512],
                remote=console.remote_of(request),
            )
        )
        return web.Response(
            status=401, text="operator token required", headers={"WWW-Authenticate": "Bearer"}
        )

    def _where(request: web.Request) -> dict[str, Any]:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return {
            "unit": request.match_info["unit"],
            "camera": request.match_info["camera"],
            "remote": str(peer[0]) if peer else None,
        }

    async def live(request: web.Request) -> web.Response:
        where = _where(request)
        segs = await receiver.run_blocking(
            receiver.store.latest, where["unit"], where["camera"], receiver.cfg.live_segments
        )
        if not segs:
            raise web.HTTPNotFound(text="no segment received for this camera yet")
        who = request[evidence.OPERATOR]
        await receiver.run_blocking(lambda: audit.record(who, "view-live", **where))
        return web.Response(
            text=playlist(segs, live=True), content_type="application/vnd.apple.mpegurl"
        )

    async def recorded(request: web.Request) -> web.Response:
        where = _where(request)
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        segs = await receiver.run_blocking(
            receiver.store.in_range, where["unit"], where["camera"], start, end
        )
        if not segs:
            raise web.HTTPNotFound(text="nothing recorded in that range")
        await receiver.run_blocking(
            lambda: audit.record(
                request[evidence.OPERATOR], "view-recorded", from_ns=start, to_ns=end, **where
            )
        )
        return web.Response(
            text=playlist(segs, live=False), content_type="application/vnd.apple.mpegurl"
        )

    async def part(request: web.Request) -> web.Response:
        where = _where(request)
        sequence = int(request.match_info["sequence"])
        kind = request.match_info["kind"]

        def work() -> bytes:
            init, media = viewer.open(where["unit"], where["camera"], sequence)
            audit.record(request[evidence.OPERATOR], f"view-{kind}", sequence=sequence, **where)
            return init if kind == "init" else media

        body = await receiver.run_blocking(work)
        return web.Response(body=body, content_type="video/mp4")

    async def export(request: web.Request) -> web.Response:
        where = _where(request)
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        case = request.query.get("case", "")
        segs = await receiver.run_blocking(
            receiver.store.in_range, where["unit"], where["camera"], start, end
        )
        segs = segs[:MAX_EXPORT_SEGMENTS]
        if not segs:
            raise web.HTTPNotFound(text="nothing recorded in that range")

        def work() -> bytes:
            # One fMP4: the first init, then each media segment (one recording run per export;
            # a discontinuity ends the export there, and the audit entry says where).
            out = bytearray()
            last = segs[0]
            count = 0
            for seg in segs:
                if count and not continues(last, seg):
                    break
                init, media = viewer.open(where["unit"], where["camera"], seg.sequence)
                if not out:
                    out += init
                out += media
                last, count = seg, count + 1
            audit.record(
                request[evidence.OPERATOR],
                "export",
                case=case,
                first=segs[0].sequence,
                last=last.sequence,
                from_ns=start,
                to_ns=end,
                **where,
            )
            return bytes(out)

        body = await receiver.run_blocking(work)
        return web.Response(body=body, content_type="video/mp4")

    app = web.Application(middlewares=[console.security_headers, unavailable, auth])
    console.mount(app, receiver)
    base = f"/v1/view/{{unit:{_ID}}}/{{camera:{_ID}}}"
    app.router.add_get(f"{base}/live.m3u8", live)
    app.router.add_get(f"{base}/recorded.m3u8", recorded)
    app.router.add_get(
        f"{base}/{{kind:init|media}}/{{sequence:[0-9]{{1,18}}}}.{{ext:mp4|m4s}}", part
    )
    app.router.add_get(f"/v1/export/{{unit:{_ID}}}/{{camera:{_ID}}}.mp4", export)
    evidence.add_routes(app, receiver)  # the signed bundle, under the same checks
    return app
