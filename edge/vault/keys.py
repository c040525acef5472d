"""Recipient keys and epoch data keys.

Recipient key files (``edge-csu keygen``) are small JSON documents, because the hybrid
ML-KEM-768 + X25519 key has no standard PEM form yet::

    {"format": "edge-recipient-key", "version": 1, "kem": "mlkem768-x25519",
     "public": "<base64>", "private": "<base64>"}      (private only in the 0600 file)

``public`` is the ML-KEM-768 encapsulation key (1184 bytes) followed by the X25519 public key
(32 bytes), or the X25519 key alone; ``private`` is the ML-KEM seed (64 bytes) followed by the
X25519 private key (32 bytes), or the X25519 key alone.

An :class:`EpochKey` is a fresh random AES-256 key, sealed with HPKE (RFC 9180, base mode,
HKDF-SHA256, AES-256-GCM) to every recipient and kept only in memory; :meth:`EpochKey.wipe`
overwrites it. See docs/FORMATS.md for the limits of erasure in a Python process.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..config import EdgeConfig, RecipientKem
from ..errors import ConfigError, IntegrityError, KeyExistsError, VaultError
from ..unitkeys import fsync_dir, refuse_private_material, write_new, write_new_private
from . import format as fmt

log = logging.getLogger(__name__)

KEY_FORMAT = "edge-recipient-key"
DATA_KEY_LEN = 32

#: RFC 9180 KEM identifiers written in envelopes.
KEM_IDS = {RecipientKem.X25519: 0x0020, RecipientKem.MLKEM768_X25519: 0x647A}
_KEMS = {
    RecipientKem.X25519: hpke.KEM.X25519,
    RecipientKem.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519,
}

PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


def suite(kem: RecipientKem) -> hpke.Suite:
    return hpke.Suite(_KEMS[kem], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def kem_by_id(kem_id: int) -> RecipientKem:
    for kem, value in KEM_IDS.items():
        if value == kem_id:
            return kem
    raise IntegrityError(f"unknown KEM id 0x{kem_id:04x}")


@dataclass(frozen=True, slots=True)
class RecipientPublic:
    kem: RecipientKem
    raw: bytes
    key: PublicKey
    origin: str = ""

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()[:16]


@dataclass(frozen=True, slots=True)
class RecipientPrivate:
    kem: RecipientKem
    key: PrivateKey
    public: RecipientPublic


def _public_from_raw(kem: RecipientKem, raw: bytes, origin: str) -> RecipientPublic:
    try:
        if kem is RecipientKem.X25519:
            key: PublicKey = x25519.X25519PublicKey.from_public_bytes(raw)
        else:
            if len(raw) != 1184 + 32:
                raise ValueError(f"{len(raw)} bytes, expected 1216")
            key = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
                x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
            )
    except ValueError as exc:
        raise VaultError(f"{origin}: bad {kem.value} public key: {exc}") from None
    return RecipientPublic(kem, raw, key, origin)


def generate(kem: RecipientKem) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new recipient key pair as (public document, private document)."""
    xk = x25519.X25519PrivateKey.generate()
    if kem is RecipientKem.X25519:
        pub_raw = xk.public_key().public_bytes_raw()
        priv_raw = xk.private_bytes_raw()
    else:
        mk = mlkem.MLKEM768PrivateKey.generate()
        pub_raw = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        priv_raw = mk.private_bytes_raw() + xk.private_bytes_raw()
    public = {
        "format": KEY_FORMAT,
        "version": 1,
        "kem": kem.value,
        "public": base64.b64encode(pub_raw).decode(),
    }
    return public, {**public, "private": base64.b64encode(priv_raw).decode()}


def keypair_paths(out_dir: Path, name: str = "csu") -> tuple[Path, Path]:
    """(``NAME.pub.json``, ``NAME.key.json``) in ``out_dir``."""
    return out_dir / f"{name}.pub.json", out_dir / f"{name}.key.json"


def write_keypair(out_dir: Path, kem: RecipientKem, name: str = "csu") -> tuple[Path, Path]:
    """New key pair in ``out_dir``: ``NAME.pub.json`` (0644), ``NAME.key.json`` (0600).

    :class:`KeyExistsError` when either file is already there: every recording sealed to a
    recipient key needs that key's private half, so it is never replaced (see
    :func:`rotate_keypair` for the deliberate replacement).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pub_path, key_path = keypair_paths(out_dir, name)
    held = [p for p in (key_path, pub_path) if p.exists()]
    if held:
        raise KeyExistsError(
            f"{', '.join(map(str, held))}: a key of that name is already there; refusing to "
            "overwrite it (recordings sealed to it would become unreadable). To replace it "
            "deliberately, keeping the old key: edge-csu keygen --rotate"
        )
    public, private = generate(kem)
    write_new_private(key_path, (json.dumps(private, indent=1) + "\n").encode())
    write_new(pub_path, (json.dumps(public, indent=1) + "\n").encode(), mode=0o644)
    return pub_path, key_path


def rotate_keypair(
    out_dir: Path, kem: RecipientKem, name: str = "csu", *, now: dt.datetime | None = None
) -> tuple[Path, Path, list[Path]]:
    """Replace the key pair ``NAME`` with a new one, keeping the old files under dated names.

    The old files are renamed ``NAME.key.<UTC time>.json`` / ``NAME.pub.<UTC time>.json`` (a
    name never used before: a rotation never overwrites an earlier archive) before the new
    pair is created; nothing is deleted. Returns (public, private, archived files).
    """
    pub_path, key_path = keypair_paths(out_dir, name)
    if not key_path.exists():
        raise VaultError(f"{key_path}: no key to rotate (create one with edge-csu keygen)")
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    moves = [
        (path, out_dir / f"{name}.{kind}.{stamp}.json")
        for path, kind in ((key_path, "key"), (pub_path, "pub"))
        if path.exists()
    ]
    for _, dated in moves:
        if dated.exists():
            raise KeyExistsError(f"{dated}: already there; rotate again in a second")
    archived = []
    for path, dated in moves:
        try:
            os.link(path, dated)  # exclusive: an archive of the same second is never replaced
        except FileExistsError:
            raise KeyExistsError(f"{dated}: already there; rotate again in a second") from None
        path.unlink()
        archived.append(dated)
    fsync_dir(out_dir)
    pub, key = write_keypair(out_dir, kem, name)
    return pub, key, archived


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise VaultError(f"{path}: cannot read recipient key: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise VaultError(f"{path}: not a recipient key file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT or doc.get("version") != 1:
        raise VaultError(f"{path}: not an {KEY_FORMAT} version 1 file")
    return doc


def _b64(doc: dict[str, Any], field: str, path: Path) -> bytes:
    value = doc.get(field)
    if not isinstance(value, str):
        raise VaultError(f"{path}: field {field!r} missing")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise VaultError(f"{path}: field {field!r} is not base64") from None


def _kem_of(doc: dict[str, Any], path: Path) -> RecipientKem:
    try:
        return RecipientKem(str(doc.get("kem")))
    except ValueError:
        raise VaultError(f"{path}: unknown kem {doc.get('kem')!r}") from None


def load_public(path: Path) -> RecipientPublic:
    """A recipient public key; :class:`ConfigError` when the file also holds private material
    (see :func:`edge.unitkeys.refuse_private_material`)."""
    try:
        refuse_private_material(path.read_bytes(), str(path))
    except OSError as exc:
        raise VaultError(f"{path}: cannot read recipient key: {exc.strerror}") from None
    doc = _read_doc(path)
    return _public_from_raw(_kem_of(doc, path), _b64(doc, "public", path), str(path))


def load_private(path: Path) -> RecipientPrivate:
    doc = _read_doc(path)
    kem = _kem_of(doc, path)
    raw = _b64(doc, "private", path)
    try:
        if kem is RecipientKem.X25519:
            xonly = x25519.X25519PrivateKey.from_private_bytes(raw)
            pub_raw = xonly.public_key().public_bytes_raw()
            key: PrivateKey = xonly
        else:
            if len(raw) != 64 + 32:
                raise ValueError(f"{len(raw)} bytes, expected 96")
            mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64])
            xk = x25519.X25519PrivateKey.from_private_bytes(raw[64:])
            key = hpke.MLKEM768X25519PrivateKey(mk, xk)
            pub_raw = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    except ValueError as exc:
        raise VaultError(f"{path}: bad {kem.value} private key: {exc}") from None
    return RecipientPrivate(kem, key, _public_from_raw(kem, pub_raw, str(path)))


class EpochKey:
    """One epoch's AES-256-GCM data key: in memory only, sealed to the recipients.

    Nonces are a per-key counter (the key is fresh and random, so counter nonces never repeat
    under it). Used by one recording thread at a time (the camera lane's lock).
    """

    def __init__(self, epoch_id: bytes | None = None, key: bytes | None = None) -> None:
        self.epoch_id = epoch_id if epoch_id is not None else os.urandom(fmt.EPOCH_ID_LEN)
        self._key = bytearray(key if key is not None else os.urandom(DATA_KEY_LEN))
        self._aead: AESGCM | None = AESGCM(bytes(self._key))
        self._counter = 0

    def next_nonce(self) -> bytes:
        self._counter += 1
        return bytes(4) + self._counter.to_bytes(8, "big")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if self._aead is None:
            raise VaultError("epoch key already wiped")
        return self._aead.encrypt(nonce, plaintext, aad)

    def seal_to(self, recipients: list[RecipientPublic], info: bytes) -> list[fmt.RecipientSeal]:
        return [
            fmt.RecipientSeal(
                fmt_kem_id(r.kem), r.key_id, suite(r.kem).encrypt(bytes(self._key), r.key, info)
            )
            for r in recipients
        ]

    def wipe(self) -> None:
        """Overwrite the key bytes we own and drop the cipher object."""
        for i in range(len(self._key)):
            self._key[i] = 0
        self._aead = None

    @property
    def wiped(self) -> bool:
        return self._aead is None and not any(self._key)


def fmt_kem_id(kem: RecipientKem) -> int:
    return KEM_IDS[kem]


def open_envelope(env: fmt.EpochEnvelope, private: RecipientPrivate) -> bytes:
    """The epoch data key sealed in ``env`` for ``private``; :class:`IntegrityError` otherwise."""
    info = fmt.hpke_info(env.device_id, env.camera_id, env.epoch_id)
    for seal in env.recipients:
        if seal.key_id != private.public.key_id:
            continue
        if seal.kem_id != KEM_IDS[private.kem]:
            raise IntegrityError("envelope KEM does not match the key")
        try:
            key = suite(private.kem).decrypt(seal.sealed, private.key, info)
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"epoch {env.epoch_id.hex()}: the sealed key does not open with this key"
            ) from None
        if len(key) != DATA_KEY_LEN:
            raise IntegrityError("sealed epoch key has the wrong length")
        return key
    raise IntegrityError(
        f"epoch {env.epoch_id.hex()} is not sealed to this key (key id "
        f"{private.public.key_id.hex()})"
    )


def decrypt_segment(seg: fmt.SealedSegment, data_key: bytes) -> tuple[bytes, bytes]:
    """(init, media) of a sealed segment; :class:`IntegrityError` if it does not authenticate."""
    try:
        plain = AESGCM(data_key).decrypt(seg.header.nonce, bytes(seg.ciphertext), seg.header_bytes)
    except InvalidTag:
        raise IntegrityError(
            f"segment {seg.header.camera_id}#{seg.header.sequence}: does not decrypt "
            "(wrong key or altered)"
        ) from None
    n = seg.header.init_len
    return plain[:n], plain[n:]


def _configured_public(path: Path, key: str) -> RecipientPublic:
    try:
        return load_public(path)
    except ConfigError as exc:
        raise ConfigError(exc.reason, key=key) from None


def resolve_recipients(cfg: EdgeConfig) -> list[RecipientPublic]:
    """The recipients of the epoch keys; never none (the vault never records in clear)."""
    v = cfg.vault
    if v.csu_public_key is None:
        if not v.demo_recipient:
            raise ConfigError(
                "required: the CSU recipient public key (edge-csu keygen); the unit never "
                "records unencrypted",
                key="vault.csu_public_key",
            )
        demo = cfg.unit.data_dir / "demo-csu"
        if not (demo / "csu.pub.json").exists():
            write_keypair(demo, v.kem)
        log.warning(
            "DEMO ONLY: recordings are sealed to the demo key in %s, so THIS UNIT CAN READ ITS "
            "OWN RECORDINGS. Never use this on a real unit: set vault.csu_public_key.",
            demo,
        )
        recipients = [load_public(demo / "csu.pub.json")]
    else:
        if v.demo_recipient:
            raise ConfigError(
                "demo_recipient cannot be combined with csu_public_key", key="vault.demo_recipient"
            )
        recipients = [_configured_public(v.csu_public_key, "vault.csu_public_key")]
    if v.escrow_public_key is not None:
        recipients.append(_configured_public(v.escrow_public_key, "vault.escrow_public_key"))
    for r in recipients:
        if r.kem is not v.kem:
            raise ConfigError(
                f"{r.origin} is a {r.kem.value} key but vault.kem is {v.kem.value}",
                key="vault.kem",
            )
    return recipients
