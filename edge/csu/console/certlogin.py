"""Console log-in with an operator's client certificate: the city CA's ``console`` profile.

An account marked for certificate log-in (``edge-csu operator add --auth certificate``) logs in
with two factors: the private key of its console certificate (possession: the TLS handshake
proves it) and its password (knowledge); no one-time code. The certificate must:

- chain to the receiver's client CA file (the city's video CA) and be valid now;
- not be revoked on the receiver's CRL (the one it checks units against, re-read on change);
- have the console profile: extendedKeyUsage TLS client authentication **and**
  :data:`CONSOLE_LOGIN`, keyUsage digitalSignature only, not a CA. A unit's TLS certificate
  (clientAuth alone) and an agent's command-signing certificate (no TLS purpose) never pass;
- name the account in its subject common name.

The operators' listener asks for a client certificate at the handshake (optional: password and
TOTP accounts and scripts present none) and checks it there against the CA and the CRL, as the
units' listener does (:func:`edge.csu.receiver.registry.operator_context`); a certificate
refused there never reaches the console, and the refusal is audited (``login-refused``). The
log-in checks it all again here, because a unit's certificate passes the handshake and a CRL
may change while a connection stays open.

A session opened with a certificate is bound to that certificate's SHA-256 fingerprint: each
request on its cookie must come over a connection presenting the same certificate, still not
revoked and not expired (:func:`binding_problem`), or it is refused (``session-refused``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from edge.identity import pki

from .accounts import PresentedCertificate

if TYPE_CHECKING:
    from aiohttp import web

    from ..receiver.server import Receiver

CONSOLE_LOGIN = ObjectIdentifier("2.25.187062048006766863910851542634145874118")
"""Extended key usage that makes a TLS client certificate a console credential (a UUID OID,
RFC 4122 / ITU-T X.667: needs no registration)."""

_OTHER_PURPOSES = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    ExtendedKeyUsageOID.CODE_SIGNING,
}


def profile_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not a console log-in certificate, or None when it is one."""
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return "its key is not ECDSA (not a console certificate)"
    problem, ekus = pki.signing_leaf_problem(cert, no_eku=" (console profile required)")
    if problem is not None:
        return problem
    if CONSOLE_LOGIN not in ekus:
        return "not a console certificate (its extendedKeyUsage has no console log-in purpose)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        return "its extendedKeyUsage has no TLS client authentication"
    if ekus & _OTHER_PURPOSES:
        return "it also allows another purpose (server, code signing or any)"
    return None


def fingerprint(der: bytes) -> str:
    """SHA-256 (hex) of a certificate's DER: what a session is bound to."""
    return hashlib.sha256(der).hexdigest()


def common_name(cert: x509.Certificate) -> str | None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return None
    value = cns[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def judge(
    der: bytes,
    ca_certs: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: dt.datetime,
) -> PresentedCertificate:
    """What a presented certificate (DER) proves at ``at`` under ``ca_certs`` and ``crls``:
    its fingerprint, its common name, and why it may not log in (None: it may)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return PresentedCertificate(fingerprint(der), None, f"unreadable certificate: {exc}")
    name = common_name(cert)
    roots, intermediates = pki.anchors(ca_certs)
    problem: str | None
    if cert.not_valid_after_utc < at:
        problem = f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    elif cert.not_valid_before_utc > at:
        problem = f"the certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    elif not roots:
        problem = "the receiver's client CA file holds no root certificate"
    else:
        problem = _plain(pki.verify_path(cert, intermediates, roots, at, profile_problem))
    if problem is None:
        problem = pki.revocation_problem(cert, ca_certs, crls, at, before="the log-in")
    if problem is None and name is None:
        problem = "the certificate names no single operator (common name)"
    if problem is not None:
        problem = f"certificate {cert.serial_number:x} of {name or '?'} refused: {problem}"
    return PresentedCertificate(fingerprint(der), name, problem)


def _plain(reason: str | None) -> str | None:
    """The path validator's reason without its wrapping (the repr of the certificate, the
    name of the hook that raised): the audit log reads it."""
    if reason is None:
        return None
    reason = reason.split(" (encountered processing ", 1)[0]
    return reason.replace("Python extension validator failed: ValueError: ", "")


def peer_der(request: web.Request) -> bytes | None:
    """The client certificate of the request's TLS connection (DER), if it presented one."""
    transport = request.transport
    ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_obj is None:
        return None
    der: bytes | None = ssl_obj.getpeercert(binary_form=True)
    return der or None


def presented(receiver: Receiver, request: web.Request) -> PresentedCertificate | None:
    """The judged client certificate of ``request`` (None: it presents none). Blocking (reads
    the CA file and the CRL): call from the worker pool."""
    der = peer_der(request)
    if der is None:
        return None
    ca_certs = x509.load_pem_x509_certificates(receiver.cfg.tls.client_ca_file.read_bytes())
    _, crls = receiver.crl.current()
    return judge(der, ca_certs, crls, dt.datetime.now(dt.UTC))


def binding_problem(receiver: Receiver, request: web.Request, bound_sha256: str) -> str | None:
    """Why a request may not use a session bound to certificate ``bound_sha256`` (None: it
    may): it must come over a connection presenting that certificate, still valid and not
    revoked on the receiver's current CRL. Blocking (one ``stat`` of the CRL file)."""
    der = peer_der(request)
    if der is None:
        return "no client certificate on this connection (the session is bound to one)"
    if fingerprint(der) != bound_sha256:
        return "another client certificate than the one the session was opened with"
    if receiver.crl.is_revoked(der):
        return "the session's certificate has been revoked"
    cert = x509.load_der_x509_certificate(der)
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        return "the session's certificate has expired"
    return None


def login_form(lang: str, certificate: PresentedCertificate, *, refused: bool = False) -> str:
    """The log-in form when the connection presents a console certificate: its operator's
    name filled in, the password asked, the one-time code optional (a certificate account
    needs none; :func:`web._login_form` otherwise)."""
    from . import i18n
    from .web import PREFIX

    t = i18n.text
    esc = html.escape
    other = "en" if lang == "fr" else "fr"
    error = f'<p class="error" role="alert">{t("refused", lang)}</p>' if refused else ""
    name = esc(certificate.name or "")
    return (
        f'<main><form class="login" method="post" action="{PREFIX}/login">'
        f"<h1>{t('title', lang)}</h1>{error}"
        f'<p id="cert-login">{t("cert_presented", lang)} <strong>{name}</strong></p>'
        f'<label>{t("name", lang)}<input name="name" autocomplete="username" value="{name}" '
        "required></label>"
        f'<label>{t("password", lang)}<input name="password" type="password" '
        'autocomplete="current-password" required autofocus></label>'
        f'<label>{t("cert_code", lang)}<input name="code" inputmode="numeric" '
        'autocomplete="one-time-code" pattern="[0-9]{6}"></label>'
        f'<input type="hidden" name="lang" value="{lang}">'
        f'<button type="submit">{t("login", lang)}</button>'
        f'<a href="{PREFIX}/?lang={other}" lang="{other}">{t("other_language", lang)}</a>'
        "</form></main>"
    )
