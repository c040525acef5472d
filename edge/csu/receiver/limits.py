"""What one client may cost the receiver: connections, handshake time, body size, read time.

Both listeners accept plain TCP and start TLS themselves (:func:`start_gated_server`), so the
receiver sees a connection *before* any TLS state exists for it:

- a connection from a trusted proxy (``proxy_protocol_from``: HAProxy with ``send-proxy-v2``
  in cluster mode) must begin with a PROXY protocol v2 header, read from the socket byte for
  byte before TLS starts; the address it carries is the connection's source from then on
  (the gate's count, the logs, :func:`peer_of`);
- an :class:`AdmissionGate` refuses a connection beyond ``max_connections_per_source`` from one
  address or ``max_connections`` in all, by closing it at once (no TLS object is ever made);
- the TLS handshake must finish within ``handshake_timeout_s``; a client certificate refused
  there (expired, revoked, wrong purpose, unknown CA) is reported to ``on_certificate_refused``
  with the source address (the operators' listener audits it);
- after a failed handshake the frames of the failure are cleared. CPython 3.11 up to 3.11.7
  (gh-109534, fixed in later 3.11/3.12 releases) leaves every failed server-side handshake in a
  reference cycle (the exception's traceback holds the ``SSLProtocol`` and its OpenSSL object),
  freed only by a full garbage collection, which a quiet server rarely runs: a thousand
  connections that closed before their handshake held ~300 MB for good. Clearing the frames lets
  reference counting free them at once, on any interpreter;
- when a burst of connections has ended, the C allocator is asked to return the freed pages
  (:func:`release_freed_memory`), so the process comes back near its resting size.

Once a unit is authenticated, :func:`read_body` bounds each route's body (Content-Length or
chunked alike) and the time it may take to arrive; aiohttp's keep-alive timeout closes a
connection that sends no request at all.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import logging
import os
import socket
import ssl
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from edge.csu.receiver.archive import Refusal

log = logging.getLogger(__name__)

#: At most one "refused a connection" line per this many seconds (a flood must not fill the log).
REFUSAL_LOG_INTERVAL_S = 10.0
#: How long after a burst ends its memory is handed back (the connections' last callbacks run).
TRIM_DELAY_S = 1.0


#: A burst of at least this many connections that has ended lets the allocator give its
#: memory back to the system (see :func:`release_freed_memory`).
BURST_CONNECTIONS = 64


#: The PROXY protocol v2 signature (HAProxy's ``send-proxy-v2``), then version and command,
#: address family, and the length of what follows.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_CLOSED_FIRST = "closed without a byte"
_CLOSED_IN = "closed within the PROXY header"
#: The unit's own address behind a proxy, by the TLS transport aiohttp's requests carry.
REAL_PEER: weakref.WeakKeyDictionary[asyncio.BaseTransport, tuple[str, int]] = (
    weakref.WeakKeyDictionary()
)


def peer_of(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    """The client's address: the unit's behind a trusted proxy, else the socket's peer."""
    if transport is None:
        return None
    real = REAL_PEER.get(transport)
    if real is not None:
        return real
    peer = transport.get_extra_info("peername")
    return (str(peer[0]), int(peer[1])) if peer else None


async def read_proxy_header(transport: asyncio.Transport) -> tuple[str, int] | None:
    """Read exactly one PROXY protocol v2 header from the connection's socket (not a byte
    more: the TLS handshake follows); the source address it carries, None for a LOCAL
    connection (the proxy's own health check). :class:`ValueError` if it is not one."""
    sock = transport.get_extra_info("socket")
    loop = asyncio.get_running_loop()
    with socket.socket(fileno=os.dup(sock.fileno())) as raw:
        raw.setblocking(False)

        async def exactly(n: int, first: bool = False) -> bytes:
            data = b""
            while len(data) < n:
                chunk = await loop.sock_recv(raw, n - len(data))
                if not chunk:
                    raise ValueError(_CLOSED_FIRST if first and not data else _CLOSED_IN)
                data += chunk
            return data

        head = await exactly(16, first=True)
        if head[:12] != PROXY_V2_SIGNATURE or head[12] >> 4 != 2:
            raise ValueError("no PROXY protocol v2 header")
        length = int.from_bytes(head[14:16], "big")
        if length > 1024:
            raise ValueError("PROXY header too long")
        body = await exactly(length)
    command, family = head[12] & 0x0F, head[13]
    if command == 0:  # LOCAL
        return None
    if command != 1:
        raise ValueError(f"PROXY command {command}")
    if family == 0x11 and length >= 12:  # TCP over IPv4
        return str(ipaddress.IPv4Address(body[:4])), int.from_bytes(body[8:10], "big")
    if family == 0x21 and length >= 36:  # TCP over IPv6
        return str(ipaddress.IPv6Address(body[:16])), int.from_bytes(body[32:34], "big")
    raise ValueError(f"PROXY address family {family:#x}")


@dataclass
class AdmissionGate:
    """Counts open connections per source address and in total. Loop thread only."""

    max_total: int
    max_per_source: int
    open_by_source: dict[str, int] = field(default_factory=dict)
    total: int = 0
    refused: int = 0
    peak: int = 0

    def admit(self, source: str) -> bool:
        held = self.open_by_source.get(source, 0)
        if self.total >= self.max_total or held >= self.max_per_source:
            self.refused += 1
            return False
        self.open_by_source[source] = held + 1
        self.total += 1
        self.peak = max(self.peak, self.total)
        return True

    def release(self, source: str) -> bool:
        """Count one connection out; True when this ends a burst (the count fell to a quarter
        of a peak at least :data:`BURST_CONNECTIONS` above it)."""
        held = self.open_by_source.get(source, 0)
        if held <= 1:
            self.open_by_source.pop(source, None)
        else:
            self.open_by_source[source] = held - 1
        self.total = max(0, self.total - 1)
        if self.peak - self.total >= BURST_CONNECTIONS and self.total <= self.peak // 4:
            self.peak = self.total
            return True
        return False


def release_freed_memory() -> None:
    """Hand memory freed by the C allocator back to the system (glibc only; elsewhere nothing).

    Each handshake holds a 256 KiB read buffer and OpenSSL state; once a burst of them is
    freed, glibc keeps the pages for reuse, so the process would stay at its peak for good."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class _Gate(asyncio.Protocol):
    """One accepted TCP connection: counted by the gate, TLS-handshaken, then forwarded to
    aiohttp's handler. Gives its place back to the gate when it ends, however it ends."""

    def __init__(self, listener: _Listener) -> None:
        self._listener = listener
        self._source: str | None = None
        self._handler: asyncio.Protocol | None = None
        # What TLS delivers between the end of the handshake and the hand-over to aiohttp
        # (a client may send its request with its last handshake message): replayed in order.
        self._early: list[bytes | None] = []
        self._peer: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        # Not one byte of the ClientHello (or PROXY header) may reach this protocol: the
        # header is read from the socket itself, then start_tls takes over reading.
        transport.pause_reading()
        if source in self._listener.proxy_from:
            task = asyncio.ensure_future(self._proxied(transport, source))
        else:
            if not self._admit(transport, source):
                return
            task = asyncio.ensure_future(self._handshake(transport))
        self._listener.handshakes.add(task)
        task.add_done_callback(self._listener.handshakes.discard)

    def _admit(self, transport: asyncio.Transport, source: str) -> bool:
        if not self._listener.gate.admit(source):
            self._listener.log_refusal(source)
            transport.abort()
            return False
        self._source = source
        return True

    async def _proxied(self, transport: asyncio.Transport, proxy: str) -> None:
        """A connection from a trusted proxy: its PROXY protocol v2 header names the unit's
        address, which the gate counts (and the logs show) instead of the proxy's."""
        try:
            async with asyncio.timeout(self._listener.handshake_timeout_s):
                peer = await read_proxy_header(transport)
        except (TimeoutError, OSError, ValueError) as exc:
            # A connection closed before sending anything is a proxy's plain TCP check.
            quiet = isinstance(exc, ValueError) and str(exc) == _CLOSED_FIRST
            (log.debug if quiet else log.warning)(
                "closed a connection from proxy %s: %s", proxy, exc or "no header in time"
            )
            transport.abort()
            return
        source = peer[0] if peer is not None else proxy  # LOCAL: the proxy's own check
        if not self._admit(transport, source):
            return
        self._peer = peer
        await self._handshake(transport)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        listener = self._listener
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                listener.ssl_context,
                server_side=True,
                ssl_handshake_timeout=listener.handshake_timeout_s,
                # the closing exchange too: a peer that never answers close_notify keeps its
                # place at the gate no longer than a handshake
                ssl_shutdown_timeout=listener.handshake_timeout_s,
            )
        except asyncio.CancelledError:
            transport.abort()
            self._give_back()
            raise
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # Break the failure's reference cycle now (gh-109534, see the module docstring).
            traceback.clear_frames(exc.__traceback__)
            transport.abort()
            source = self._source
            self._give_back()
            report = listener.on_certificate_refused
            if report is not None and isinstance(exc, ssl.SSLCertVerificationError):
                reason = exc.verify_message or exc.reason or str(exc)
                report(source or "?", str(reason))
            return
        if tls is None or self._source is None:  # already gone
            return
        if self._peer is not None:
            REAL_PEER[tls] = self._peer
        handler = listener.handler_factory()
        self._handler = handler
        handler.connection_made(tls)
        for data in self._early:
            if data is None:
                handler.eof_received()
            else:
                handler.data_received(data)
        self._early.clear()

    def _give_back(self) -> None:
        if self._source is not None:
            if self._listener.gate.release(self._source):
                self._listener.burst_ended()
            self._source = None

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            self._early.append(data)
        else:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is None:
            self._early.append(None)
            return None  # TLS closes on end of file whatever is answered here
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._give_back()
        if self._handler is not None:
            self._handler.connection_lost(exc)


@dataclass
class _Listener:
    gate: AdmissionGate
    ssl_context: ssl.SSLContext
    handshake_timeout_s: float
    handler_factory: Callable[[], asyncio.Protocol]
    name: str
    proxy_from: frozenset[str] = frozenset()
    on_certificate_refused: Callable[[str, str], None] | None = None
    """Called with (source address, OpenSSL's reason) when a client certificate is refused."""
    handshakes: set[asyncio.Future[None]] = field(default_factory=set)
    _last_refusal_log: float = -REFUSAL_LOG_INTERVAL_S
    _trim: asyncio.TimerHandle | None = None

    def burst_ended(self) -> None:
        """Give memory back soon, once (a trim walks the heap: not once per connection)."""
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        release_freed_memory()

    def log_refusal(self, source: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL_S:
            self._last_refusal_log = now
            log.warning(
                "refused a connection from %s on the %s listener: %d open from it, %d in all "
                "(limits %d and %d; %d refused so far)",
                source,
                self.name,
                self.gate.open_by_source.get(source, 0),
                self.gate.total,
                self.gate.max_per_source,
                self.gate.max_total,
                self.gate.refused,
            )


async def start_gated_server(
    handler_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    gate: AdmissionGate,
    handshake_timeout_s: float,
    name: str,
    proxy_from: frozenset[str] = frozenset(),
    on_certificate_refused: Callable[[str, str], None] | None = None,
) -> asyncio.Server:
    """A TLS listener whose connections pass ``gate`` before any TLS work is done for them;
    those from ``proxy_from`` addresses must begin with a PROXY protocol v2 header.
    ``on_certificate_refused`` (loop thread, must not block) hears of client certificates the
    handshake refused."""
    listener = _Listener(
        gate, ssl_context, handshake_timeout_s, handler_factory, name, proxy_from,
        on_certificate_refused,
    )  # fmt: skip
    return await asyncio.get_running_loop().create_server(
        lambda: _Gate(listener), host, port, reuse_address=True
    )


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 beyond ``limit`` bytes, whether announced by
    Content-Length or sent chunked, and with 408 if it takes more than ``timeout_s``."""
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, f"larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise Refusal(413, f"larger than {limit} bytes")
    except TimeoutError:
        raise Refusal(408, f"body not received within {timeout_s:g} s") from None
    return bytes(body)
