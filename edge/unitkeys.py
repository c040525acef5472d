"""The unit's own keys under ``<data_dir>/keys/``: loading, first-run creation, export.

The Ed25519 signing key (``unit-signing.pem``, PKCS#8 PEM, mode 0600) signs every sealed
segment, epoch envelope, retention checkpoint and audit record. Its public half is written
next to it (``unit-signing.pub.pem``) so that verification never needs the private key.
Other key material of the unit (the TLS/EAP key, its certificate, the city CA chain) lives in
the same directory and reuses :func:`write_new_private` and :func:`key_id`.

Every write is atomic (temporary file in the same directory, fsync, rename, fsync of the
directory): a power cut leaves either the old key or the new one, never half a key. A private key
is written with :func:`write_new_private`, which never replaces an existing file: a key that
recordings or certificates rest on is created once and never overwritten by accident.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .errors import ConfigError, KeyExistsError, VaultError

log = logging.getLogger(__name__)

SIGNING_KEY_NAME = "unit-signing.pem"
SIGNING_PUB_NAME = "unit-signing.pub.pem"


def keys_dir_of(data_dir: Path) -> Path:
    return data_dir / "keys"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old content or the new, never a mix.

    The temporary file is created with its final mode, so a private key is never readable by
    others, not even for an instant.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # umask may have removed bits we asked for; set exactly
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not also leave half a file behind
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data``; :class:`KeyExistsError` if anything is already there.

    The content is written and fsync'd under a temporary name (created exclusively, mode 0600
    from the first byte) and then hard-linked to ``path``: the link is the exclusive, atomic
    step (like ``O_EXCL``), so two writers racing, or a tired technician running a command
    twice, can never replace a key, and a power cut never leaves half of one.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            _write_exclusive(path, data, mode)  # no hard links here (a FAT stick for a CA)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _exists(path: Path) -> KeyExistsError:
    return KeyExistsError(f"{path}: a key file is already there; refusing to overwrite it")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """``O_EXCL`` creation, for file systems without hard links: still never over an existing
    file, though a crash may leave it short (the caller's key is then unusable, not replaced)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyExistsError(
            f"{path}: a key file is already there; refusing to overwrite it"
        ) from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_private(path: Path, data: bytes) -> None:
    """:func:`write_new` with mode 0600: how every private key of the firmware is written."""
    write_new(path, data, mode=0o600)


#: PEM labels of private material (PKCS#8, encrypted PKCS#8, SEC1, PKCS#1, OpenSSH).
_PRIVATE_PEM_MARK = b"PRIVATE KEY-----"


def private_material(data: bytes) -> str | None:
    """What private material ``data`` holds (a file meant to hold a *public* key), or None.

    Recognises a recipient key file with its ``private`` field (``edge-csu keygen``'s
    ``NAME.key.json``) and any PEM private key. Pure: the callers read the file.
    """
    if _PRIVATE_PEM_MARK in data:
        return "a PEM private key"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and "private" in doc:
        return "a recipient key file with its private half (NAME.key.json)"
    return None


def refuse_private_material(data: bytes, origin: str) -> None:
    """:class:`ConfigError` when a file configured as a public key holds private material.

    A unit holding the CSU's (or the escrow's) private key can open its own recordings: the
    whole point of sealing them is lost, so this is refused, never warned about.
    """
    what = private_material(data)
    if what is not None:
        raise ConfigError(
            f"{origin} holds {what}: a unit must only ever hold the PUBLIC key (NAME.pub.json "
            "from edge-csu keygen). Remove the private key from this unit and treat it as "
            "exposed: recordings sealed to it can be read by whoever copied it"
        )


def key_id(public_raw: bytes) -> str:
    """Short stable identifier of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_pem(data: bytes, *, origin: str) -> ed25519.Ed25519PublicKey:
    """Parse an Ed25519 public key (SubjectPublicKeyInfo PEM)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise VaultError(f"{origin}: not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise VaultError(f"{origin}: not an Ed25519 public key")
    return key


def load_signing_key(keys_dir: Path) -> ed25519.Ed25519PrivateKey:
    """Load the existing signing key; :class:`VaultError` if it is missing or not Ed25519."""
    path = keys_dir / SIGNING_KEY_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaultError(f"{path}: cannot read the unit signing key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise VaultError(f"{path}: not a PKCS#8 PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise VaultError(f"{path}: the unit signing key must be Ed25519")
    return key


def load_or_create_signing_key(keys_dir: Path) -> ed25519.Ed25519PrivateKey:
    """The unit's Ed25519 signing key, created (0600, atomically) on first use.

    Also (re)writes the public half ``unit-signing.pub.pem`` when it is missing, so tools that
    only verify never have to open the private key.
    """
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / SIGNING_KEY_NAME
    if path.exists():
        key = load_signing_key(keys_dir)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s: mode %o lets others read the signing key; fixing to 0600", path, mode)
            path.chmod(0o600)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_new_private(path, pem)
        except KeyExistsError:
            # Another process created it between our check and our write: theirs stands.
            return load_or_create_signing_key(keys_dir)
        log.info("created unit signing key %s (id %s)", path, key_id(public_raw(key.public_key())))
    pub_path = keys_dir / SIGNING_PUB_NAME
    pub = public_pem(key.public_key())
    if not pub_path.exists() or pub_path.read_bytes() != pub:
        write_atomic(pub_path, pub)
    return key


def load_signing_public_key(keys_dir: Path) -> ed25519.Ed25519PublicKey:
    """The unit's public verification key, from ``unit-signing.pub.pem`` (no private key read)."""
    path = keys_dir / SIGNING_PUB_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaultError(f"{path}: cannot read the unit public key: {exc.strerror}") from None
    return load_public_pem(data, origin=str(path))
