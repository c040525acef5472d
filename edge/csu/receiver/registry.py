"""Who may talk to the receiver: enrolled units, the CA's revocation list, TLS contexts.

Three independent checks, all required:

1. the TLS handshake (TLS 1.3 only) demands a client certificate chaining to the configured CA,
   valid now, and not on the CRL loaded at start (OpenSSL refuses expired and revoked ones);
2. per request, the certificate's unit identity (its subject common name) must be enrolled in
   the registry directory, and its serial not on the *current* CRL (re-read when the file
   changes, so a revocation takes effect without restarting the receiver);
3. per segment, the signature must verify with the unit's enrolled Ed25519 key.

Registry: ``<registry_dir>/<unit-id>.pem`` holds the unit's Ed25519 signing public key (its
``unit-signing.pub.pem``). Adding or removing a file enrols or withdraws a unit at once.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from ...errors import ConfigError, EdgeError, UplinkError
from ...unitkeys import load_public_pem
from ...uplink.protocol import ID_RE
from .config import TlsConfig

log = logging.getLogger(__name__)


class _LoggedHandshake(ssl.SSLObject):
    """Logs why a unit's handshake was refused (expired, revoked, unknown CA, no certificate):
    asyncio closes such connections silently, and operators need the reason."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            log.warning("refused a TLS handshake on the units listener: %s", reason)
            raise


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.3 only, client certificate required, chaining to the configured CA only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslobject_class = _LoggedHandshake
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        if tls.crl_file is not None:
            ctx.load_verify_locations(cafile=tls.crl_file)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS material: {exc}") from None
    return ctx


def operator_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.3 only for operators; they authenticate with a bearer token instead of a cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS material: {exc}") from None
    return ctx


def unit_id_of(cert_der: bytes) -> str:
    """The unit identity a client certificate carries (its subject CN, a valid identifier)."""
    cert = x509.load_der_x509_certificate(cert_der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise UplinkError("client certificate has no common name")
    value = names[0].value
    name = value if isinstance(value, str) else value.decode()
    if not ID_RE.match(name):
        raise UplinkError(f"client certificate common name {name!r} is not a unit identifier")
    return name


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _Stamp(st.st_mtime_ns, st.st_size)


class RevocationList:
    """Serial numbers revoked by the CA, re-read whenever the CRL file changes.

    The CRL's signature is checked against the CA certificate; a CRL that fails to verify keeps
    the previous list in force (and is logged), it never clears revocations.
    Thread-safe: the lock protects the serial set and the file stamp.
    """

    def __init__(self, crl_file: Path | None, ca_file: Path) -> None:
        self.crl_file = crl_file
        self.ca_file = ca_file
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._serials: frozenset[int] = frozenset()
        if crl_file is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        assert self.crl_file is not None
        stamp = _stamp(self.crl_file)
        with self._lock:
            if not force and stamp == self._stamp:
                return
            try:
                crl = x509.load_pem_x509_crl(self.crl_file.read_bytes())
                cas = x509.load_pem_x509_certificates(self.ca_file.read_bytes())
            except (OSError, ValueError) as exc:
                if force:
                    raise ConfigError(f"CRL {self.crl_file}: {exc}") from None
                log.error("CRL %s unreadable, keeping the previous one: %s", self.crl_file, exc)
                self._stamp = stamp
                return
            if not any(
                crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
                for ca in cas
            ):
                if force:
                    raise ConfigError(f"CRL {self.crl_file}: not signed by the client CA")
                log.error("CRL %s not signed by the CA, keeping the previous one", self.crl_file)
                self._stamp = stamp
                return
            self._serials = frozenset(r.serial_number for r in crl)
            self._stamp = stamp
            log.info("CRL %s: %d revoked certificate(s)", self.crl_file, len(self._serials))

    def is_revoked(self, cert_der: bytes) -> bool:
        if self.crl_file is None:
            return False
        self._reload()
        serial = x509.load_der_x509_certificate(cert_der).serial_number
        with self._lock:
            return serial in self._serials


class UnitRegistry:
    """Enrolled units and their signing keys, read from a directory, refreshed on change.

    Thread-safe: the lock protects the key cache and the directory stamp.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keys: dict[str, ed25519.Ed25519PublicKey] = {}
        self._stamps: dict[str, _Stamp] = {}

    def signing_key(self, unit_id: str) -> ed25519.Ed25519PublicKey | None:
        """The unit's enrolled key, or None when the unit is not enrolled."""
        if not ID_RE.match(unit_id):
            return None
        path = self.directory / f"{unit_id}.pem"
        stamp = _stamp(path)
        with self._lock:
            if stamp is None:
                self._keys.pop(unit_id, None)
                return None
            if self._stamps.get(unit_id) != stamp:
                try:
                    self._keys[unit_id] = load_public_pem(path.read_bytes(), origin=str(path))
                except (OSError, EdgeError) as exc:
                    log.error("registry entry %s unusable: %s", path, exc)
                    self._keys.pop(unit_id, None)
                    return None
                self._stamps[unit_id] = stamp
            return self._keys.get(unit_id)

    def unit_ids(self) -> list[str]:
        try:
            names = [p.name for p in self.directory.iterdir()]
        except OSError:
            return []
        return sorted(n[:-4] for n in names if n.endswith(".pem") and ID_RE.match(n[:-4]))

    @staticmethod
    def enroll(directory: Path, unit_id: str, public_pem: bytes) -> Path:
        """Write a unit's signing public key into a registry directory."""
        if not ID_RE.match(unit_id):
            raise ConfigError(f"{unit_id!r} is not a unit identifier")
        directory.mkdir(parents=True, exist_ok=True)
        load_public_pem(public_pem, origin=unit_id)
        path = directory / f"{unit_id}.pem"
        path.write_bytes(public_pem)
        return path
