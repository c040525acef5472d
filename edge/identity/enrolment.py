"""Enrolment of a unit in the city's video PKI (ANSSI/CNPP R53, R65/R66).

The installer's flow, driven by ``edgectl enroll``:

1. :func:`enrol` creates the unit's keys in ``<data_dir>/keys/`` when missing: the Ed25519
   signing key of the vault (through :mod:`edge.identity.unitkeys`) and the ECDSA P-256 TLS/EAP key
   ``unit-tls.key`` (mode 0600); it writes a certificate request ``unit-tls.csr`` whose subject
   CN is the unit id and whose SAN is the EAP identity, and a second one, ``unit-signing.csr``,
   for the signing key (CN = unit id, keyUsage digitalSignature + contentCommitment,
   extendedKeyUsage documentSigning: the evidence profile of :mod:`edge.identity.evidence`).
2. The city's PKI (or ``edge-csu ca sign``) signs the requests.
3. :func:`install_certificates` sorts what it is given by key type and checks each certificate
   (its key is ours, it chains to the configured CA with the right profile, it names this unit,
   it is valid now) before writing anything: ``unit-tls.crt`` through :func:`install`, and
   ``unit-signing.crt``, which evidence bundles carry so that a court expert can verify them
   with the city's CA alone.

Renewal (:func:`enrol` with ``renew=True``) makes a *new* key beside the old one
(``unit-tls.key.new``); the old key and certificate keep the port authenticated until the new
certificate is installed, which swaps both at once. Every write is atomic.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from edge import fsutil
from edge.errors import EdgeError, EnrolmentError, VaultError
from edge.identity import evidence, pki

# Re-exported for edgectl enroll (names live in unitkeys).
from edge.identity.unitkeys import CA_CHAIN_NAME as CA_CHAIN_NAME
from edge.identity.unitkeys import SIGNING_CERT_NAME, SIGNING_CSR_NAME, TLS_CSR_NAME, TLS_KEY_NAME
from edge.identity.unitkeys import TLS_CERT_NAME as TLS_CERT_NAME
from edge.identity.unitkeys import TLS_NEW_KEY_NAME as TLS_NEW_KEY_NAME
from edge.snapshot import CertificateStatus


def _write(path: Path, data: bytes, mode: int) -> None:
    fsutil.write_atomic(path, data, mode=mode)


def _new_key(path: Path) -> None:
    """A new ECDSA P-256 TLS key at ``path`` (0600); never over an existing file."""
    try:
        fsutil.write_new_private(path, _pem_key(ec.generate_private_key(ec.SECP256R1())))
    except EdgeError as exc:
        raise EnrolmentError(str(exc)) from None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise EnrolmentError(f"{path}: cannot load the TLS key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnrolmentError(f"{path}: not an ECDSA key")
    return key


@dataclass(frozen=True)
class EnrolResult:
    csr_path: Path
    key_path: Path
    created_key: bool
    signing_key_id: str
    signing_csr_path: Path


def make_csr(key: ec.EllipticCurvePrivateKey, unit_id: str, identity: str) -> bytes:
    """A PEM request: CN = unit id (what RADIUS policy checks), SAN DNS = the EAP identity."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unit_id)])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_signing_csr(key: ed25519.Ed25519PrivateKey, unit_id: str) -> bytes:
    """A PEM request for the evidence-signing key, marked with the evidence profile."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unit_id)]))
        .add_extension(evidence.key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([evidence.DOCUMENT_SIGNING]), critical=False)
    )
    return builder.sign(key, None).public_bytes(serialization.Encoding.PEM)


def enrol(keys_dir: Path, unit_id: str, identity: str, *, renew: bool = False) -> EnrolResult:
    """Create missing keys and (re)write the certificate request; see the module docstring.

    Without ``renew`` an existing TLS key is reused (running the command twice changes
    nothing the PKI has already seen); with ``renew`` a new key is made beside the old one.
    """
    from edge.identity import unitkeys

    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    signing = unitkeys.load_or_create_signing_key(keys_dir)
    signing_id = unitkeys.key_id(unitkeys.public_raw(signing.public_key()))
    current, pending = keys_dir / TLS_KEY_NAME, keys_dir / TLS_NEW_KEY_NAME
    created = False
    if renew:
        if not (keys_dir / TLS_CERT_NAME).exists():
            raise EnrolmentError("nothing to renew: no certificate installed yet (run enroll)")
        if pending.exists():
            # Its request may already be at the CA: a second key would orphan that certificate.
            raise EnrolmentError(
                f"a renewal is already under way ({pending}): install its certificate "
                "(edgectl enroll --install), or run enroll without --renew to write its "
                "request again"
            )
        key_path = pending
        _new_key(pending)
        created = True
    elif pending.exists():
        key_path = pending  # a renewal is under way: its request is the one to sign
    else:
        key_path = current
        if not current.exists():
            _new_key(current)
            created = True
    csr = make_csr(_load_key(key_path), unit_id, identity)
    csr_path = keys_dir / TLS_CSR_NAME
    _write(csr_path, csr, 0o644)
    # The signing key is never renewed (the vault's chains rest on it): its request is simply
    # written again, for a first certificate or a later one.
    signing_csr = keys_dir / SIGNING_CSR_NAME
    _write(signing_csr, make_signing_csr(signing, unit_id), 0o644)
    return EnrolResult(csr_path, key_path, created, signing_id, signing_csr)


def _load_pem_certs(data: bytes, origin: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise EnrolmentError(f"{origin}: not a PEM certificate file: {exc}") from None
    if not certs:
        raise EnrolmentError(f"{origin}: no certificate in it")
    return certs


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    ca_certs: list[x509.Certificate],
    *,
    now: dt.datetime | None = None,
) -> None:
    """Check that ``leaf`` chains to a root among ``ca_certs`` for client authentication.

    Intermediate CAs in the CA file are used as intermediates, and only self-signed ones as
    trust anchors: a city installs its sub-CA + root chain as one file.
    """
    roots, ca_inter = pki.anchors(ca_certs)
    inter = intermediates + ca_inter
    if not roots:
        raise EnrolmentError("the CA file holds no root (self-signed) certificate")
    builder = verification.PolicyBuilder().store(verification.Store(roots))
    builder = builder.time(now or dt.datetime.now(dt.UTC))
    try:
        builder.build_client_verifier().verify(leaf, inter)
    except verification.VerificationError as exc:
        raise EnrolmentError(
            f"the certificate does not chain to the configured CA: {exc}"
        ) from None


@dataclass(frozen=True)
class Installed:
    cert_path: Path
    serial: str
    not_after: dt.datetime
    renewed: bool
    kind: str = "tls"
    """``tls`` (802.1X and CSU client certificate) or ``evidence`` (signing certificate)."""


def install(
    keys_dir: Path,
    cert_data: bytes,
    unit_id: str,
    *,
    ca_data: bytes | None = None,
    now: dt.datetime | None = None,
) -> Installed:
    """Install a signed certificate after checking it; see the module docstring.

    ``ca_data`` (the city's CA chain, PEM) replaces ``keys/ca.pem`` once everything checks;
    without it the installed ``ca.pem`` is used.
    """
    certs = _load_pem_certs(cert_data, "certificate")
    leaf, intermediates = certs[0], certs[1:]
    ca_path = keys_dir / CA_CHAIN_NAME
    if ca_data is None:
        try:
            ca_data = ca_path.read_bytes()
        except FileNotFoundError:
            raise EnrolmentError(f"no CA chain at {ca_path}: give the city's CA file") from None
    ca_certs = _load_pem_certs(ca_data, "CA file")
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [str(a.value) for a in cns] != [unit_id]:
        raise EnrolmentError(
            f"the certificate is for {leaf.subject.rfc4514_string()!r}, not unit {unit_id!r}"
        )
    current, pending = keys_dir / TLS_KEY_NAME, keys_dir / TLS_NEW_KEY_NAME
    renewed = False
    if pending.exists() and _same_key(leaf, _load_key(pending)):
        renewed = True
    elif not (current.exists() and _same_key(leaf, _load_key(current))):
        raise EnrolmentError("the certificate does not match this unit's TLS key")
    verify_chain(leaf, intermediates, ca_certs, now=now)
    cert_path = keys_dir / TLS_CERT_NAME
    if renewed:
        # The key first: between the two renames the old certificate sits with the new key,
        # which fails authentication but never lets an old key outlive its replacement.
        pending.replace(current)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    _write(cert_path, chain, 0o644)
    _write(ca_path, ca_data, 0o644)
    return Installed(cert_path, f"{leaf.serial_number:x}", leaf.not_valid_after_utc, renewed)


def install_certificates(
    keys_dir: Path,
    cert_data: bytes,
    unit_id: str,
    *,
    ca_data: bytes | None = None,
    now: dt.datetime | None = None,
) -> list[Installed]:
    """Install the TLS certificate, the evidence-signing certificate, or both, from PEM data.

    Leaves are told apart by their key (Ed25519 = the signing key); CA certificates in the data
    serve as intermediates of both. Every check passes before the first file is written.
    """
    certs = _load_pem_certs(cert_data, "certificate")
    # Several files may each bring the same chain: keep each CA certificate once.
    cas = list({c.fingerprint(hashes.SHA256()): c for c in certs if _is_ca(c)}.values())
    leaves = [c for c in certs if not _is_ca(c)]
    signing = [c for c in leaves if isinstance(c.public_key(), ed25519.Ed25519PublicKey)]
    tls = [c for c in leaves if c not in signing]
    if len(signing) > 1 or len(tls) > 1 or not leaves:
        raise EnrolmentError(
            f"expected one TLS certificate and/or one evidence-signing certificate, found "
            f"{len(tls)} and {len(signing)}"
        )
    if ca_data is None:
        try:
            ca_data = (keys_dir / CA_CHAIN_NAME).read_bytes()
        except FileNotFoundError:
            raise EnrolmentError(
                f"no CA chain at {keys_dir / CA_CHAIN_NAME}: give the city's CA file"
            ) from None
    now = now or dt.datetime.now(dt.UTC)
    if signing:
        _check_signing_cert(keys_dir, [signing[0], *cas], ca_data, unit_id, now)
    done: list[Installed] = []
    if tls:
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [tls[0], *cas])
        done.append(install(keys_dir, chain, unit_id, ca_data=ca_data, now=now))
    if signing:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [signing[0], *cas])
        path = keys_dir / SIGNING_CERT_NAME
        _write(path, pem, 0o644)
        _write(keys_dir / CA_CHAIN_NAME, ca_data, 0o644)
        serial = f"{signing[0].serial_number:x}"
        done.append(Installed(path, serial, signing[0].not_valid_after_utc, False, "evidence"))
    return done


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_signing_cert(
    keys_dir: Path, chain: list[x509.Certificate], ca_data: bytes, unit_id: str, now: dt.datetime
) -> None:
    from edge.identity import unitkeys

    try:
        signing = unitkeys.load_signing_key(keys_dir).public_key()
    except VaultError as exc:
        raise EnrolmentError(f"no signing key to certify (run edgectl enroll): {exc}") from None
    leaf_key = chain[0].public_key()
    assert isinstance(leaf_key, ed25519.Ed25519PublicKey)
    if evidence.raw_key(leaf_key) != evidence.raw_key(signing):
        raise EnrolmentError(
            "the evidence-signing certificate does not match this unit's signing key "
            f"({unitkeys.SIGNING_KEY_NAME})"
        )
    ca_certs = _load_pem_certs(ca_data, "CA file")
    problem = evidence.chain_problem(
        chain, ca_certs, unit_id=unit_id, signing_key=signing, first=now, last=now
    )
    if problem is not None:
        raise EnrolmentError(f"evidence-signing certificate refused: {problem}")


def signing_certificate_status(
    keys_dir: Path, *, warning_days: int, now: dt.datetime | None = None
) -> CertificateStatus:
    """Expiry facts of ``unit-signing.crt``, whether it certifies the current signing key, and
    whether it chains to ``ca.pem`` (judged inside its validity)."""
    from edge.identity import unitkeys

    path = keys_dir / SIGNING_CERT_NAME
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        return {
            "present": False,
            "warning": f"no evidence-signing certificate at {path}: exports verify only with "
            "a pinned unit key; run edgectl enroll and install the signed unit-signing.csr",
        }
    except (OSError, ValueError) as exc:
        return {"present": False, "warning": f"evidence certificate {path} unreadable: {exc}"}
    status = certificate_status(certs[0], warning_days=warning_days, now=now)
    if status["warning"]:
        status["warning"] = status["warning"].replace("unit certificate", "evidence certificate")
    try:
        signing = unitkeys.load_signing_public_key(keys_dir)
        ca_certs = x509.load_pem_x509_certificates((keys_dir / CA_CHAIN_NAME).read_bytes())
    except (OSError, ValueError, VaultError):
        status["chains_to_ca"] = None
        return status
    leaf_key = certs[0].public_key()
    if not isinstance(leaf_key, ed25519.Ed25519PublicKey):
        status["warning"] = f"{path}: not an evidence-signing certificate (not an Ed25519 key)"
        return status
    matches = evidence.raw_key(leaf_key) == evidence.raw_key(signing)
    status["matches_signing_key"] = matches
    inside = certs[0].not_valid_after_utc - dt.timedelta(seconds=1)
    at = min(now or inside, inside)
    unit = evidence.common_name(certs[0]) or ""
    problem = evidence.chain_problem(
        certs, ca_certs, unit_id=unit, signing_key=leaf_key, first=at, last=at
    )
    status["chains_to_ca"] = problem is None
    if not matches and not status["warning"]:
        status["warning"] = f"{path} certifies another key than the unit's signing key"
    elif problem is not None and not status["warning"]:
        status["warning"] = f"{path}: {problem}"
    return status


def certificate_status(
    cert: x509.Certificate, *, warning_days: int, now: dt.datetime | None = None
) -> CertificateStatus:
    """Expiry facts of a certificate for diagnostics; ``warning`` is set within the window."""
    now = now or dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).total_seconds() / 86400
    expired = days_left <= 0
    not_yet = cert.not_valid_before_utc > now
    warning = None
    if expired:
        warning = f"unit certificate expired on {not_after:%Y-%m-%d}: renew with edgectl enroll"
    elif not_yet:
        warning = f"unit certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}"
    elif days_left <= warning_days:
        warning = (
            f"unit certificate expires on {not_after:%Y-%m-%d} ({days_left:.0f} days): "
            "renew with edgectl enroll --renew"
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "present": True,
        "subject": str(cns[0].value) if cns else cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_after": not_after.isoformat(timespec="seconds"),
        "days_left": round(days_left, 1),
        "expired": expired,
        "expiring_soon": not expired and days_left <= warning_days,
        "warning": warning,
    }


def read_certificate_status(
    path: Path,
    *,
    warning_days: int,
    now: dt.datetime | None = None,
    ca_path: Path | None = None,
) -> CertificateStatus:
    """:func:`certificate_status` of the file at ``path``; describes a missing or bad file.

    With ``ca_path``, ``chains_to_ca`` tells whether the certificate chains to that CA file
    (judged inside the certificate's validity, so an expired one is reported as expired only);
    None when the CA file cannot be read.
    """
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        return {"present": False, "warning": f"no unit certificate at {path}: run edgectl enroll"}
    except (OSError, ValueError) as exc:
        return {"present": False, "warning": f"unit certificate {path} unreadable: {exc}"}
    status = certificate_status(certs[0], warning_days=warning_days, now=now)
    if ca_path is not None:
        chains: bool | None = None
        try:
            ca_certs = x509.load_pem_x509_certificates(ca_path.read_bytes())
            inside = certs[0].not_valid_after_utc - dt.timedelta(seconds=1)
            verify_chain(certs[0], certs[1:], ca_certs, now=min(now or inside, inside))
            chains = True
        except EnrolmentError:  # before ValueError, which it derives from
            chains = False
        except (OSError, ValueError):
            chains = None
        status["chains_to_ca"] = chains
    return status
