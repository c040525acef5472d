"""What wpa_supplicant's STATUS replies and events mean for the port: pure functions.

This is the one place where wpa_supplicant's vocabulary (PAE states, ``suppPortStatus``,
``CTRL-EVENT-*`` lines, OpenSSL verification strings) is translated into the supervisor's
:class:`PortState` and into reasons a maintenance technician can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class PortState(StrEnum):
    """State of the unit's 802.1X port, as the supervisor knows it."""

    DISABLED = "disabled"  # 802.1X is off in the configuration
    CONNECTING = "connecting"  # the supplicant is (re)authenticating; port not authorised
    AUTHENTICATED = "authenticated"  # the switch authorised the port: the uplink may send
    HELD = "held"  # authentication failed or was logged off; the supplicant waits to retry
    FAILED = "failed"  # the supervisor has no working supplicant to talk to


def parse_status(text: str) -> dict[str, str]:
    """``key=value`` lines of a STATUS reply as a dict (keys may contain spaces)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def state_from_status(status: dict[str, str]) -> tuple[PortState, str]:
    """The port state a STATUS reply shows, with the reason in words.

    ``suppPortStatus=Authorized`` is what counts: during a periodic re-authentication the PAE
    machine passes through AUTHENTICATING while the switch keeps the port open, and the gate
    must not flap then. LOGOFF and HELD override it (the port is being given up).
    """
    pae = status.get("Supplicant PAE state")
    port = status.get("suppPortStatus")
    eap = status.get("EAP state", "?")
    if pae is None:
        wpa_state = status.get("wpa_state", "unknown")
        return PortState.CONNECTING, f"supplicant not authenticating yet (wpa_state={wpa_state})"
    if pae == "LOGOFF":
        return PortState.HELD, "the supplicant logged off the port (EAPOL-Logoff)"
    if pae in ("HELD", "S_FORCE_UNAUTH"):
        return PortState.HELD, f"authentication failed (PAE {pae}, EAP {eap})"
    if port == "Authorized":
        method = status.get("selectedMethod", "EAP")
        tls = status.get("eap_tls_version")
        return PortState.AUTHENTICATED, f"port authorised ({method}{', ' + tls if tls else ''})"
    return PortState.CONNECTING, f"authenticating (PAE {pae}, EAP {eap}, port {port or '?'})"


#: Why an exchange fails after the unit accepted the server: the server or its policy refused
#: the unit, and (hostapd, FreeRADIUS) it sends EAP-Failure without a TLS alert saying why.
SERVER_REJECTED_UNIT = (
    "the RADIUS server rejected the unit (certificate revoked, expired or from a CA it does not "
    "trust, or an identity its policy refuses; its log says which)"
)


class EventKind(StrEnum):
    STARTED = "started"  # a new EAP exchange began: earlier failure details are stale
    SUCCESS = "success"
    FAILURE = "failure"
    DETAIL = "detail"  # why an exchange is failing (certificate error, TLS alert)
    SERVER_VERIFIED = "server_verified"  # the unit accepted the RADIUS server's certificate
    TERMINATING = "terminating"  # the supplicant is exiting
    STATE = "state"  # something that changes the port state: confirm with STATUS
    OTHER = "other"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    detail: str = ""


_FIELD_RE = re.compile(r"(\w+)=(?:'([^']*)'|(\S+))")

# OpenSSL's verification messages as a technician reads them (the remote end is the server).
_REMOTE_ALERTS = {
    "certificate expired": "the RADIUS server refused the unit certificate: it has expired",
    "certificate revoked": "the RADIUS server refused the unit certificate: it is revoked",
    "unknown CA": "the RADIUS server refused the unit certificate: issued by a CA it does not "
    "trust",
    "bad certificate": "the RADIUS server refused the unit certificate (bad certificate)",
    "unsupported certificate": "the RADIUS server refused the unit certificate (unsupported)",
    "certificate unknown": "the RADIUS server refused the unit certificate (certificate unknown)",
}


def _fields(line: str) -> dict[str, str]:
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _FIELD_RE.finditer(line)
    }


def interpret_event(line: str) -> Event:
    """Classify one event line (without its ``<N>`` tag)."""
    name = line.split(" ", 1)[0]
    if name == "CTRL-EVENT-EAP-STARTED":
        return Event(EventKind.STARTED)
    if name == "CTRL-EVENT-EAP-SUCCESS":
        return Event(EventKind.SUCCESS)
    if name == "CTRL-EVENT-EAP-FAILURE":
        return Event(EventKind.FAILURE, "EAP authentication failed")
    if name == "CTRL-EVENT-TERMINATING":
        return Event(EventKind.TERMINATING, "the supplicant is terminating")
    if name == "CTRL-EVENT-EAP-TLS-CERT-ERROR":
        f = _fields(line)
        return Event(
            EventKind.DETAIL,
            f"the unit refused the RADIUS server's certificate ({f.get('err', 'error')}; "
            f"depth {f.get('depth', '?')}, subject {f.get('subject', '?')})",
        )
    if name == "CTRL-EVENT-EAP-STATUS":
        f = _fields(line)
        status, param = f.get("status", ""), f.get("parameter", "")
        if status == "remote TLS alert":
            return Event(
                EventKind.DETAIL,
                _REMOTE_ALERTS.get(param, f"the RADIUS server ended TLS with alert {param!r}"),
            )
        if status == "local TLS alert":
            return Event(EventKind.DETAIL, f"the unit ended TLS with alert {param!r}")
        if status == "remote certificate verification":
            if param == "success":
                return Event(EventKind.SERVER_VERIFIED)
            return Event(EventKind.DETAIL, f"the unit refused the RADIUS server: {param}")
        return Event(EventKind.OTHER)
    if name in ("CTRL-EVENT-CONNECTED", "CTRL-EVENT-DISCONNECTED", "CTRL-EVENT-EAP-METHOD"):
        return Event(EventKind.STATE)
    return Event(EventKind.OTHER)
