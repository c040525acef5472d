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
the two groups need no shared file-system group.

The socket path belongs to one server at a time: the server holds an exclusive lock on
``PATH.lock`` (see :mod:`edge.app.datadir`) for its whole life, removes a stale socket only while
holding it, and on close removes the socket only if it is still the one it bound. A second
``edged`` configured with the same path is refused the socket instead of deleting the first's.

Threading: one thread accepts; each connection is served in a short-lived thread. Handlers only
read daemon state through the thread-safe ``snapshot``/``preview`` callables they are given.
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
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge.app.datadir import HeldLock
from edge.errors import EdgeError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
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
            self._server = socketserver.ThreadingUnixStreamServer(str(path), _Handler)
            st = os.stat(path)
            self._bound = (st.st_dev, st.st_ino)
        except BaseException:
            self._lock.release(remove=True)
            raise
        self._server.daemon_threads = True
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

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            caller = peer_credentials(conn)
            response = self._dispatch(caller, _read_request(conn))
        except (OSError, ValueError) as exc:
            response = {"ok": False, "error": f"bad request: {exc}"}
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


def _read_request(conn: socket.socket) -> dict[str, Any]:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    request = json.loads(buf.decode() or "null")
    if not isinstance(request, dict):
        raise ValueError("request must be a JSON object")
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
        sock.sendall(json.dumps({"method": method, "params": params or {}}).encode() + b"\n")
        buf = b""
        while True:
            chunk = sock.recv(65536)
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
