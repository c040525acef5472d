"""The unit presents its evidence-signing certificate to the CSU, once per connection.

Enrolment has the city's video CA certify the unit's Ed25519 signing key
(``<data_dir>/keys/unit-signing.crt``, :mod:`edge.identity.evidence`). Sending it over the
mutual-TLS channel before anything else lets the receiver learn and trust the key from the CA
alone: a newly enrolled unit needs no manual step at the CSU. Once per connection, not once
ever, because the CSU's registry may have been rebuilt or moved to another receiver; the
receiver answers 200 without writing anything when it already holds the same certificate.

A refusal never stops the uplink: a CSU that pins the unit's key by hand still accepts its
segments, and one that does not says why on every request (403 with the reason), which
``edgectl status`` and ``edgectl uplink check`` show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from edge.identity import evidence
from edge.identity.unitkeys import SIGNING_CERT_NAME, keys_dir_of, load_signing_public_key

from ..errors import EdgeError
from . import protocol

log = logging.getLogger(__name__)

#: ``request(method, path, body, content_type) -> (status, body)`` on an established connection.
Request = Callable[[str, str, bytes | None, str | None], tuple[int, bytes]]


def certificate_to_present(data_dir: Path) -> bytes | None:
    """The PEM of ``unit-signing.crt`` when it certifies the current signing key, else None (no
    certificate yet, or a stale one left from a previous key: the CSU would refuse it)."""
    keys = keys_dir_of(data_dir)
    path = keys / SIGNING_CERT_NAME
    try:
        key = load_signing_public_key(keys)
    except EdgeError:
        return None
    if not evidence.certifies(path, key):
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def present(request: Request, unit_id: str, data_dir: Path) -> str:
    """Send the certificate if there is one; what happened, in words (for the state reason)."""
    pem = certificate_to_present(data_dir)
    if pem is None:
        return "no evidence-signing certificate to present"
    status, body = request(
        "PUT", protocol.signing_certificate_path(unit_id), pem, protocol.CERTIFICATE_CONTENT_TYPE
    )
    if status in (200, 201):
        return "signing certificate " + ("accepted" if status == 201 else "already held")
    if status == 404:
        return "the CSU trusts pinned keys only"
    reason = _error(body)
    if status >= 500 or not protocol.is_final_refusal(status):
        # Transient: the caller's backoff handles the connection, not this answer.
        log.warning("uplink[%s] CSU could not take the signing certificate: %d", unit_id, status)
        return f"signing certificate not taken now ({status})"
    log.error("uplink[%s] CSU refused the signing certificate: %d %s", unit_id, status, reason)
    return f"signing certificate refused: {reason}"


class Presenter:
    """Presents the certificate at the start of each connection, and again on the same
    connection when the file changes (``edgectl enroll --install`` of a renewed certificate),
    so a long-lived connection never outlives the certificate it started with.

    Used by the uplink thread only (no lock).
    """

    def __init__(self, unit_id: str, data_dir: Path) -> None:
        self.unit_id = unit_id
        self.data_dir = data_dir
        self._path = keys_dir_of(data_dir) / SIGNING_CERT_NAME
        self._presented: tuple[int, int] | None = None
        self.last = "not presented yet"

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self._path.stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def on_connect(self, request: Request) -> str:
        self._presented = self._stamp()
        self.last = present(request, self.unit_id, self.data_dir)
        return self.last

    def if_changed(self, request: Request) -> None:
        if self._stamp() != self._presented:
            self._presented = self._stamp()
            self.last = present(request, self.unit_id, self.data_dir)
            log.info("uplink[%s] certificate file changed: %s", self.unit_id, self.last)


def _error(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    return str(doc.get("error", "")) if isinstance(doc, dict) else str(doc)[:200]
