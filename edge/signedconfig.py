"""Configuration documents signed by the city, applied by units (and how the CSU signs them).

A document changes a unit's masks, analytics rules, retention or uplink settings without SSH:
the city signs it with its configuration-signing key (``edge/identity/configsigning.py``), the
CSU offers it over the mutual-TLS uplink (or an installer brings it: ``edgectl config apply``),
and the unit checks, in this order, before anything changes:

1. the signer's certificate: the configuration-signing profile, chaining to the city's CA the
   unit pinned at enrolment (``keys/ca.pem``), valid now;
2. the signature (ECDSA P-256, SHA-256) over the document's exact bytes;
3. the scope: this unit's id, or one of its groups (``unit.groups``);
4. the version: above the last one applied for that scope (kept durably), so an older or
   replayed document is refused;
5. the settings: only the keys below, and the configuration they make passes the schema.

The envelope (JSON)::

    {"format": "edge-signed-config-v1", "document": "<base64 of the document's bytes>",
     "signature": "<base64 DER ECDSA>", "chain": "<PEM: the signer, then intermediates>"}

and the document inside it (canonical JSON: sorted keys, no spaces)::

    {"format": "edge-config-v1", "version": 7, "scope": {"unit": "cam-nord-0042"}
     | {"group": "district-nord"}, "issued_at": "2026-11-30T09:00:00Z", "settings": {...}}

The settings are laid over the unit's files (group documents first, by name, then the unit's
own): tables merge key by key; a camera's ``privacy_masks`` are the document's masks plus any
the unit's files hold besides (the installer may add masks, never remove them: see
:func:`mask_shrinkage`). Removing or shrinking a mask therefore takes a signed document.
Pure, apart from :class:`SignedStore` (the applied documents on the data partition).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edge.config import EdgeConfig, PrivacyMaskConfig
from edge.errors import EdgeError
from edge.fsutil import write_atomic
from edge.identity import configsigning
from edge.identity.revocation import CityCrl

ENVELOPE_FORMAT = "edge-signed-config-v1"
DOCUMENT_FORMAT = "edge-config-v1"
_DOMAIN = b"edge-config-signature-v1\0"
MAX_ENVELOPE_BYTES = 1 << 20

#: What a document may set, per section (``cameras`` entries: ``id`` and ``privacy_masks``).
#: Nothing naming a file on the unit, its identity, its keys or where it sends video.
ALLOWED = {
    "vault": {"retention_days", "max_bytes", "min_free_percent", "epoch_seconds"},
    "uplink": {
        "bandwidth_kbps",
        "backfill_share",
        "live_window_s",
        "connect_timeout_s",
        "request_timeout_s",
        "backoff_initial_s",
        "backoff_max_s",
    },
    "analytics": {"enabled", "rate_fps", "width", "motion_threshold", "snapshots", "cameras"},
}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")


class SignedConfigError(EdgeError, ValueError):
    """A signed configuration document refused; nothing changed (the message says why)."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def config_digest(cfg: EdgeConfig) -> str:
    """SHA-256 of a configuration in effect (its canonical JSON): what the audit log and the
    CSU's fleet view compare."""
    return hashlib.sha256(canonical(cfg.model_dump(mode="json"))).hexdigest()


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # "unit" | "group"
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def as_json(self) -> dict[str, str]:
        return {self.kind: self.name}

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``unit:ID`` or ``group:NAME`` (command lines)."""
        kind, _, name = text.partition(":")
        if kind not in ("unit", "group") or not _ID_RE.match(name):
            raise SignedConfigError(f"scope {text!r}: give unit:UNIT-ID or group:GROUP")
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Verified:
    """A document that passed every check, ready to apply."""

    scope: Scope
    version: int
    issued_at: str
    settings: dict[str, Any]
    signer: str
    envelope: bytes


# --- signing (the CSU's side) -----------------------------------------------------------------


def check_settings(settings: Any) -> dict[str, Any]:
    """The settings, when every key is one a document may set; else the refusal."""
    if not isinstance(settings, dict):
        raise SignedConfigError("settings: a table")
    for section, value in settings.items():
        if section == "cameras":
            if not isinstance(value, list):
                raise SignedConfigError("settings.cameras: a list of camera tables")
            for i, cam in enumerate(value):
                if (
                    not isinstance(cam, dict)
                    or set(cam) - {"id", "privacy_masks"}
                    or "id" not in cam
                ):
                    raise SignedConfigError(
                        f"settings.cameras[{i}]: only id and privacy_masks may be set"
                    )
                for j, mask in enumerate(cam.get("privacy_masks", [])):
                    try:
                        PrivacyMaskConfig.model_validate(mask)
                    except ValueError as exc:
                        raise SignedConfigError(
                            f"settings.cameras[{i}].privacy_masks[{j}]: {exc}"
                        ) from None
            continue
        allowed = ALLOWED.get(section)
        if allowed is None:
            raise SignedConfigError(
                f"settings.{section}: not something a signed document may set (only cameras' "
                f"masks, {', '.join(sorted(ALLOWED))})"
            )
        if not isinstance(value, dict):
            raise SignedConfigError(f"settings.{section}: a table")
        extra = sorted(set(value) - allowed)
        if extra:
            raise SignedConfigError(
                f"settings.{section}.{extra[0]}: not something a signed document may set "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
    return settings


def sign(
    settings: dict[str, Any],
    *,
    scope: Scope,
    version: int,
    key: ec.EllipticCurvePrivateKey,
    chain_pem: bytes,
    now: dt.datetime,
) -> bytes:
    """The signed envelope of a document (what ``edge-csu config sign`` writes)."""
    if version < 1:
        raise SignedConfigError("the version is a positive integer, above the last one signed")
    certs = x509.load_pem_x509_certificates(chain_pem)
    problem = configsigning.profile_problem(certs[0])
    if problem is not None:
        raise SignedConfigError(f"not a configuration-signing certificate: {problem}")
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise SignedConfigError("the key does not match the certificate")
    document = canonical(
        {
            "format": DOCUMENT_FORMAT,
            "version": version,
            "scope": scope.as_json(),
            "issued_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settings": check_settings(settings),
        }
    )
    signature = key.sign(_DOMAIN + document, ec.ECDSA(hashes.SHA256()))
    envelope = {
        "format": ENVELOPE_FORMAT,
        "document": base64.b64encode(document).decode(),
        "signature": base64.b64encode(signature).decode(),
        "chain": chain_pem.decode(),
    }
    return json.dumps(envelope, indent=1).encode() + b"\n"


def peek_scope(envelope: bytes) -> Scope | None:
    """The scope a document claims, unverified (the CSU sorts what it offers by it)."""
    try:
        outer = json.loads(envelope)
        scope = json.loads(base64.b64decode(outer["document"], validate=True))["scope"]
        ((kind, name),) = scope.items()
        return Scope(str(kind), str(name))
    except (ValueError, KeyError, TypeError):
        return None


# --- checking (the unit's side) ---------------------------------------------------------------


def open_envelope(
    data: bytes,
    *,
    ca_certs: list[x509.Certificate],
    unit_id: str,
    groups: list[str],
    floors: dict[str, int],
    now: dt.datetime,
    crl: CityCrl | None = None,
) -> Verified:
    """Every check of the module docstring, in order; :class:`SignedConfigError` says which
    one failed. With ``crl`` (the city's, as the unit holds it), a revoked signer is refused."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SignedConfigError(f"larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        outer = json.loads(data)
        if not isinstance(outer, dict) or outer.get("format") != ENVELOPE_FORMAT:
            raise ValueError(f"not an {ENVELOPE_FORMAT} envelope")
        document = base64.b64decode(outer["document"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
        chain = x509.load_pem_x509_certificates(str(outer["chain"]).encode())
    except (ValueError, KeyError, TypeError) as exc:
        raise SignedConfigError(f"not a signed configuration document: {exc}") from None
    problem = configsigning.chain_problem(chain, ca_certs, now)
    if problem is None and crl is not None:
        revoked = crl.problem(chain[0], now, before="the document was signed")
        problem = None if revoked is None else f"the signer's certificate: {revoked}"
    if problem is not None:
        raise SignedConfigError(problem)
    signer = configsigning.signer_name(chain[0])
    public = chain[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)  # chain_problem checked the profile
    try:
        public.verify(signature, _DOMAIN + document, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignedConfigError(
            f"the signature does not verify with {signer}'s key: altered or signed by another key"
        ) from None
    try:
        doc = json.loads(document)
        if doc.get("format") != DOCUMENT_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        version = doc["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("version: a positive integer")
        ((kind, name),) = doc["scope"].items()
        scope = Scope(str(kind), str(name))
        issued_at = str(doc["issued_at"])
        settings = doc["settings"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignedConfigError(f"{signer} signed a malformed document: {exc}") from None
    if scope.kind == "unit" and scope.name != unit_id:
        raise SignedConfigError(
            f"version {version} is for unit {scope.name!r}, this unit is {unit_id!r}"
        )
    if scope.kind == "group" and scope.name not in groups:
        raise SignedConfigError(
            f"version {version} is for group {scope.name!r}; this unit is in "
            f"{', '.join(groups) or 'no group'}"
        )
    if scope.kind not in ("unit", "group"):
        raise SignedConfigError(f"unknown scope {scope.kind!r}")
    floor = floors.get(scope.key, 0)
    if version <= floor:
        raise SignedConfigError(
            f"version {version} for {scope.key} is not newer than version {floor}, applied "
            "already: an older or replayed document"
        )
    return Verified(scope, version, issued_at, check_settings(settings), signer, data)


def lay_over(raw: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` laid over a configuration document ``raw`` (see the module docstring)."""
    out = dict(raw)
    for section, value in settings.items():
        if section == "cameras":
            cams = [dict(c) for c in out.get("cameras", [])]
            by_id = {c.get("id", "cam1"): c for c in cams}
            for signed in value:
                cam = by_id.get(signed["id"])
                if cam is None:
                    raise SignedConfigError(
                        f"camera {signed['id']!r} is not on this unit "
                        f"({', '.join(sorted(by_id)) or 'no camera'})"
                    )
                if "privacy_masks" in signed:
                    signed_masks = list(signed["privacy_masks"])
                    local = [m for m in cam.get("privacy_masks", []) if m not in signed_masks]
                    cam["privacy_masks"] = signed_masks + local
            out["cameras"] = cams
        else:
            out[section] = {**out.get(section, {}), **value}
    return out


def mask_shrinkage(old: EdgeConfig, new: EdgeConfig) -> list[str]:
    """Cameras whose masked area ``new`` would make smaller than ``old``'s (pixels hidden now
    that would show), at each camera's resolution. Empty when masking only grows."""
    from edge.privacy.masker import mask_pixels  # local: numpy, only when masks change

    shrunk = []
    new_cams = {c.id: c for c in new.cameras}
    for cam in old.cameras:
        after = new_cams.get(cam.id)
        if after is None or not cam.privacy_masks or after.privacy_masks == cam.privacy_masks:
            continue
        width, height = after.width, after.height
        hidden = None
        for mask in cam.privacy_masks:
            pixels = mask_pixels(mask, width, height)
            hidden = pixels if hidden is None else hidden | pixels
        still = None
        for mask in after.privacy_masks:
            pixels = mask_pixels(mask, width, height)
            still = pixels if still is None else still | pixels
        assert hidden is not None
        if still is None or bool((hidden & ~still).any()):
            shrunk.append(cam.id)
    return shrunk


# --- the applied documents, on the unit -------------------------------------------------------


class SignedStore:
    """The documents in effect, one per scope, and the version floor of each scope.

    ``<data_dir>/config/signed/<scope>.json`` holds the envelope as received (checked again at
    every start), ``<data_dir>/config/signed-versions.json`` the highest version applied per
    scope, written after the envelope: a crash between the two leaves the floor one document
    behind, which the envelope's own version still enforces (:meth:`floors`).
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "config"
        self.docs = self.root / "signed"
        self.versions_path = self.root / "signed-versions.json"

    def floors(self) -> dict[str, int]:
        try:
            recorded = json.loads(self.versions_path.read_text())
        except (OSError, ValueError):
            recorded = {}
        floors = {str(k): int(v) for k, v in recorded.items() if isinstance(v, int)}
        for scope, envelope in self.envelopes().items():
            version = unverified_version(envelope)
            floors[scope] = max(floors.get(scope, 0), version)
        return floors

    def envelopes(self) -> dict[str, bytes]:
        out = {}
        if self.docs.is_dir():
            for path in sorted(self.docs.glob("*.json")):
                out[path.stem] = path.read_bytes()
        return out

    def is_applied(self, envelope: bytes) -> bool:
        scope = peek_scope(envelope)
        return scope is not None and self.envelopes().get(scope.key) == envelope

    def save(self, verified: Verified) -> None:
        self.docs.mkdir(parents=True, exist_ok=True)
        write_atomic(self.docs / f"{verified.scope.key}.json", verified.envelope, mode=0o640)
        floors = self.floors()
        floors[verified.scope.key] = max(floors.get(verified.scope.key, 0), verified.version)
        write_atomic(self.versions_path, canonical(floors) + b"\n", mode=0o640)


def masks_only(envelope: bytes) -> dict[str, Any] | None:
    """The cameras' masks a stored document set, unverified: what is laid over the files when
    it no longer verifies at start (a CA renewed, a file damaged), so that its masks stay on
    (masking only ever hides more) while nothing else of it applies."""
    try:
        outer = json.loads(envelope)
        settings = json.loads(base64.b64decode(outer["document"]))["settings"]
        cameras = check_settings(settings).get("cameras")
    except (ValueError, KeyError, TypeError, SignedConfigError):
        return None
    return {"cameras": cameras} if cameras else None


def unverified_version(envelope: bytes) -> int:
    """The version a document claims, unverified (0 when unreadable)."""
    try:
        outer = json.loads(envelope)
        return int(json.loads(base64.b64decode(outer["document"]))["version"])
    except (ValueError, KeyError, TypeError):
        return 0


def ordered(verified: list[Verified]) -> list[Verified]:
    """Groups first (by name), then the unit's own document: the most specific wins."""
    return sorted(verified, key=lambda v: (v.scope.kind == "unit", v.scope.name))
