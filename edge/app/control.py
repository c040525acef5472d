"""The local control socket of ``edged``, used by ``edgectl``.

A Unix stream socket (``/run/edge/control.sock`` by default); no TCP port, ever (ANSSI R51). One
JSON request per connection, one JSON response::

    → {"method": "status"}
    ← {"ok": true, "result": {...}}        or   {"ok": false, "error": "..."}

Who may call what is decided here, from the caller's credentials as the kernel reports them
(``SO_PEERCRED``: pid, uid, gid) and the caller's supplementary groups (``/proc/PID/status``):

- role ``maint`` (group ``edge-maint``): diagnostics — status, never a picture (CNIL: maintenance
  staff are not authorised viewers);
- role ``install`` (group ``edge-install``): everything ``maint`` may, plus the *masked* preview
  installers need to aim the camera and draw masks;
- root has both roles; anyone else is refused.

Privileged calls (the preview) are written to the audit log with the caller's identity. The
socket file is world-connectable (0666) on purpose: authorisation is this module's job, so
the two groups need no shared file-system group (a socket file has one group; the unit's
``/run/edge`` is 0711, traversable but not listable, see OPERATIONS.md). Since anyone may
connect, what a caller without a role can make us do is kept to nothing:

- its credentials are read from the kernel and it is refused *before one byte of its request is
  read*, in the accepting thread (no thread, no buffer, no JSON parser for it);
- callers with a role share :data:`MAX_CONNECTIONS` serving threads; one more is answered "busy";
- a request must arrive whole within :data:`REQUEST_DEADLINE_S`, fit in :data:`MAX_REQUEST_BYTES`
  and nest at most :data:`MAX_REQUEST_DEPTH` levels (deep nesting used to raise
  ``RecursionError`` in the serving thread).

The socket path belongs to one server at a time: the server holds an exclusive lock on
``PATH.lock`` (see :mod:`edge.app.datadir`) for its whole life, removes a stale socket only while
holding it, and on close removes the socket only if it is still the one it bound. A second
``edged`` configured with the same path is refused the socket instead of deleting the first's.

Threading: one thread accepts and checks credentials; each admitted connection is served in a
short-lived thread, at most :data:`MAX_CONNECTIONS` at once (``_BoundedServer.slots``). Handlers
only read daemon state through the thread-safe ``snapshot``/``preview`` callables they are given.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge import jsonlimits
from edge.app.datadir import HeldLock
from edge.errors import EdgeError, ProtocolError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_REQUEST_DEPTH = 8  # the deepest legitimate request (preview masks) nests 6
REQUEST_DEADLINE_S = 5.0
MAX_CONNECTIONS = 8
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # value from <asm-generic/socket.h>


class Role(StrEnum):
    MAINT = "maint"
    INSTALL = "install"


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def describe(self) -> str:
        return f"uid={self.uid}({self.user}) pid={self.pid}"


def resolve_group(group: str | int) -> int | None:
    """A group given by name or number → gid; ``None`` when no such group exists here."""
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def peer_credentials(sock: socket.socket) -> Caller:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups = {gid}
    # SO_PEERCRED carries the primary group only; SO_PEERGROUPS (Linux ≥ 4.13) gives the
    # supplementary groups as the kernel saw them at connect time. /proc/PID/status is no
    # substitute under systemd: ProtectProc=invisible hides other users' processes from us.
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)  # at most 256 groups
    groups.update(struct.unpack(f"{len(raw) // 4}I", raw))
    return Caller(pid, uid, gid, frozenset(groups))


def roles_of(caller: Caller, maint_gid: int | None, install_gid: int | None) -> set[Role]:
    """Pure policy: the roles a caller holds."""
    if caller.uid == 0:
        return {Role.MAINT, Role.INSTALL}
    roles: set[Role] = set()
    if install_gid is not None and install_gid in caller.groups:
        roles |= {Role.MAINT, Role.INSTALL}
    if maint_gid is not None and maint_gid in caller.groups:
        roles.add(Role.MAINT)
    return roles


Handler = Callable[[Caller, dict[str, Any]], Any]


def _answer(conn: socket.socket, response: dict[str, Any]) -> None:
    """Send a whole answer without ever waiting on the peer (it fits in the socket buffer)."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.sendall(json.dumps(response).encode() + b"\n")


class _BoundedServer(socketserver.ThreadingUnixStreamServer):
    """Checks the caller in the accepting thread and bounds the serving threads."""

    daemon_threads = True

    def __init__(
        self,
        path: str,
        handler: type[socketserver.BaseRequestHandler],
        admit: Callable[[socket.socket], dict[str, Any] | None],
    ) -> None:
        super().__init__(path, handler)
        self.admit = admit
        # One slot per serving thread; taken in the accepting thread, given back by the
        # serving thread when it ends.
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        refusal = self.admit(request)
        if refusal is None and not self.slots.acquire(blocking=False):
            refusal = {"ok": False, "error": "edged is busy: too many control connections"}
        if refusal is not None:
            _answer(request, refusal)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


@dataclass(frozen=True)
class Method:
    role: Role
    handler: Handler
    audited: bool = False


class ControlServer:
    """Serves :class:`Method` s on a Unix socket until :meth:`close`."""

    def __init__(
        self,
        path: Path,
        methods: dict[str, Method],
        *,
        maint_group: str | int,
        install_group: str | int,
        audit: Callable[[Caller, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = path
        self.methods = methods
        self.maint_gid = resolve_group(maint_group)
        self.install_gid = resolve_group(install_group)
        self.audit = audit
        if self.maint_gid is None:
            log.warning("group %r does not exist: only root may run diagnostics", maint_group)
        if self.install_gid is None:
            log.warning("group %r does not exist: only root may use the preview", install_group)
        path.parent.mkdir(parents=True, exist_ok=True)
        # InstanceLockedError (an OSError) when another edged serves this path: its socket
        # is left alone.
        self._lock = HeldLock.acquire(
            path.with_name(path.name + ".lock"), what=f"control socket {path}"
        )
        server = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its server died (we hold the lock nobody else has)
            self._server = _BoundedServer(str(path), _Handler, self._admit)
            st = os.stat(path)
            self._bound = (st.st_dev, st.st_ino)
        except BaseException:
            self._lock.release(remove=True)
            raise
        os.chmod(path, 0o666)  # noqa: S103 - authorisation is by SO_PEERCRED, see above
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("control socket listening on %s", self.path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:  # never remove a socket we did not bind
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._lock.release(remove=True)

    def _admit(self, conn: socket.socket) -> dict[str, Any] | None:
        """In the accepting thread: the refusal for a caller without any role, else None."""
        try:
            caller = peer_credentials(conn)
        except OSError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        if roles_of(caller, self.maint_gid, self.install_gid):
            return None
        log.warning("refused %s: no role", caller.describe())
        return {
            "ok": False,
            "error": "permission denied: membership of the maintenance or installer group needed",
            "denied": True,
        }

    def _serve(self, conn: socket.socket) -> None:
        try:
            caller = peer_credentials(conn)
            request = _read_request(conn, time.monotonic() + REQUEST_DEADLINE_S)
            response = self._dispatch(caller, request)
        except (OSError, ValueError) as exc:  # ProtocolError is a ValueError
            response = {"ok": False, "error": f"bad request: {exc}"}
        conn.settimeout(REQUEST_DEADLINE_S)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(response).encode() + b"\n")

    def _dispatch(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("method")
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None:
            return {"ok": False, "error": f"unknown method {name!r}"}
        roles = roles_of(caller, self.maint_gid, self.install_gid)
        if method.role not in roles:
            log.warning("refused %s to %s (roles: %s)", name, caller.describe(), sorted(roles))
            return {
                "ok": False,
                "error": f"permission denied: {name} needs the {method.role} role",
                "denied": True,
            }
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return {"ok": False, "error": "params must be an object"}
        if method.audited and self.audit is not None:
            self.audit(caller, str(name), params)
        try:
            return {"ok": True, "result": method.handler(caller, params)}
        except EdgeError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a failing handler must not kill the daemon
            log.exception("control method %s failed", name)
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


def _read_request(conn: socket.socket, deadline: float) -> dict[str, Any]:
    """One request line, whole by ``deadline`` (a caller trickling bytes holds a slot no longer)."""
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(f"request not complete within {REQUEST_DEADLINE_S:.0f} s")
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            raise ProtocolError(f"request not complete within {REQUEST_DEADLINE_S:.0f} s") from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            raise ProtocolError("request too large")
    request = jsonlimits.loads(
        buf.strip() or b"null", max_bytes=MAX_REQUEST_BYTES, max_depth=MAX_REQUEST_DEPTH
    )
    if not isinstance(request, dict):
        raise ProtocolError("request must be a JSON object")
    return request


class ControlError(EdgeError, ConnectionError):
    """The control socket could not be reached or refused the request."""

    def __init__(self, message: str, *, denied: bool = False, not_running: bool = False) -> None:
        super().__init__(message)
        self.denied = denied
        #: No edged behind the socket: callers add their own next step (start it, --direct).
        self.not_running = not_running


def call(
    path: Path, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Client side: one request to ``edged``; raises :class:`ControlError` with the reason."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(
                f"edged is not running (no control socket at {path})", not_running=True
            ) from None
        except ConnectionRefusedError:
            raise ControlError(
                f"edged is not running (stale control socket {path})", not_running=True
            ) from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}", denied=True) from None
        # Refused before edged read the request: its answer, already sent, says why.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(json.dumps({"method": method, "params": params or {}}).encode() + b"\n")
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # edged closed without reading our request (a refusal): keep its answer
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise ControlError(f"edged did not answer {method!r} within {timeout:.0f} s") from None
    finally:
        sock.close()
    try:
        response = json.loads(buf.decode())
    except ValueError:
        raise ControlError(f"edged sent an unreadable answer to {method!r}") from None
    if not response.get("ok"):
        raise ControlError(str(response.get("error")), denied=bool(response.get("denied")))
    return response["result"]
