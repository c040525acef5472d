"""A small certificate authority for a city's video network (root + video sub-CA).

ANSSI/CNPP R65/R66 ask for a PKI with a sub-CA dedicated to video; R53 for factory certificates
to be replaced by the city's own. Large cities run their own PKI (``docs/DOT1X.md`` explains how
to use it instead); this module serves tests, demos and small cities, and is a library first:
the uplink and 802.1X tests build their certificates with it, including expired and revoked
ones.

Layout of a CA directory (keys mode 0600 and never overwritten, every write atomic)::

    root.crt   root.key        self-signed root, signs only the video sub-CA
    video-ca.crt video-ca.key   the video sub-CA, signs units and servers, publishes the CRL
    chain.pem                   video-ca.crt + root.crt (what relying parties install)
    issued.json                 every certificate issued: serial, subject, expiry, revocation
    crl.pem                     the video sub-CA's current CRL

The CA never copies a request's subject blindly: a unit certificate's subject is the CN from the
request, re-validated as a unit identity; extensions are set here, never taken from the request
except the subject alternative names.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.identity import configsigning, evidence, pki
from edge.outputs.commands import OPERATOR_COMMANDS

from .. import fsutil
from ..errors import CaError
from .console.certlogin import CONSOLE_LOGIN
from .console.roles import OPERATOR_NAME

_UNIT_CN_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
_DNS_RE = re.compile(r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+\Z")


class Profile(StrEnum):
    """What a leaf certificate is for; decides its key usages and extended key usages."""

    CLIENT = "client"  # a unit: 802.1X EAP-TLS peer and TLS client of the CSU
    SERVER = "server"  # a RADIUS server or the CSU receiver: TLS server
    EVIDENCE = "evidence"  # a unit's Ed25519 evidence-signing key (edge.identity.evidence)
    OPERATOR = "operator"  # a CSU agent's key signing commands to cabinet outputs
    CONFIG = "config"  # the city's configuration signer (edge.identity.configsigning)
    UPDATE = "update"  # the city's update-bundle signer (RAUC, codeSigning; edge/updates.py)
    CONSOLE = "console"  # a CSU agent's TLS client certificate for the console log-in


class RevocationReason(StrEnum):
    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation"


_REASON_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, never a mix."""
    fsutil.write_atomic(path, data, mode=mode)


def new_key() -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 key: small, fast on a Raspberry Pi, accepted by every RADIUS server."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _serial() -> int:
    return x509.random_serial_number()


@dataclass(frozen=True)
class IssuedCert:
    serial: int
    subject: str
    profile: str
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": f"{self.serial:x}",
            "subject": self.subject,
            "profile": self.profile,
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IssuedCert:
        revoked = obj.get("revoked_at")
        return cls(
            serial=int(obj["serial"], 16),
            subject=str(obj["subject"]),
            profile=str(obj["profile"]),
            not_after=dt.datetime.fromisoformat(obj["not_after"]),
            revoked_at=dt.datetime.fromisoformat(revoked) if revoked else None,
            reason=obj.get("reason"),
        )


class VideoCA:
    """A root and a video sub-CA kept in one directory. See the module docstring for the layout.

    Not thread-safe: one command or one test uses one instance at a time.
    """

    def __init__(
        self,
        directory: Path,
        root_cert: x509.Certificate,
        sub_cert: x509.Certificate,
        sub_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self.directory = directory
        self.root_cert = root_cert
        self.sub_cert = sub_cert
        self._sub_key = sub_key

    # --- creation and loading -----------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        organisation: str = "Ville - vidéoprotection",
        root_days: int = 7300,
        sub_days: int = 3650,
        now: dt.datetime | None = None,
    ) -> VideoCA:
        """Create a new root and video sub-CA in ``directory`` (which must not hold a CA yet)."""
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "video-ca.key").exists() or (directory / "root.key").exists():
            raise CaError(f"{directory}: a CA already exists there; refusing to overwrite it")
        now = now or utcnow()
        start = now - dt.timedelta(minutes=5)  # tolerate small clock skew between machines
        root_key, sub_key = new_key(), new_key()
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)
        root_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, "Video root CA")])
        sub_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, "Video sub-CA")])
        ca_usage = pki.key_usage(key_cert_sign=True, crl_sign=True)
        root_cert = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(_serial())
            .not_valid_before(start)
            .not_valid_after(now + dt.timedelta(days=root_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        sub_cert = (
            x509.CertificateBuilder()
            .subject_name(sub_name)
            .issuer_name(root_name)
            .public_key(sub_key.public_key())
            .serial_number(_serial())
            .not_valid_before(start)
            .not_valid_after(min(now + dt.timedelta(days=sub_days), root_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(sub_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        # Exclusive: a second init racing this one fails here rather than replacing a CA key
        # that certificates already rest on.
        fsutil.write_new_private(directory / "root.key", key_pem(root_key))
        fsutil.write_new_private(directory / "video-ca.key", key_pem(sub_key))
        write_atomic(directory / "root.crt", cert_pem(root_cert))
        write_atomic(directory / "video-ca.crt", cert_pem(sub_cert))
        write_atomic(directory / "chain.pem", cert_pem(sub_cert) + cert_pem(root_cert))
        write_atomic(directory / "issued.json", b"[]\n")
        ca = cls(directory, root_cert, sub_cert, sub_key)
        ca.publish_crl(now=now)
        return ca

    @classmethod
    def open(cls, directory: Path) -> VideoCA:
        """Load the CA kept in ``directory``."""
        try:
            root_cert = x509.load_pem_x509_certificate((directory / "root.crt").read_bytes())
            sub_cert = x509.load_pem_x509_certificate((directory / "video-ca.crt").read_bytes())
            key = serialization.load_pem_private_key(
                (directory / "video-ca.key").read_bytes(), password=None
            )
        except FileNotFoundError as exc:
            raise CaError(
                f"{directory}: no CA there ({exc.filename} missing): give the CA's directory, "
                "or create one with edge-csu ca init DIR"
            ) from None
        except ValueError as exc:
            raise CaError(f"{directory}: unreadable CA file: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{directory}/video-ca.key: not an ECDSA key")
        return cls(directory, root_cert, sub_cert, key)

    # --- issuing ------------------------------------------------------------------------------

    @property
    def chain_pem(self) -> bytes:
        """The sub-CA then the root, PEM: what a relying party installs as its CA file."""
        return cert_pem(self.sub_cert) + cert_pem(self.root_cert)

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        profile: Profile | None = None,
        days: int = 365,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a certificate for a request after checking its signature and its subject.

        Without ``profile`` the key decides: an Ed25519 key is a unit's evidence-signing key
        (``evidence``), any other a unit's TLS/EAP key (``client``).
        """
        if not csr.is_signature_valid:
            raise CaError("the request's signature does not verify (corrupted or forged)")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise CaError("the request must carry exactly one common name")
        common_name = str(cns[0].value)
        sans: list[x509.GeneralName] = []
        try:
            ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans = list(ext.value)
        except x509.ExtensionNotFound:
            pass
        if profile is None:
            is_ed = isinstance(csr.public_key(), ed25519.Ed25519PublicKey)
            profile = Profile.EVIDENCE if is_ed else Profile.CLIENT
        return self._issue(common_name, csr.public_key(), profile, sans, days=days, now=now)

    def certify(
        self,
        common_name: str,
        public_key: CertificatePublicKeyTypes,
        *,
        profile: Profile = Profile.EVIDENCE,
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Certify a public key directly (tests and demos; units send a request instead)."""
        return self._issue(
            common_name, public_key, profile, [], days=days, now=now, not_before=not_before
        )

    def issue(
        self,
        common_name: str,
        *,
        profile: Profile = Profile.CLIENT,
        dns_names: tuple[str, ...] = (),
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """Make a key and issue its certificate (servers, tests; units send a CSR instead).

        ``not_before`` back-dates the certificate; with a small ``days`` that makes an expired
        one, which tests need.
        """
        key = key or new_key()
        if profile is Profile.CLIENT and not dns_names:
            # Like a unit's own request (SAN = its identity): RFC 5280 verifiers such as
            # cryptography's want a SAN on every leaf.
            dns_names = (common_name,)
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        cert = self._issue(
            common_name,
            key.public_key(),
            profile,
            sans,
            days=days,
            now=now,
            not_before=not_before,
        )
        return key, cert

    def _issue(
        self,
        common_name: str,
        public_key: CertificatePublicKeyTypes,
        profile: Profile,
        sans: list[x509.GeneralName],
        *,
        days: int,
        now: dt.datetime | None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        # The evidence key must never authenticate a TLS session, and a TLS key never sign
        # evidence: the key type tells them apart (Ed25519 is only ever the signing key).
        is_ed = isinstance(public_key, ed25519.Ed25519PublicKey)
        if is_ed and profile is not Profile.EVIDENCE:
            raise CaError(
                "an Ed25519 key is a unit's evidence-signing key: it gets the evidence profile, "
                f"never the {profile.value} (TLS) one"
            )
        if profile is Profile.EVIDENCE and not is_ed:
            raise CaError("the evidence profile is for a unit's Ed25519 signing key only")
        if profile in (Profile.EVIDENCE, Profile.CONFIG, Profile.UPDATE):
            sans = []  # nothing to authenticate by name: the CN is all it asserts
        if profile is Profile.CONSOLE:
            sans = []  # the CN is the operator's account name, all it asserts
            if not OPERATOR_NAME.match(common_name):
                raise CaError(
                    f"common name {common_name!r} is not an operator account name "
                    "(1-64 letters, digits, . _ @ -)"
                )
        elif profile is not Profile.SERVER and not _UNIT_CN_RE.match(common_name):
            raise CaError(
                f"common name {common_name!r} is not a unit identity "
                "(lower-case letters, digits and dashes, at most 63 characters)"
            )
        if profile is Profile.SERVER and not _DNS_RE.match(common_name):
            raise CaError(f"common name {common_name!r} is not a DNS name")
        for san in sans:
            if not isinstance(san, x509.DNSName | x509.UniformResourceIdentifier):
                raise CaError(f"subject alternative name {san!r} is not allowed")
            if isinstance(san, x509.DNSName) and not _DNS_RE.match(san.value):
                raise CaError(f"subject alternative name {san.value!r} is not a DNS name")
        now = now or utcnow()
        start = not_before or (now - dt.timedelta(minutes=5))
        end = min(start + dt.timedelta(days=days), self.sub_cert.not_valid_after_utc)
        org = self.sub_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        subject = x509.Name([*org, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ekus = {
            Profile.CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Profile.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
            Profile.EVIDENCE: [evidence.DOCUMENT_SIGNING],
            # Never a TLS purpose: a stolen unit or server key cannot sign commands, an
            # operator key cannot open a TLS session as a unit.
            Profile.OPERATOR: [OPERATOR_COMMANDS],
            Profile.CONFIG: [configsigning.CONFIG_SIGNING],
            Profile.UPDATE: [ExtendedKeyUsageOID.CODE_SIGNING],
            # TLS client (what browsers and smart-card middleware look for) plus the console
            # purpose: a unit's TLS certificate lacks the latter, so it never logs in.
            Profile.CONSOLE: [ExtendedKeyUsageOID.CLIENT_AUTH, CONSOLE_LOGIN],
        }[profile]
        usage = {
            Profile.EVIDENCE: evidence.key_usage(),
            Profile.CONFIG: configsigning.key_usage(),
        }.get(profile, pki.key_usage(digital_signature=True))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.sub_cert.subject)
            .public_key(public_key)
            .serial_number(_serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._sub_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._sub_key, hashes.SHA256())
        records = self.issued()
        records.append(
            IssuedCert(cert.serial_number, common_name, profile.value, cert.not_valid_after_utc)
        )
        self._save_issued(records)
        return cert

    # --- revocation ---------------------------------------------------------------------------

    def issued(self) -> list[IssuedCert]:
        """Every certificate this CA issued, oldest first."""
        try:
            raw = json.loads((self.directory / "issued.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        return [IssuedCert.from_json(obj) for obj in raw]

    def _save_issued(self, records: list[IssuedCert]) -> None:
        text = json.dumps([r.to_json() for r in records], indent=1) + "\n"
        write_atomic(self.directory / "issued.json", text.encode())

    def revoke(
        self,
        serial: int,
        reason: RevocationReason = RevocationReason.UNSPECIFIED,
        *,
        now: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """Revoke a certificate this CA issued and publish a new CRL (returned)."""
        now = now or utcnow()
        records = self.issued()
        for i, rec in enumerate(records):
            if rec.serial == serial:
                if rec.revoked_at is None:
                    records[i] = IssuedCert(
                        rec.serial, rec.subject, rec.profile, rec.not_after, now, reason.value
                    )
                break
        else:
            raise CaError(f"serial {serial:x} was not issued by this CA")
        self._save_issued(records)
        return self.publish_crl(now=now)

    def publish_crl(
        self, *, now: dt.datetime | None = None, days: int = 7
    ) -> x509.CertificateRevocationList:
        """Sign a CRL listing every revoked certificate; write it to ``crl.pem``.

        Relying parties that check CRLs (hostapd ``check_crl``, FreeRADIUS ``check_crl``) refuse
        every client once the CRL is past its next update: republish well within ``days``.
        """
        now = now or utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.sub_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._sub_key.public_key()),
                critical=False,
            )
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for rec in self.issued():
            if rec.revoked_at is None:
                continue
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(rec.serial)
                .revocation_date(rec.revoked_at)
                .add_extension(
                    x509.CRLReason(_REASON_FLAGS[RevocationReason(rec.reason or "unspecified")]),
                    critical=False,
                )
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._sub_key, hashes.SHA256())
        write_atomic(self.directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        return crl

    @property
    def crl_pem(self) -> bytes:
        return (self.directory / "crl.pem").read_bytes()
