"""The city's certificate revocation list as the unit holds it, for the certificates that give
it orders: operators' output commands (:mod:`edge.outputs.commands`) and the configuration
signer (:mod:`edge.signedconfig`).

The CSU serves the CRL it checks units against (``GET /v1/units/{unit}/crl``); the uplink
fetches it at each connection and every ``uplink.config_poll_s``. The transport is not what
vouches for it: a CRL is kept only when the city's CA (``ca.pem``, the anchors the unit already
checks those certificates with) signed it, and only when it is newer than the one held — an
older CRL, replayed by an impostor or a CSU restored from backup, could un-revoke an operator.
It is written atomically beside the uplink's state (``<data_dir>/uplink/city-crl.pem``) and
survives restarts and updates.

A CRL past its nextUpdate stays in force (a revocation never lapses) and is reported stale in
``edgectl status``; a unit that never received one checks nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import EnrolmentError
from ..fsutil import write_atomic
from . import pki

#: A CRL larger than this is refused unread (the city's lists hold thousands of entries at most).
MAX_CRL_BYTES = 4 << 20
#: A CRL issued this far in the unit's future is refused (a clock far behind, or a forgery's).
MAX_FUTURE = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class CrlStatus:
    """What ``edgectl status`` shows of the CRL in force."""

    this_update: str | None
    next_update: str | None
    revoked: int
    stale: bool
    """Past its nextUpdate: still in force, but the unit has not heard of newer revocations."""

    def as_dict(self) -> dict[str, object]:
        return {
            "this_update": self.this_update,
            "next_update": self.next_update,
            "revoked": self.revoked,
            "stale": self.stale,
        }


def path_in(data_dir: Path) -> Path:
    return data_dir / "uplink" / "city-crl.pem"


class CityCrl:
    """Thread-safe: the uplink thread offers CRLs, the command and configuration checks read
    the one in force; ``_lock`` guards the CRL and its file together."""

    def __init__(self, path: Path, ca_certs: list[x509.Certificate]) -> None:
        self.path = path
        self.ca_certs = ca_certs
        self._lock = threading.Lock()
        self._crl: x509.CertificateRevocationList | None = None
        self.damaged: str | None = None
        """Why the CRL kept on disk was not loaded (then the next good offer replaces it)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.damaged = f"{path}: {exc.strerror}"
            return
        try:
            self._crl = self._checked(data)
        except EnrolmentError as exc:
            self.damaged = f"{path}: {exc}"

    def _checked(self, data: bytes) -> x509.CertificateRevocationList:
        if len(data) > MAX_CRL_BYTES:
            raise EnrolmentError(f"a CRL of {len(data)} bytes is larger than any city's")
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
        except ValueError as exc:
            raise EnrolmentError(f"not a CRL ({exc})") from None
        issuer = next((c for c in self.ca_certs if c.subject == crl.issuer), None)
        if issuer is None:
            raise EnrolmentError(f"issued by {crl.issuer.rfc4514_string()}, not by the city's CA")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise EnrolmentError("its signature does not verify against the city's CA")
        return crl

    def offer(self, data: bytes, now: dt.datetime) -> str | None:
        """Keep ``data`` if it is the city CA's and newer than the CRL in force: a line for the
        audit log when it was taken, None when it is the one held already. Raises
        :class:`EnrolmentError` (the reason) when it is refused; the CRL in force stays."""
        crl = self._checked(data)
        if crl.last_update_utc > now + MAX_FUTURE:
            raise EnrolmentError(
                f"issued {_minute(crl.last_update_utc)}, in this unit's future (clock?)"
            )
        with self._lock:
            held = self._crl
            if held is not None:
                if crl.last_update_utc < held.last_update_utc:
                    issued, kept = _minute(crl.last_update_utc), _minute(held.last_update_utc)
                    raise EnrolmentError(
                        f"older than the CRL in force (issued {issued}, held {kept}): a "
                        "replayed list could un-revoke a certificate"
                    )
                if crl.public_bytes(Encoding.DER) == held.public_bytes(Encoding.DER):
                    return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, crl.public_bytes(Encoding.PEM), mode=0o644)
            self._crl = crl
            self.damaged = None
        revoked = len(list(crl))
        return f"{revoked} revoked certificate(s), issued {_minute(crl.last_update_utc)}"

    def problem(self, cert: x509.Certificate, at: dt.datetime, *, before: str) -> str | None:
        """Why ``cert`` is revoked for an act at ``at`` by the CRL in force, or None."""
        with self._lock:
            crl = self._crl
        if crl is None:
            return None
        return pki.revocation_problem(cert, self.ca_certs, [crl], at, before=before)

    def status(self, now: dt.datetime) -> CrlStatus | None:
        with self._lock:
            crl = self._crl
        if crl is None:
            return None
        nxt = crl.next_update_utc
        return CrlStatus(
            this_update=crl.last_update_utc.isoformat(),
            next_update=nxt.isoformat() if nxt is not None else None,
            revoked=len(list(crl)),
            stale=nxt is not None and now > nxt,
        )


def _minute(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
