"""Supervision of wpa_supplicant from ``edged``: port state, failure reasons, alerts.

A :class:`Dot1xSupervisor` runs one thread that owns the control-socket connection: it
``ATTACH``es for events (fast reaction, failure details) and polls ``STATUS`` every
``status_interval_s`` (the truth about the port; also how a dead or hung supplicant is noticed,
since a killed one sends no event). The state machine is :class:`~.status.PortState`; every
transition goes through :meth:`Dot1xSupervisor._set_state`, which logs it with its reason and
raises an alert on entering HELD or FAILED.

Wiring in edged: ``sup = Dot1xSupervisor.from_config(cfg, on_alert=...)``, ``sup.start()`` at
start-up, ``sup.stop()`` at shutdown; give ``edge.uplink.gate.make_gate(cfg, sup)`` to the
uplink and ``sup.snapshot()`` to diagnostics.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.snapshot import CertificateStatus, Dot1xStatus
from edge.uplink.dot1x.port_state import (
    SERVER_REJECTED_UNIT,
    EventKind,
    PortState,
    interpret_event,
    parse_status,
    state_from_status,
)

from ...config import EdgeConfig
from ...errors import Dot1xError
from .ctrl import WpaCtrl
from .supplicant_conf import Dot1xSettings, settings

log = logging.getLogger(__name__)

#: The client certificate is re-read this often, and whenever its file changes.
_CERT_RECHECK_S = 60.0


@dataclass(frozen=True)
class Dot1xAlert:
    """An alert for the event pipeline: the port became unusable, and why."""

    state: PortState
    reason: str
    wall_ns: int
    kind: str = "dot1x"


AlertCallback = Callable[[Dot1xAlert], None]


def certificate_summary(path: Path, ca_path: Path, warning_days: int) -> CertificateStatus:
    """Expiry facts of the unit certificate at ``path`` for diagnostics (never raises)."""
    from edge.identity.enrolment import read_certificate_status  # local: keeps this import light

    return read_certificate_status(path, warning_days=warning_days, ca_path=ca_path)


class Dot1xSupervisor:
    """Supervises wpa_supplicant for one interface. See the module docstring.

    Concurrency: the supervisor thread alone owns ``self._ctrl`` and calls ``_set_state``.
    ``self._cond`` (a Condition over one lock) protects the fields below it; other threads
    (the uplink through the gate, diagnostics, tests) read them through :attr:`state`,
    :meth:`snapshot`, :meth:`wait_for`, and wait on the condition. ``on_alert`` is called from
    the supervisor thread outside the lock: it must hand the alert off quickly.
    """

    def __init__(
        self,
        s: Dot1xSettings,
        *,
        enabled: bool = True,
        status_interval_s: float = 2.0,
        reply_timeout_s: float = 2.0,
        expiry_warning_days: int = 30,
        on_alert: AlertCallback | None = None,
        client_dir: Path | None = None,
        startup_grace_s: float = 10.0,
    ) -> None:
        self.settings = s
        self.startup_grace_s = startup_grace_s
        self.enabled = enabled
        self.status_interval_s = status_interval_s
        self.reply_timeout_s = reply_timeout_s
        self.expiry_warning_days = expiry_warning_days
        self._on_alert = on_alert
        self._client_dir = client_dir
        self._prefix = f"dot1x[{s.interface}]"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctrl: WpaCtrl | None = None
        self._failure_detail: str | None = None  # why the current EAP exchange fails
        self._server_verified = False  # the unit accepted the server in the current exchange

        self._cond = threading.Condition()
        # --- protected by self._cond ---
        self._state = PortState.CONNECTING if enabled else PortState.DISABLED
        self._reason = "supervisor not started" if enabled else "802.1X disabled in configuration"
        self._since_wall = dt.datetime.now(dt.UTC)
        self._previous: PortState | None = None
        self._transitions = 0
        self._confirmed_mono = 0.0  # when STATUS last confirmed the state (monotonic)
        self._status: dict[str, str] = {}
        self._cert: CertificateStatus = {}
        self._cert_checked_mono = -_CERT_RECHECK_S
        self._cert_file: tuple[int, int] | None = None  # supervisor thread only

    @classmethod
    def from_config(
        cls,
        cfg: EdgeConfig,
        *,
        on_alert: AlertCallback | None = None,
        client_dir: Path | None = None,
    ) -> Dot1xSupervisor:
        d = cfg.dot1x
        return cls(
            settings(cfg),
            enabled=d.enabled,
            status_interval_s=d.status_interval_s,
            reply_timeout_s=d.reply_timeout_s,
            expiry_warning_days=d.expiry_warning_days,
            on_alert=on_alert,
            client_dir=client_dir,
        )

    # --- public API (any thread) --------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor thread (does nothing when 802.1X is disabled)."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dot1x-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the socket; the state becomes DISABLED (gate closed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.enabled:
            self._set_state(PortState.DISABLED, "supervisor stopped", alert=False)

    @property
    def state(self) -> PortState:
        with self._cond:
            return self._state

    @property
    def reason(self) -> str:
        with self._cond:
            return self._reason

    def confirmed_age_s(self) -> float:
        """Seconds since STATUS last confirmed the state (infinite before the first time)."""
        with self._cond:
            if not self._confirmed_mono:
                return float("inf")
            return time.monotonic() - self._confirmed_mono

    @property
    def max_confirmation_age_s(self) -> float:
        """Beyond this age a confirmation is stale: the supervisor thread is stuck or dead."""
        return 3 * self.status_interval_s + 2 * self.reply_timeout_s

    def wait_for(self, states: Iterable[PortState], timeout_s: float) -> bool:
        """Block until the state is one of ``states``; False on timeout."""
        wanted = frozenset(states)
        with self._cond:
            return self._cond.wait_for(lambda: self._state in wanted, timeout_s)

    def wait_change(self, timeout_s: float) -> None:
        """Block until the next transition or ``timeout_s``."""
        with self._cond:
            count = self._transitions
            self._cond.wait_for(lambda: self._transitions != count, timeout_s)

    def snapshot(self) -> Dot1xStatus:
        """State, last transition, reason and certificate expiry, for diagnostics (JSON-able)."""
        with self._cond:
            age = time.monotonic() - self._confirmed_mono if self._confirmed_mono else None
            return {
                "enabled": self.enabled,
                "interface": self.settings.interface,
                "identity": self.settings.identity,
                "state": self._state.value,
                "reason": self._reason,
                "since": self._since_wall.isoformat(timespec="seconds"),
                "previous_state": self._previous.value if self._previous else None,
                "transitions": self._transitions,
                "confirmed_age_s": round(age, 3) if age is not None else None,
                "supplicant": {
                    k: self._status[k]
                    for k in (
                        "wpa_state",
                        "Supplicant PAE state",
                        "suppPortStatus",
                        "EAP state",
                        "selectedMethod",
                        "eap_tls_version",
                        "address",
                    )
                    if k in self._status
                },
                "client_certificate": self._cert.copy(),
            }

    # --- supervisor thread --------------------------------------------------------------------

    def _set_state(self, state: PortState, reason: str, *, alert: bool = True) -> None:
        with self._cond:
            old = self._state
            if old is state and self._reason == reason:
                return
            self._reason = reason
            if old is not state:
                self._previous = old
                self._state = state
                self._since_wall = dt.datetime.now(dt.UTC)
                self._transitions += 1
            self._cond.notify_all()
        if old is state:
            log.debug("%s: still %s: %s", self._prefix, state.value, reason)
            return
        level = logging.WARNING if state in (PortState.HELD, PortState.FAILED) else logging.INFO
        log.log(level, "%s: %s -> %s: %s", self._prefix, old.value, state.value, reason)
        if alert and state in (PortState.HELD, PortState.FAILED) and self._on_alert is not None:
            try:
                self._on_alert(Dot1xAlert(state, reason, time.time_ns()))
            except Exception:  # a broken alert sink must not stop the supervision
                log.exception("%s: alert callback failed", self._prefix)

    def _run(self) -> None:
        self._set_state(PortState.CONNECTING, "supervisor started", alert=False)
        started = time.monotonic()
        ever_connected = False
        while not self._stop.is_set():
            try:
                if self._ctrl is None:
                    self._connect()
                    ever_connected = True
                self._serve()
            except Dot1xError as exc:
                self._disconnect()
                if not ever_connected and time.monotonic() - started < self.startup_grace_s:
                    # At boot edged may come up before wpa_supplicant: not yet a failure.
                    self._set_state(PortState.CONNECTING, f"waiting for the supplicant: {exc}")
                    self._stop.wait(min(self.status_interval_s, 0.5))
                    continue
                self._set_state(PortState.FAILED, f"lost the supplicant: {exc}")
                self._stop.wait(self.status_interval_s)
        self._disconnect()

    def _connect(self) -> None:
        ctrl = WpaCtrl(
            self.settings.ctrl_socket,
            client_dir=self._client_dir,
            timeout_s=self.reply_timeout_s,
        )
        ctrl.open()
        try:
            ctrl.attach()
        except Dot1xError:
            ctrl.close()
            raise
        self._ctrl = ctrl
        log.info("%s: attached to %s", self._prefix, self.settings.ctrl_socket)

    def _disconnect(self) -> None:
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None

    def _serve(self) -> None:
        """Poll and handle events until stopped; raises Dot1xError when the supplicant is lost."""
        assert self._ctrl is not None
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._poll()
                next_poll = now + self.status_interval_s
            line = self._ctrl.next_event(min(next_poll - time.monotonic(), 0.25))
            if line is None:
                continue
            if self._handle_event(line):
                next_poll = 0.0  # confirm with STATUS now

    def _handle_event(self, line: str) -> bool:
        """Remember what an event says; True when the port state may have changed."""
        event = interpret_event(line)
        log.debug("%s: event %s", self._prefix, line)
        if event.kind is EventKind.STARTED:
            self._failure_detail = None
            self._server_verified = False
            return True
        if event.kind is EventKind.SERVER_VERIFIED:
            self._server_verified = True
            return False
        if event.kind is EventKind.DETAIL:
            if self._failure_detail is None:  # the first reason is the most specific
                self._failure_detail = event.detail
            return False
        if event.kind is EventKind.TERMINATING:
            raise Dot1xError(event.detail)
        return event.kind in (EventKind.SUCCESS, EventKind.FAILURE, EventKind.STATE)

    def _poll(self) -> None:
        assert self._ctrl is not None
        status = parse_status(self._ctrl.request("STATUS"))
        state, reason = state_from_status(status)
        now = time.monotonic()
        cert: CertificateStatus | None = None
        try:
            st = self.settings.client_cert.stat()
            cert_file: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except OSError:
            cert_file = None
        # Re-read on a new file (an installed renewal) or periodically (days left change).
        if cert_file != self._cert_file or now - self._cert_checked_mono >= _CERT_RECHECK_S:
            self._cert_file = cert_file
            cert = certificate_summary(
                self.settings.client_cert, self.settings.server_ca, self.expiry_warning_days
            )
            self._cert_checked_mono = now
            if cert.get("warning") and cert.get("warning") != self._cert.get("warning"):
                log.warning("%s: %s", self._prefix, cert["warning"])  # once per new warning
        with self._cond:
            self._status = status
            self._confirmed_mono = now
            if cert is not None:
                self._cert = cert
            cert_now = self._cert
        if state is PortState.HELD and status.get("Supplicant PAE state") != "LOGOFF":
            details = [self._failure_detail] if self._failure_detail else []
            if not details and self._server_verified:
                details.append(SERVER_REJECTED_UNIT)
            # What the unit can tell about its own certificate, since the server will not say.
            if cert_now.get("expired") or not cert_now.get("present", True):
                details.append(str(cert_now.get("warning")))
            if cert_now.get("chains_to_ca") is False:
                details.append(
                    "the unit certificate does not chain to the configured CA "
                    f"{self.settings.server_ca} (issued by another CA?)"
                )
            if details:
                reason = f"{reason}: {'; '.join(details)}"
        self._set_state(state, reason)
