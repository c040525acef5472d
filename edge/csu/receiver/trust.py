"""How the receiver trusts a unit's signing key: policy only (certificates and times in, verdicts).

Two forms, per unit, in the registry directory:

* ``<unit>.crt``: the unit's *evidence* certificate (profile of :mod:`edge.identity.evidence`),
  issued by the city's video CA. It is trusted when it chains to the receiver's client CA file,
  names the unit (CN = the TLS client certificate's CN), has the evidence profile, is valid now
  and is not revoked on the receiver's CRL. The unit presents it itself over the mutual-TLS
  channel, so a newly enrolled unit needs no manual step at the CSU.
* ``<unit>.pem``: a pinned Ed25519 public key, copied by hand, for cities whose PKI has no
  evidence profile.

Precedence: a valid certificate wins over a pinned key (and a pin of another key is then
ignored, with a note). A certificate that is not valid falls back to the pinned key, except
that a certificate revoked for *key compromise* also withdraws a pin of the same key: the key is
known to be in other hands. Every function here is pure; the registry does the I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity import evidence

Clock = Callable[[], dt.datetime]

#: The largest certificate chain a unit may present (a leaf and a few CA certificates).
MAX_CERTIFICATE_BYTES = 64 * 1024


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Source(StrEnum):
    CERTIFICATE = "certificate"
    PINNED = "pinned"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SigningTrust:
    """Which key the receiver verifies a unit's signatures with, and why."""

    unit_id: str
    key: ed25519.Ed25519PublicKey | None
    source: Source
    problem: str | None = None
    """Why the certificate (or the unit) is not trusted; set also when a pin stood in for it."""
    not_after: dt.datetime | None = None
    serial: int | None = None
    recheck_at: dt.datetime | None = None
    """When the verdict changes by itself (the certificate expires or becomes valid)."""

    @property
    def refusal(self) -> str:
        """The reason a request of this unit is refused (only meaningful when ``key`` is None)."""
        return self.problem or f"unit {self.unit_id} is not enrolled"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "trusted": self.key is not None,
            "key_id": evidence.raw_key(self.key).hex()[:16] if self.key is not None else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "serial": f"{self.serial:x}" if self.serial is not None else None,
            "problem": self.problem,
        }


def parse_chain(data: bytes, origin: str) -> list[x509.Certificate]:
    """Leaf first, then the intermediates the data brings (self-signed ones are dropped: a
    unit's file never supplies a trust anchor). ValueError naming ``origin`` when unreadable."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise ValueError(f"{origin}: larger than {MAX_CERTIFICATE_BYTES} bytes")
    return evidence.bundle_chain([data], origin)


def chain_pem(chain: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def certificate_problem(
    chain: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    unit_id: str,
    now: dt.datetime,
) -> str | None:
    """Why ``chain`` does not certify a signing key of ``unit_id`` now; None when it does."""
    leaf = chain[0]
    problem = evidence.profile_problem(leaf)
    if problem is not None:
        return f"not an evidence-signing certificate: {problem}"
    key = leaf.public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)  # profile_problem checked it
    name = evidence.common_name(leaf)
    if name != unit_id:
        # Said before the path check, in the unit's words: a certificate of another unit.
        return f"it names unit {name!r}, the TLS client certificate is {unit_id!r}'s"
    # Said here in the receiver's words (chain_problem speaks of the time of a recording).
    if now < leaf.not_valid_before_utc:
        return f"it is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    if now > leaf.not_valid_after_utc:
        return f"it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    return evidence.chain_problem(
        chain, ca_certs, unit_id=unit_id, signing_key=key, first=now, last=now, crls=crls
    )


def compromised(leaf: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]) -> bool:
    """Whether a CRL of the leaf's issuer revokes it for key compromise (signature of the CRL
    checked by the caller that loaded it)."""
    for crl in crls:
        if crl.issuer != leaf.issuer:
            continue
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if entry is None:
            continue
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            continue
        if reason is x509.ReasonFlags.key_compromise:
            return True
    return False


def judge(
    unit_id: str,
    *,
    certificate: bytes | None,
    pinned: ed25519.Ed25519PublicKey | None,
    pinned_problem: str | None,
    ca_certs: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
) -> SigningTrust:
    """The key to verify ``unit_id``'s signatures with (see the module's precedence rules)."""
    if certificate is None:
        if pinned is not None:
            return SigningTrust(unit_id, pinned, Source.PINNED)
        return SigningTrust(unit_id, None, Source.NONE, pinned_problem)
    try:
        chain = parse_chain(certificate, f"{unit_id}.crt")
    except ValueError as exc:
        return _fallback(unit_id, pinned, f"signing certificate unreadable: {exc}", None)
    leaf = chain[0]
    problem = certificate_problem(chain, ca_certs, crls, unit_id, now)
    if problem is None:
        key = leaf.public_key()
        assert isinstance(key, ed25519.Ed25519PublicKey)
        note = None
        if pinned is not None and evidence.raw_key(pinned) != evidence.raw_key(key):
            note = "a pinned key of another key is ignored: the valid certificate takes precedence"
        return SigningTrust(
            unit_id,
            key,
            Source.CERTIFICATE,
            note,
            leaf.not_valid_after_utc,
            leaf.serial_number,
            leaf.not_valid_after_utc,
        )
    reason = f"signing certificate of {unit_id} refused: {problem}"
    recheck = leaf.not_valid_before_utc if now < leaf.not_valid_before_utc else None
    leaf_key = leaf.public_key()
    if (
        pinned is not None
        and isinstance(leaf_key, ed25519.Ed25519PublicKey)
        and evidence.raw_key(leaf_key) == evidence.raw_key(pinned)
        and compromised(leaf, crls)
    ):
        return SigningTrust(unit_id, None, Source.NONE, reason, leaf.not_valid_after_utc, None)
    return _fallback(unit_id, pinned, reason, recheck)


def _fallback(
    unit_id: str,
    pinned: ed25519.Ed25519PublicKey | None,
    reason: str,
    recheck: dt.datetime | None,
) -> SigningTrust:
    if pinned is not None:
        return SigningTrust(
            unit_id, pinned, Source.PINNED, f"{reason}; using the pinned key", recheck_at=recheck
        )
    return SigningTrust(unit_id, None, Source.NONE, reason, recheck_at=recheck)


@dataclass(frozen=True, slots=True)
class UploadVerdict:
    status: int
    """201 stored (new or replacing), 200 already held, 400/409/422 refused."""
    reason: str
    pem: bytes | None = None
    """What to store as ``<unit>.crt`` (on 201)."""


def upload_verdict(
    unit_id: str,
    body: bytes,
    *,
    held: bytes | None,
    ca_certs: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
) -> UploadVerdict:
    """Whether a certificate a unit presents replaces what the registry holds.

    Only a certificate that would be trusted is stored. A valid held certificate is never
    replaced by one issued before it, so a unit (or whoever holds its TLS key) cannot roll the
    receiver back to an older certificate of a key the CA has since replaced.
    """
    try:
        chain = parse_chain(body, "signing certificate")
    except ValueError as exc:
        return UploadVerdict(400, str(exc))
    problem = certificate_problem(chain, ca_certs, crls, unit_id, now)
    if problem is not None:
        return UploadVerdict(422, f"signing certificate refused: {problem}")
    pem = chain_pem(chain)
    if held is not None:
        if held == pem:
            return UploadVerdict(200, "already held")
        try:
            held_chain = parse_chain(held, f"{unit_id}.crt")
        except ValueError:
            held_chain = []
        if (
            held_chain
            and certificate_problem(held_chain, ca_certs, crls, unit_id, now) is None
            and chain[0].not_valid_before_utc < held_chain[0].not_valid_before_utc
        ):
            return UploadVerdict(
                409,
                "older than the valid signing certificate held (issued "
                f"{held_chain[0].not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)",
            )
    return UploadVerdict(201, "stored", pem)
