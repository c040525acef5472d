"""Signed events as they travel to the CSU (``POST /v1/units/{unit}/events``).

Wire form: a JSON object ``{"event": {...}, "signature": "<base64>"}``. The signature is the
unit's Ed25519 signature over ``b"edge-event-v1\\0"`` followed by the event's canonical JSON
(keys sorted, no spaces, UTF-8), so any JSON library can re-check it. Required event fields:
``id`` (unique per unit, an identifier), ``unit_id``, ``camera_id``, ``type`` and ``wall_ns``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError

_DOMAIN = b"edge-event-v1\0"
_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REQUIRED = {"id": str, "unit_id": str, "camera_id": str, "type": str, "wall_ns": int}


def canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_event(event: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> bytes:
    """The wire form of ``event`` signed with the unit key."""
    check_fields(event)
    signature = key.sign(_DOMAIN + canonical(event))
    return json.dumps({"event": event, "signature": base64.b64encode(signature).decode()}).encode()


def check_fields(event: dict[str, Any]) -> None:
    for name, kind in REQUIRED.items():
        value = event.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IntegrityError(f"event field {name!r} missing or not {kind.__name__}")
    if not _EVENT_ID.match(event["id"]):
        raise IntegrityError("event id must be 1-128 letters, digits, dots, dashes, underscores")


def parse_event(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The event and its signature from a wire event; :class:`IntegrityError` if malformed."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("event is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"event", "signature"}:
        raise IntegrityError('event must be {"event": {...}, "signature": "..."}')
    event, sig_text = doc["event"], doc["signature"]
    if not isinstance(event, dict) or not isinstance(sig_text, str):
        raise IntegrityError("event must be an object and signature a string")
    check_fields(event)
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("signature is not base64") from None
    return event, signature


def check_signature(event: dict[str, Any], signature: bytes, key: ed25519.Ed25519PublicKey) -> None:
    try:
        key.verify(signature, _DOMAIN + canonical(event))
    except InvalidSignature:
        raise IntegrityError(f"event {event['id']}: bad signature") from None


def verify_event(body: bytes, key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Parse and authenticate a wire event; :class:`IntegrityError` says what is wrong."""
    event, signature = parse_event(body)
    check_signature(event, signature, key)
    return event
