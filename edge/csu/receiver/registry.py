"""Who may talk to the receiver: enrolled units, the CA's revocation list, TLS contexts.

Three independent checks, all required:

1. the TLS handshake (TLS 1.3 only) demands a client certificate chaining to the configured CA,
   valid now, and not on the CRL loaded at start (OpenSSL refuses expired and revoked ones);
2. per request, the certificate's unit identity (its subject common name) must be enrolled in
   the registry directory, and its serial not on the *current* CRL (re-read when the file
   changes, so a revocation takes effect without restarting the receiver);
3. per segment, the signature must verify with the unit's signing key, which the registry
   trusts either through the unit's evidence certificate (``<unit-id>.crt``, certified by the
   same CA, presented by the unit itself) or a pinned key (``<unit-id>.pem``, copied by hand);
   see :mod:`edge.csu.receiver.trust` for the rules and their precedence.

Adding or removing a file enrols or withdraws a unit at once; a new CRL or the certificate's
expiry changes the verdict without a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from edge.csu.receiver.settings import TlsConfig
from edge.identity import load_public_pem

from ...errors import ConfigError, EdgeError, UplinkError
from ...fsutil import write_atomic
from ...uplink.protocol import ID_RE
from .trust import (
    Clock,
    SigningTrust,
    Source,
    UploadVerdict,
    judge,
    upload_verdict,
    utcnow,
)

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


def _units_context(
    tls: TlsConfig, crl_pem: Path | None, verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if verify_mode is ssl.CERT_REQUIRED:
        ctx.sslobject_class = _LoggedHandshake
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = verify_mode
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        if crl_pem is not None:
            ctx.load_verify_locations(cafile=crl_pem)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS material: {exc}") from None
    return ctx


def server_context(tls: TlsConfig, crl: RevocationList | None = None) -> ssl.SSLContext:
    """TLS 1.3 only, client certificate required, chaining to the configured CA only.

    With ``crl`` (the receiver's :class:`RevocationList`), the handshake checks the CRL that
    list holds *now*: every handshake first asks it for a newer file (one ``stat``) and, when
    there is one, moves the connection onto a context built with it (:class:`_CrlFollower`).
    OpenSSL refuses every client once its CRL is past nextUpdate, so a CRL loaded once at start
    would stop the whole fleet a week later even after a fresh one was published.
    """
    if crl is None or tls.crl_file is None:
        return _units_context(tls, tls.crl_file)
    follower = _CrlFollower(tls, crl)
    return follower.listener


class _CrlFollower:
    """Keeps the units listener's handshakes on the current CRL, without a restart.

    Python cannot take a CRL out of an SSL context, so a new context is built for each new CRL
    and each handshake is moved onto the newest one from the ClientHello callback (which OpenSSL
    calls for every handshake, SNI or not). Only the event loop's thread runs the callback.
    An expired CRL with no newer one stays in force: OpenSSL then refuses every unit (fail
    closed), and the reason is logged once per CRL, with the next step.
    """

    def __init__(
        self,
        tls: TlsConfig,
        crl: RevocationList,
        verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED,
        name: str = "units",
    ) -> None:
        self._tls = tls
        self._crl = crl
        self._verify_mode = verify_mode
        self._name = name
        self._version, pem = crl.verified_pem()
        self._current = self._build(pem)
        self.listener = self._build(pem)
        self.listener.sni_callback = self._on_client_hello
        self._expiry_logged = -1

    def _build(self, pem: bytes | None) -> ssl.SSLContext:
        if pem is None:
            return _units_context(self._tls, None, self._verify_mode)
        # OpenSSL loads CRLs from files only; the bytes are the ones RevocationList verified.
        with tempfile.NamedTemporaryFile(prefix="edge-csu-crl-", suffix=".pem") as tmp:
            tmp.write(pem)
            tmp.flush()
            return _units_context(self._tls, Path(tmp.name), self._verify_mode)

    def _on_client_hello(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        version, pem = self._crl.verified_pem()
        if version != self._version:
            try:
                self._current = self._build(pem)
                self._version = version
                log.info("%s listener: handshakes now check the new CRL", self._name)
            except ConfigError as exc:
                log.error(
                    "%s listener: cannot use the new CRL, keeping the previous: %s",
                    self._name,
                    exc,
                )
        problem = self._crl.expiry_problem()
        if problem is not None and self._expiry_logged != self._version:
            self._expiry_logged = self._version
            log.error("%s", problem)
        ssl_obj.context = self._current


def operator_context(tls: TlsConfig, crl: RevocationList | None = None) -> ssl.SSLContext:
    """TLS 1.3 only for operators, a client certificate asked for but optional: console
    accounts marked for certificate log-in present theirs (:mod:`edge.csu.console.certlogin`),
    others and bearer-token scripts none. A certificate presented is checked as the units'
    are: chaining to the configured CA, valid now, not on the current CRL (``crl``, followed
    without restart); any other is refused at the handshake."""
    if crl is None or tls.crl_file is None:
        return _units_context(tls, tls.crl_file, ssl.CERT_OPTIONAL)
    return _CrlFollower(tls, crl, ssl.CERT_OPTIONAL, "operators").listener


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
    """What tells a changed file: the inode too, because an atomic rewrite (new file renamed
    over the old) of the same size within one clock tick keeps mtime and size."""

    mtime_ns: int
    size: int
    inode: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)


class RevocationList:
    """Serial numbers revoked by the CA, re-read whenever the CRL file changes.

    The CRL's signature is checked against the CA certificate; a CRL that fails to verify keeps
    the previous list in force (and is logged), it never clears revocations. A CRL past its
    nextUpdate stays in force too (the handshake then refuses every unit: fail closed) until a
    newer one is published; :meth:`expiry_problem` says so.
    Thread-safe: the lock protects the serial set, the CRL and its bytes, and the file stamp.
    """

    def __init__(self, crl_file: Path | None, ca_file: Path, *, clock: Clock = utcnow) -> None:
        self.crl_file = crl_file
        self.ca_file = ca_file
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._serials: frozenset[int] = frozenset()
        self._crl: x509.CertificateRevocationList | None = None
        self._pem: bytes | None = None
        self._version = 0
        if crl_file is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        assert self.crl_file is not None
        stamp = _stamp(self.crl_file)
        with self._lock:
            if not force and stamp == self._stamp:
                return
            try:
                pem = self.crl_file.read_bytes()
                crl = x509.load_pem_x509_crl(pem)
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
            self._crl = crl
            self._pem = pem
            self._version += 1
            self._stamp = stamp
            log.info(
                "CRL %s: %d revoked certificate(s), next update %s",
                self.crl_file,
                len(self._serials),
                f"{crl.next_update_utc:%Y-%m-%d %H:%M:%S} UTC" if crl.next_update_utc else "none",
            )

    def current(self) -> tuple[int, list[x509.CertificateRevocationList]]:
        """(version, CRLs in force): the version changes whenever another CRL was loaded."""
        if self.crl_file is None:
            return 0, []
        self._reload()
        with self._lock:
            return self._version, [self._crl] if self._crl is not None else []

    def verified_pem(self) -> tuple[int, bytes | None]:
        """(version, PEM of the CRL in force), after looking for a newer file."""
        if self.crl_file is None:
            return 0, None
        self._reload()
        with self._lock:
            return self._version, self._pem

    def next_update(self) -> dt.datetime | None:
        """When the CRL in force stops being valid (its nextUpdate), if it has one."""
        with self._lock:
            return self._crl.next_update_utc if self._crl is not None else None

    def expiry_problem(self) -> str | None:
        """Why every unit is refused at the handshake because of the CRL, or None."""
        next_update = self.next_update()
        if next_update is None or self._clock() <= next_update:
            return None
        return (
            f"CRL {self.crl_file} expired on {next_update:%Y-%m-%d %H:%M:%S} UTC (its "
            "nextUpdate): every unit handshake is refused until a fresh CRL is published there "
            "(edge-csu ca crl CA-DIR --out FILE); it is picked up without restart"
        )

    def is_revoked(self, cert_der: bytes) -> bool:
        if self.crl_file is None:
            return False
        self._reload()
        serial = x509.load_der_x509_certificate(cert_der).serial_number
        with self._lock:
            return serial in self._serials


@dataclass(frozen=True, slots=True)
class _Cached:
    verdict: SigningTrust
    inputs: tuple[object, ...]


class UnitRegistry:
    """Enrolled units and their signing keys, read from a directory, refreshed on change.

    ``ca_file`` (the receiver's client CA file) and ``crl`` enable the certificate form; without
    them only pinned keys are trusted. Thread-safe: ``_lock`` protects the verdict cache and the
    CA certificates (lookups come from the event loop and the store pool); ``_install_lock``
    serialises installs of certificates (last writer wins is not acceptable there: the "never
    older" rule compares with what is held).
    """

    def __init__(
        self,
        directory: Path,
        *,
        ca_file: Path | None = None,
        crl: RevocationList | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.directory = directory
        self.ca_file = ca_file
        self.crl = crl
        self._clock = clock
        self._lock = threading.Lock()
        self._install_lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._ca_stamp: _Stamp | None = None
        self._ca_certs: list[x509.Certificate] = []

    def _cas(self) -> tuple[_Stamp | None, list[x509.Certificate]]:
        """The client CA certificates, re-read when the file changes (caller holds the lock)."""
        if self.ca_file is None:
            return None, []
        stamp = _stamp(self.ca_file)
        if stamp != self._ca_stamp:
            try:
                self._ca_certs = x509.load_pem_x509_certificates(self.ca_file.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("client CA file %s unreadable: %s", self.ca_file, exc)
                self._ca_certs = []
            self._ca_stamp = stamp
        return stamp, self._ca_certs

    def _crls(self) -> tuple[int, list[x509.CertificateRevocationList]]:
        return self.crl.current() if self.crl is not None else (0, [])

    def trust(self, unit_id: str) -> SigningTrust:
        """How (and whether) ``unit_id``'s signing key is trusted now."""
        if not ID_RE.match(unit_id):
            return SigningTrust(unit_id, None, Source.NONE, "not a unit identifier")
        crt, pem = self.directory / f"{unit_id}.crt", self.directory / f"{unit_id}.pem"
        crl_version, crls = self._crls()
        now = self._clock()
        with self._lock:
            ca_stamp, ca_certs = self._cas()
            crt_stamp = _stamp(crt) if self.ca_file is not None else None
            inputs = (crt_stamp, _stamp(pem), ca_stamp, crl_version)
            cached = self._cache.get(unit_id)
            if (
                cached is not None
                and cached.inputs == inputs
                and (cached.verdict.recheck_at is None or now < cached.verdict.recheck_at)
            ):
                return cached.verdict
            verdict = self._judge(unit_id, crt if crt_stamp else None, pem, ca_certs, crls, now)
            if cached is None or cached.verdict != verdict:
                log.info(
                    "signing key of %s: %s%s",
                    unit_id,
                    verdict.source.value if verdict.key is not None else "not trusted",
                    f" ({verdict.problem})" if verdict.problem else "",
                )
            self._cache[unit_id] = _Cached(verdict, inputs)
            return verdict

    @staticmethod
    def _judge(
        unit_id: str,
        crt: Path | None,
        pem: Path,
        ca_certs: list[x509.Certificate],
        crls: list[x509.CertificateRevocationList],
        now: dt.datetime,
    ) -> SigningTrust:
        pinned: ed25519.Ed25519PublicKey | None = None
        pinned_problem = None
        try:
            pinned = load_public_pem(pem.read_bytes(), origin=str(pem))
        except FileNotFoundError:
            pass
        except (OSError, EdgeError) as exc:
            pinned_problem = f"pinned key of {unit_id} unusable: {exc}"
        certificate = None
        if crt is not None:
            try:
                certificate = crt.read_bytes()
            except FileNotFoundError:
                pass
            except OSError as exc:
                pinned_problem = f"signing certificate of {unit_id} unreadable: {exc}"
        return judge(
            unit_id,
            certificate=certificate,
            pinned=pinned,
            pinned_problem=pinned_problem,
            ca_certs=ca_certs,
            crls=crls,
            now=now,
        )

    def signing_key(self, unit_id: str) -> ed25519.Ed25519PublicKey | None:
        """The unit's trusted key, or None when the unit is not (or no longer) trusted."""
        return self.trust(unit_id).key

    def install_certificate(self, unit_id: str, body: bytes) -> UploadVerdict:
        """Judge a signing certificate the unit presents; store it as ``<unit>.crt`` when it is
        valid and not older than the one held (:func:`upload_verdict`)."""
        if self.ca_file is None:
            return UploadVerdict(404, "this receiver trusts pinned keys only")
        crt = self.directory / f"{unit_id}.crt"
        _, crls = self._crls()
        now = self._clock()
        with self._lock:
            _, ca_certs = self._cas()
        # Its own lock: path validation and the fsync'd write must not hold up other units'
        # lookups, only other installs (the "never older" rule compares with what is held).
        with self._install_lock:
            try:
                held: bytes | None = crt.read_bytes()
            except FileNotFoundError:
                held = None
            verdict = upload_verdict(
                unit_id, body, held=held, ca_certs=ca_certs, crls=crls, now=now
            )
            if verdict.pem is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(crt, verdict.pem, mode=0o644)
        if verdict.status == 201:
            log.info("signing certificate of %s installed from the unit", unit_id)
        elif verdict.status >= 400:
            log.warning("signing certificate of %s refused: %s", unit_id, verdict.reason)
        return verdict

    def unit_ids(self) -> list[str]:
        try:
            names = [p.name for p in self.directory.iterdir()]
        except OSError:
            return []
        stems = {n[:-4] for n in names if n.endswith((".pem", ".crt"))}
        return sorted(s for s in stems if ID_RE.match(s))

    @staticmethod
    def enroll(directory: Path, unit_id: str, public_pem: bytes) -> Path:
        """Pin a unit's signing public key in a registry directory (the form without a PKI
        evidence profile)."""
        if not ID_RE.match(unit_id):
            raise ConfigError(f"{unit_id!r} is not a unit identifier")
        directory.mkdir(parents=True, exist_ok=True)
        load_public_pem(public_pem, origin=unit_id)
        path = directory / f"{unit_id}.pem"
        path.write_bytes(public_pem)
        return path
