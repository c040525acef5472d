"""Events on the uplink: the firmware's one signed event format (:mod:`edge.analytics.events`).

The wire form ``{"event": BODY, "signature": BASE64, "key_id": HEX}`` travels unchanged from
the unit to the CSU and on to MQTT, so anyone downstream can re-check it with the unit's key.
Here: the structural checks the receiver makes before verifying (a malformed document is a
``400``, a signature that fails is a ``422``), and the verification itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..analytics.events import verify_wire
from ..errors import IntegrityError
from .protocol import ID_RE

_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
#: Body fields the receiver needs: who sent it, which camera (or "unit"), a unique id.
REQUIRED = ("id", "unit", "camera")


def parse_event(wire: bytes) -> dict[str, Any]:
    """The body of a wire event, checked for shape only; :class:`IntegrityError` if malformed."""
    try:
        doc = json.loads(wire)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("event is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"event", "signature", "key_id"}:
        raise IntegrityError('event must be {"event": {...}, "signature": "…", "key_id": "…"}')
    body = doc["event"]
    if not isinstance(body, dict):
        raise IntegrityError("event body is not a JSON object")
    for name in REQUIRED:
        if not isinstance(body.get(name), str):
            raise IntegrityError(f"event field {name!r} missing or not a string")
    if not _EVENT_ID.match(body["id"]):
        raise IntegrityError("event id must be 1-128 letters, digits, dots, dashes, underscores")
    # The unit and camera name files and MQTT topics downstream: a camera called "#" or "+"
    # (MQTT wildcards) or "../x" must be refused here, before anything is stored.
    for name in ("unit", "camera"):
        if not ID_RE.match(body[name]):
            raise IntegrityError(
                f"event field {name!r} must be an identifier (lower-case letters, digits and "
                f"dashes, at most 63 characters), not {body[name][:80]!r}"
            )
    return body


def verify_event(wire: bytes, key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Shape and signature; :class:`IntegrityError` says what is wrong."""
    parse_event(wire)
    return verify_wire(wire, key)
