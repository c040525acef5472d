"""Certification-path validation under the city's CA, shared by every signer profile (pure).

The configuration signer (:mod:`edge.identity.configsigning`), the unit's evidence certificate
(:mod:`edge.identity.evidence`) and the operators who sign output commands
(:mod:`edge.outputs.commands`) each have their own leaf profile, but their certificates are
checked against the city's CA the same way: the self-signed certificates of the CA file are the
only trust anchors, the RFC 5280 path is built by cryptography's verifier, and the leaf's
profile is part of the path's validity. Each caller words its own refusal around the reason
returned here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.x509 import verification

LeafProblem = Callable[[x509.Certificate], str | None]
"""Why a leaf does not have the caller's profile, or None when it does."""

_KEY_USAGE_FLAGS = (
    *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
    *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
)


def key_usage(**flags: bool) -> x509.KeyUsage:
    """A keyUsage with only ``flags`` set (every profile of the city's CA spells its own)."""
    unknown = set(flags) - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise TypeError(f"not keyUsage flags: {sorted(unknown)}")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in _KEY_USAGE_FLAGS})


def signing_leaf_problem(
    cert: x509.Certificate, *, no_eku: str
) -> tuple[str | None, frozenset[x509.ObjectIdentifier]]:
    """What every signing leaf of the city's profiles shares: keyUsage digitalSignature only
    (no certificate or CRL signing), an extendedKeyUsage (``no_eku`` says why one is needed)
    and no CA flag. (problem or None, the extendedKeyUsage purposes); each profile then
    requires and forbids its own purposes."""
    none: frozenset[x509.ObjectIdentifier] = frozenset()
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no keyUsage extension", none
    if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
        return "its keyUsage is not digitalSignature only", none
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "it is a CA certificate", none
    except x509.ExtensionNotFound:
        pass
    try:
        ekus = frozenset(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return f"it has no extendedKeyUsage{no_eku}", none
    return None, ekus


def anchors(
    ca_certs: Sequence[x509.Certificate],
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The trust anchors of ``ca_certs`` (its self-signed certificates) and the rest, which can
    only serve as intermediates: a CA file naming an intermediate does not make it a root."""
    roots = [c for c in ca_certs if c.issuer == c.subject]
    intermediates = [c for c in ca_certs if c.issuer != c.subject]
    return roots, intermediates


def verify_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: dt.datetime,
    leaf_problem: LeafProblem,
) -> str | None:
    """Why ``leaf`` has no valid path to one of ``roots`` at ``at`` through ``intermediates``,
    or None when it has one. ``leaf_problem`` is checked on the leaf as part of the path.
    ``roots`` must not be empty (callers say in their own words that the CA file has none)."""

    def check_leaf(
        _policy: verification.Policy, cert: x509.Certificate, _ext: x509.KeyUsage | None
    ) -> None:
        # Called by the path builder on the leaf: the profile is part of the path's validity.
        problem = leaf_problem(cert)
        if problem is not None:
            raise ValueError(problem)

    ee_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.KeyUsage, verification.Criticality.AGNOSTIC, check_leaf
    )
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(at)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        )
    )
    try:
        # The "client" verifier checks no name or TLS purpose once given our own EE policy: it is
        # the generic RFC 5280 path validation of the library.
        builder.build_client_verifier().verify(leaf, list(intermediates))
    except verification.VerificationError as exc:
        return str(exc)
    return None


def revocation_problem(
    leaf: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: dt.datetime,
    *,
    before: str,
) -> str | None:
    """Why ``leaf`` must not be trusted for an act at ``at`` by the CRLs of its issuer, or None.
    A key compromise refuses it whenever it was revoked (whatever it signed may be forged);
    another reason only from the revocation on. A CRL of the issuer that does not verify is a
    refusal, never a pass. ``before`` words ``at`` in the message ("the end of the recording")."""
    for crl in crls:
        if crl.issuer != leaf.issuer:
            continue
        issuer = next((c for c in issuers if c.subject == crl.issuer), None)
        if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return "the CRL of the certificate's issuer does not verify"
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if entry is None:
            continue
        when = entry.revocation_date_utc
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = x509.ReasonFlags.unspecified
        if reason is x509.ReasonFlags.key_compromise:
            return f"the certificate was revoked for key compromise on {_utc(when)}"
        if when <= at:
            return f"the certificate was revoked ({reason.value}) on {_utc(when)}, before {before}"
    return None


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
