"""Analytics events: canonical JSON signed with the unit's Ed25519 key, optional snapshot.

An event is a JSON object (the *body*) serialised canonically (sorted keys, no spaces, UTF-8),
signed with the unit signing key (``<data_dir>/keys/unit-signing.pem``, the key that also signs
sealed segments). The wire form, published to MQTT and handed to the uplink, is::

    {"event": BODY, "signature": BASE64, "key_id": "16 hex digits"}

A snapshot is a JPEG of the *masked*, downscaled frame the analytics process analysed; it is
never in the wire form: the body carries its SHA-256 and size, and the JPEG itself travels to
the vault, which seals it like a segment. A snapshot can therefore only be seen by those who
can open sealed footage, and a verified event proves which snapshot belongs to it.

Events carry counts, zones and anonymous track numbers only: no identity, no face features.

The analytics process never signs: it produces :class:`EventDraft` s (plain data, no key), sends
them to edged as JSON (:mod:`edge.analytics.channel`), and edged, which alone holds the key,
checks them and signs them with :meth:`EventSigner.seal`, filling in what the child has no say
over (unit, camera, event id, emission time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from PIL import Image

from edge.errors import IntegrityError
from edge.identity.unitkeys import key_id, public_raw

SCHEMA_VERSION = 1


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def iso_time(wall_ns: int) -> str:
    """ISO 8601 UTC with milliseconds (the form FIWARE data models use)."""
    dt = datetime.fromtimestamp(wall_ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class SignedEvent:
    body: dict[str, Any]
    signature: bytes
    key_id: str
    snapshot: bytes | None = None
    """JPEG of the masked frame, for the vault to seal; never part of the wire form."""

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def camera(self) -> str:
        return str(self.body["camera"])

    def wire(self) -> bytes:
        """The published form (JSON, UTF-8)."""
        doc = {
            "event": self.body,
            "signature": base64.b64encode(self.signature).decode(),
            "key_id": self.key_id,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event as the analytics engine found it, before edged signs it."""

    category: str
    """"count", "alert" or "tamper"."""
    kind: str
    rule: str
    wall_ns: int
    frame_index: int
    details: dict[str, Any]
    state: str | None = None
    """"raised"/"cleared" for conditions that end (tamper)."""
    snapshot: bytes | None = None
    """JPEG of the masked frame the event is about."""
    interval_start_ns: int | None = None
    """Count events: wall-clock start of the counted interval (``wall_ns`` is its end)."""


class EventSigner:
    """Builds and signs event bodies. Used by edged only (never by the analytics process); any
    thread may call it: the key is immutable and signing keeps no state."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, unit_id: str) -> None:
        self._key = key
        self.unit_id = unit_id
        self.key_id = key_id(public_raw(key.public_key()))

    def sign(
        self,
        *,
        camera: str,
        category: str,
        kind: str,
        rule: str,
        wall_ns: int,
        frame_index: int,
        details: dict[str, Any],
        state: str | None = None,
        snapshot: bytes | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SignedEvent:
        """``category`` is "count", "alert" or "tamper"; ``state`` "raised"/"cleared" for
        conditions that end (tamper)."""
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "id": str(uuid.uuid4()),
            "unit": self.unit_id,
            "camera": camera,
            "category": category,
            "kind": kind,
            "rule": rule,
            "time": iso_time(wall_ns),
            "wall_ns": wall_ns,
            "frame_index": frame_index,
            "emitted_ns": time.time_ns(),
            "details": details,
        }
        if state is not None:
            body["state"] = state
        if snapshot is not None:
            body["snapshot"] = {
                "type": "image/jpeg",
                "sha256": hashlib.sha256(snapshot).hexdigest(),
                "size": len(snapshot),
            }
        if extra:
            body.update(extra)
        return SignedEvent(body, self._key.sign(canonical(body)), self.key_id, snapshot)

    def seal(
        self, draft: EventDraft, *, camera: str, extra: dict[str, Any] | None = None
    ) -> SignedEvent:
        """Sign a draft of the analytics process as an event of ``camera``."""
        return self.sign(
            camera=camera,
            category=draft.category,
            kind=draft.kind,
            rule=draft.rule,
            wall_ns=draft.wall_ns,
            frame_index=draft.frame_index,
            details=draft.details,
            state=draft.state,
            snapshot=draft.snapshot,
            extra=extra,
        )


def verify_wire(data: bytes, public_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """The body of a wire-form event after checking its signature; :class:`IntegrityError`
    when it is malformed, signed by another key, or altered."""
    try:
        doc = json.loads(data)
        body = doc["event"]
        signature = base64.b64decode(doc["signature"], validate=True)
        claimed = doc["key_id"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise IntegrityError(f"event is not a signed event document: {exc}") from None
    if not isinstance(body, dict):
        raise IntegrityError("event body is not a JSON object")
    if claimed != key_id(public_raw(public_key)):
        raise IntegrityError(f"event signed by key {claimed}, not by this unit's key")
    try:
        public_key.verify(signature, canonical(body))
    except InvalidSignature:
        raise IntegrityError("event signature does not verify: the event was altered") from None
    return body


def verify_snapshot(body: dict[str, Any], jpeg: bytes) -> None:
    """Check that ``jpeg`` is the snapshot a verified event body refers to."""
    ref = body.get("snapshot")
    if not isinstance(ref, dict) or ref.get("sha256") != hashlib.sha256(jpeg).hexdigest():
        raise IntegrityError("snapshot does not match the event")


def jpeg_snapshot(rgb: npt.NDArray[np.uint8], *, quality: int = 80) -> bytes:
    """JPEG of an RGB frame that has already been masked (the analytics process never has any
    other kind)."""
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()
