"""The uplink protocol shared by the unit's client and the CSU receiver (docs/UPLINK.md).

HTTP/1.1 over TLS 1.3 with client certificates on both ends, so standard tools (curl,
``openssl s_client``, an L4 balancer, a TLS-terminating proxy) can observe and carry it.
A sealed segment travels byte-identical to what the vault holds; TLS is the second layer.

* ``PUT  /v1/units/{unit}/cameras/{camera}/segments/{sequence}`` body: one sealed segment.
  201 stored, 200 already held with the same bytes (idempotent retry), 4xx refused (see
  :data:`REFUSALS`); a 4xx is final for that item, a 5xx or a broken connection is retried.
* ``PUT  /v1/units/{unit}/cameras/{camera}/epochs/{epoch}`` body: one epoch envelope (the
  HPKE-sealed data key the segments of that epoch need to be opened); same answers.
* ``PUT  /v1/units/{unit}/cameras/{camera}/mask-sets/{digest}`` body: the unit's signed
  ``mask-set`` audit record (one line of its log: the polygons the camera's segments commit
  to by ``digest``), so that the CSU's evidence bundles can say which masks were in force.
  201 stored, 200 already held, 4xx refused.
* ``POST /v1/units/{unit}/events`` body: one signed event (JSON, see
  :mod:`edge.uplink.event_checks`).
* ``PUT  /v1/units/{unit}/events/{event}/snapshot`` body: the sealed snapshot (``.snp``,
  :mod:`edge.vault.snapshots`) the signed event names, sent once the event is accepted. 201
  stored, 200 already held with the same bytes, 404 no such event held (or a CSU that keeps
  none), 409 other bytes held, 4xx refused.
* ``PUT  /v1/units/{unit}/signing-certificate`` body: the unit's evidence certificate and its
  chain (PEM, ``application/pem-certificate-chain``), presented once per connection before
  anything else, so that the receiver learns the signing key from the CA alone. 201 stored,
  200 already held, 422 refused (the reason says why), 409 older than the one held, 404 the
  receiver trusts pinned keys only.
* ``GET  /v1/units/{unit}/cursor``: what the CSU holds for this unit, per camera
  (``{"cameras": {cam: {"first": n, "last": n, "count": n, "gaps": [[a, b], …]}}}``).
"""

from __future__ import annotations

import re

API_PREFIX = "/v1"
SEGMENT_CONTENT_TYPE = "application/vnd.edge.sealed-segment"
EVENT_CONTENT_TYPE = "application/json"
ENVELOPE_CONTENT_TYPE = "application/vnd.edge.epoch-envelope"
GAP_CONTENT_TYPE = "application/vnd.edge.gap-record"
MASK_SET_CONTENT_TYPE = "application/vnd.edge.mask-set+json"
SNAPSHOT_CONTENT_TYPE = "application/vnd.edge.sealed-snapshot"
#: RFC 8555's media type for a PEM leaf certificate followed by its chain.
CERTIFICATE_CONTENT_TYPE = "application/pem-certificate-chain"

#: The largest sealed segment a receiver accepts by default (a 10 s segment at 50 Mb/s).
DEFAULT_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
#: The largest event body.
MAX_EVENT_BYTES = 64 * 1024
#: The largest sealed snapshot: the JPEG bound of :mod:`edge.vault.snapshots` (8 MiB) and room
#: for its header (recipients) and signature.
MAX_SNAPSHOT_BYTES = (8 << 20) + 64 * 1024

#: Response header carrying the SHA-256 (hex) of the stored bytes, so a client can check that
#: what the CSU holds is exactly what it sent.
DIGEST_HEADER = "X-Edge-Sha256"

ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")

#: Status codes a receiver answers with, and what each means to the client.
REFUSALS: dict[int, str] = {
    400: "malformed: the body is not a sealed segment, or its header disagrees with the URL",
    403: "the client certificate's unit is not enrolled (no trusted signing key: the reason says "
    "why), is revoked, or is not this URL's unit",
    409: "conflict: other bytes are stored under this sequence, or the hash chain breaks",
    411: "a body length is required",
    413: "the body is larger than the receiver accepts",
    415: "wrong content type",
    422: "the signature does not verify with the unit's enrolled key",
}


def segment_path(unit_id: str, camera_id: str, sequence: int) -> str:
    return f"{API_PREFIX}/units/{unit_id}/cameras/{camera_id}/segments/{sequence}"


def envelope_path(unit_id: str, camera_id: str, epoch_hex: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/cameras/{camera_id}/epochs/{epoch_hex}"


def gap_path(unit_id: str, camera_id: str, first: int, last: int) -> str:
    return f"{API_PREFIX}/units/{unit_id}/cameras/{camera_id}/gaps/{first}-{last}"


def mask_set_path(unit_id: str, camera_id: str, digest_hex: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/cameras/{camera_id}/mask-sets/{digest_hex}"


def events_path(unit_id: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/events"


def snapshot_path(unit_id: str, event_id: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/events/{event_id}/snapshot"


def signing_certificate_path(unit_id: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/signing-certificate"


def cursor_path(unit_id: str) -> str:
    return f"{API_PREFIX}/units/{unit_id}/cursor"


def commands_path(unit_id: str) -> str:
    """GET: signed commands waiting for the unit; DELETE …/NONCE once the unit judged one."""
    return f"{API_PREFIX}/units/{unit_id}/commands"


def crl_path(unit_id: str) -> str:
    """GET: the CRL the CSU checks units against, signed by the city's CA
    (edge/identity/revocation.py keeps it on the unit)."""
    return f"{API_PREFIX}/units/{unit_id}/crl"


def config_path(unit_id: str) -> str:
    """GET: the signed configuration documents the CSU offers this unit (edge/signedconfig.py)."""
    return f"{API_PREFIX}/units/{unit_id}/config"


def update_path(unit_id: str) -> str:
    """GET: the update bundle the CSU offers (JSON); ``/bundle``: its bytes."""
    return f"{API_PREFIX}/units/{unit_id}/update"


def is_final_refusal(status: int) -> bool:
    """A 4xx will not change on retry: the item is set aside instead of blocking the queue."""
    return 400 <= status < 500 and status not in (408, 429)
