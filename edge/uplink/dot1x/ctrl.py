"""Client of the wpa_supplicant / hostapd control socket (``ctrl_interface``).

The protocol is text over Unix datagram sockets: the client binds a socket of its own, sends a
command, and gets one reply datagram; after ``ATTACH`` the same socket also receives unsolicited
event datagrams, which start with a priority tag ``<N>``. Replies never start with ``<``, so one
socket carries both and :meth:`WpaCtrl.request` sets events aside while it waits for a reply.

This is the one place where socket errors of the control interface are translated into
:class:`~edge.errors.Dot1xError`. Not thread-safe: one thread owns a :class:`WpaCtrl`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import socket
import tempfile
import time
from collections import deque
from pathlib import Path

from ...errors import Dot1xError

#: ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

_EVENT_RE = re.compile(r"^<(\d)>")
_counter = itertools.count()


def default_client_dir() -> Path:
    """Where client sockets go: systemd's RuntimeDirectory (``/run/edge``) in edged, else /tmp.

    Deliberately not the pytest or build directory: those paths easily pass 108 bytes.
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) if runtime else Path(tempfile.gettempdir())


class WpaCtrl:
    """One connection to a control socket; see the module docstring."""

    def __init__(
        self, server: Path, *, client_dir: Path | None = None, timeout_s: float = 2.0
    ) -> None:
        self.server = server
        self.timeout_s = timeout_s
        directory = client_dir or default_client_dir()
        self.client_path = directory / f"edge-ctrl-{os.getpid()}-{next(_counter)}"
        for path in (self.server, self.client_path):
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                raise Dot1xError(
                    f"control socket path {path} is longer than {MAX_SOCKET_PATH} bytes"
                )
        self._sock: socket.socket | None = None
        self._events: deque[str] = deque()

    def __enter__(self) -> WpaCtrl:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.client_path.unlink()  # left by a previous process with our pid
            sock.bind(os.fsencode(self.client_path))
            sock.connect(os.fsencode(self.server))
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                self.client_path.unlink()
            raise self._error("cannot connect to", exc) from None
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                self.client_path.unlink()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def _error(self, doing: str, exc: OSError) -> Dot1xError:
        why = {
            2: "no such socket (daemon not running?)",
            111: "connection refused (daemon gone)",
            13: "permission denied (not in the control group?)",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return Dot1xError(f"{doing} control socket {self.server}: {why}")

    def request(self, command: str, timeout_s: float | None = None) -> str:
        """Send ``command``; return its reply. Events received meanwhile are kept for later."""
        sock = self._require()
        try:
            sock.send(command.encode())
        except OSError as exc:
            raise self._error(f"{command} to", exc) from None
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            message = self._receive(deadline)
            if message is None:
                raise Dot1xError(f"{command}: no reply from {self.server} (daemon hung?)")
            if _EVENT_RE.match(message):
                self._events.append(_EVENT_RE.sub("", message, count=1))
                continue
            if message.startswith("FAIL"):
                raise Dot1xError(f"{command}: {self.server} answered {message.strip()}")
            return message

    def attach(self) -> None:
        """Subscribe this socket to events (``ATTACH``)."""
        reply = self.request("ATTACH")
        if reply.strip() != "OK":
            raise Dot1xError(f"ATTACH: unexpected reply {reply.strip()!r}")

    def next_event(self, timeout_s: float) -> str | None:
        """The next event without its ``<N>`` tag, or None when none came within ``timeout_s``."""
        if self._events:
            return self._events.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._receive(deadline)
            if message is None:
                return None
            if _EVENT_RE.match(message):
                return _EVENT_RE.sub("", message, count=1)
            # A late reply to a request that timed out: nothing is waiting for it any more.

    def _receive(self, deadline: float) -> str | None:
        sock = self._require()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return None
            try:
                data = sock.recv(8192)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._error("receiving from", exc) from None
            return data.decode("utf-8", errors="replace")

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise Dot1xError(f"control socket {self.server} is not open")
        return self._sock
