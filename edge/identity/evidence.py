"""The evidence-signing certificate: its profile, and the checks that tie a bundle to the fleet CA.

The unit's Ed25519 signing key (:mod:`edge.identity.unitkeys`) signs every sealed segment, envelope,
checkpoint, audit record and bundle manifest. Enrolment has the city's video CA certify it with a
dedicated *evidence* profile, distinct from the TLS/EAP client certificate:

* the key is Ed25519 (the TLS/EAP key is ECDSA P-256; a CA refuses to mix the two profiles);
* keyUsage (critical) = digitalSignature + contentCommitment (non-repudiation), nothing else;
* extendedKeyUsage = id-kp-documentSigning (RFC 9336) only, never serverAuth/clientAuth, so the
  certificate can never authenticate a TLS or 802.1X session;
* subject CN = the unit id (the ``device`` of every signed record).

A court expert then needs only the city's root certificate: the bundle carries the unit's
certificate and the CA chain, and :func:`chain_problem` checks the path *at the time of the
recording*, because the certificate only has to have been valid when the unit signed. Every
function here is pure (certificates and times in, a reason or None out); callers raise their own
error type with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from edge.identity import pki
from edge.identity.unitkeys import CA_CHAIN_NAME, SIGNING_CERT_NAME

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): the purpose named in an evidence-signing certificate."""


_FORBIDDEN_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}


def key_usage() -> x509.KeyUsage:
    """The keyUsage of an evidence-signing certificate (and of its request)."""
    return pki.key_usage(digital_signature=True, content_commitment=True)


def raw_key(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def common_name(cert: x509.Certificate) -> str | None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if len(cns) == 1 else None


def profile_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not an evidence-signing certificate, or None when it is one."""
    if not isinstance(cert.public_key(), ed25519.Ed25519PublicKey):
        return "its key is not Ed25519 (a TLS certificate, not the evidence-signing one)"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no keyUsage extension"
    if not (usage.digital_signature and usage.content_commitment):
        return "its keyUsage lacks digitalSignature or contentCommitment (non-repudiation)"
    if usage.key_cert_sign or usage.crl_sign:
        return "its keyUsage allows signing certificates"
    try:
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    if ekus & _FORBIDDEN_EKUS:
        return "it allows TLS authentication (serverAuth/clientAuth/any extendedKeyUsage)"
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "it is a CA certificate"
    except x509.ExtensionNotFound:
        pass
    return None


def _fmt(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def chain_problem(
    chain: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    *,
    unit_id: str,
    signing_key: ed25519.Ed25519PublicKey,
    first: dt.datetime,
    last: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> str | None:
    """Why ``chain`` (leaf first) does not certify ``signing_key`` for ``unit_id`` over the
    recording [first, last] under a root of ``ca_certs``; None when it does.

    Only self-signed certificates of ``ca_certs`` are trust anchors; the others, and the
    certificates after the leaf, serve as intermediates. The path is validated at both ends of
    the recording (validity periods are intervals, so the whole span is covered). With ``crls``,
    a revocation for key compromise refuses everything, any other revocation refuses a recording
    that ended after it.
    """
    if not chain:
        return "no certificate"
    leaf = chain[0]
    problem = profile_problem(leaf)
    if problem is not None:
        return f"the certificate is not an evidence-signing certificate: {problem}"
    cert_key = leaf.public_key()
    assert isinstance(cert_key, ed25519.Ed25519PublicKey)  # profile_problem checked it
    if raw_key(cert_key) != raw_key(signing_key):
        return (
            f"the certificate certifies key {raw_key(cert_key).hex()[:16]}…, but the evidence "
            f"is signed with key {raw_key(signing_key).hex()[:16]}… (certificate swapped or of "
            "another unit)"
        )
    name = common_name(leaf)
    if name != unit_id:
        return f"the certificate names unit {name!r}, the evidence comes from unit {unit_id!r}"
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if first < start or last > end:
        return (
            f"the certificate was not valid when the evidence was recorded: valid "
            f"{_fmt(start)} .. {_fmt(end)}, recording {_fmt(first)} .. {_fmt(last)}"
        )
    roots, ca_inter = pki.anchors(ca_certs)
    if not roots:
        return "the CA file holds no root (self-signed) certificate"
    inter = [*chain[1:], *ca_inter]
    for at in (first, last):
        problem = pki.verify_path(leaf, inter, roots, at, profile_problem)
        if problem is not None:
            return f"the certificate does not chain to the given CA at {_fmt(at)}: {problem}"
    return pki.revocation_problem(
        leaf, [*inter, *roots], crls, last, before="the end of the recording"
    )


def ns_time(ns: int) -> dt.datetime:
    """A signed record's wall-clock nanoseconds as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)


def certifies(path: Path, key: ed25519.Ed25519PublicKey) -> bool:
    """Whether ``path`` holds a certificate of ``key`` (a stale one is left out of a bundle)."""
    try:
        cert_key = x509.load_pem_x509_certificates(path.read_bytes())[0].public_key()
    except (OSError, ValueError, IndexError):
        return False
    return isinstance(cert_key, ed25519.Ed25519PublicKey) and raw_key(cert_key) == raw_key(key)


def bundle_chain(files: Sequence[bytes], origin: str) -> list[x509.Certificate]:
    """The leaf of the first PEM file, then the CA certificates of all of them that are not
    self-signed: a bundle's certificates are candidates for the path, never trust anchors."""
    certs = [c for data in files for c in load_chain(data, origin)]
    return [certs[0], *(c for c in certs[1:] if c.issuer != c.subject)]


def load_chain(data: bytes, origin: str) -> list[x509.Certificate]:
    """PEM certificates of ``data``; ValueError naming ``origin`` when there are none."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{origin}: not a PEM certificate file: {exc}") from None
    if not certs:
        raise ValueError(f"{origin}: no certificate in it")
    return certs


def stream_chain(keys_dir: Path, key: ed25519.Ed25519PublicKey) -> bytes | None:
    """The PEM chain a signed video stream carries (ONVIF Media Signing): the evidence
    certificate of ``key`` and the intermediates of ``ca.pem``, never a root; None when the
    unit holds no certificate of that key (not enrolled)."""
    leaf_file = keys_dir / SIGNING_CERT_NAME
    if not certifies(leaf_file, key):
        return None
    try:
        certs = x509.load_pem_x509_certificates(leaf_file.read_bytes())
    except (OSError, ValueError):
        return None
    # Without a readable ca.pem, the leaf alone: a validator needs the intermediates elsewhere.
    with contextlib.suppress(OSError, ValueError):
        certs += x509.load_pem_x509_certificates((keys_dir / CA_CHAIN_NAME).read_bytes())
    seen: set[bytes] = set()
    out = bytearray()
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if cert.issuer == cert.subject or der in seen:
            continue
        seen.add(der)
        out += cert.public_bytes(serialization.Encoding.PEM)
    return bytes(out)
