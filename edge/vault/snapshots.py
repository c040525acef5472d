"""Sealed event snapshots (``.snp``): the JPEG of an analytics event, encrypted like footage.

A snapshot is a picture of the street (masked, downscaled), so it gets the protection of a
segment: AES-256-GCM under a fresh data key that is sealed with HPKE to the same recipients as
the epoch keys (the CSU, optionally the escrow key) and never written in clear, and an Ed25519
signature of the unit. Each snapshot carries its own sealed key rather than borrowing the
camera's epoch key: events are rare, a snapshot then opens without any envelope, and retention
can drop envelopes without caring which snapshot used them. The unit cannot open its own
snapshots, exactly as it cannot play its own recordings.

Byte layout (FORMATS.md, big-endian)::

    magic "ESNP" | version 1 | flags 0 | header_len u16 | wall_ns i64 | nonce 12 |
    ciphertext_len u64 | recipient_count u8 | device_id | camera_id | event_id |
    recipients (kem_id u16, key_id 16, sealed_len u16, sealed) | ciphertext | signature 64

The AEAD's associated data is the header; the signature is Ed25519 over
``"edge-snp-v1\\0" || SHA-256(header) || SHA-256(ciphertext)``. The event body binds the JPEG
by its SHA-256, so a verified event and its opened snapshot prove each other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import IntegrityError
from . import format as fmt
from .recipient_keys import (
    DATA_KEY_LEN,
    KEM_IDS,
    EpochKey,
    RecipientPrivate,
    RecipientPublic,
    suite,
)

SNP_MAGIC = b"ESNP"
_DOMAIN = b"edge-snp-v1\0"
_FIXED = struct.Struct(">4sBBHq12sQB")
_RCPT = struct.Struct(">H16sH")
#: A JPEG of a 480-pixel-wide analysed frame is tens of KB; this bounds what a parser allocates.
MAX_SNAPSHOT = 8 << 20


@dataclass(frozen=True, slots=True)
class SealedSnapshot:
    device_id: str
    camera_id: str
    event_id: str
    wall_ns: int
    nonce: bytes
    recipients: tuple[fmt.RecipientSeal, ...]
    header: bytes
    ciphertext: bytes


def hpke_info(device_id: str, camera_id: str, event_id: str) -> bytes:
    """Binds a snapshot's sealed key to its unit, camera and event."""
    return (
        b"edge-snapshot-key-v1\0"
        + fmt.pack_id(device_id)
        + fmt.pack_id(camera_id)
        + fmt.pack_id(event_id)
    )


def _signed_message(header: bytes, ciphertext: bytes) -> bytes:
    return _DOMAIN + fmt.sha256(header) + fmt.sha256(ciphertext)


def seal_snapshot(
    jpeg: bytes,
    *,
    device_id: str,
    camera_id: str,
    event_id: str,
    wall_ns: int,
    recipients: list[RecipientPublic],
    signing_key: ed25519.Ed25519PrivateKey,
) -> bytes:
    """The sealed file of ``jpeg``; its data key is wiped before this returns."""
    if not recipients:
        raise IntegrityError("no recipient key: a snapshot is never stored in clear")
    if not 0 < len(jpeg) <= MAX_SNAPSHOT:
        raise IntegrityError(f"snapshot of {len(jpeg)} bytes (1..{MAX_SNAPSHOT})")
    key = EpochKey()
    try:
        seals = key.seal_to(recipients, hpke_info(device_id, camera_id, event_id))
        nonce = key.next_nonce()
        ids = fmt.pack_id(device_id) + fmt.pack_id(camera_id) + fmt.pack_id(event_id)
        rcpt = b"".join(_RCPT.pack(s.kem_id, s.key_id, len(s.sealed)) + s.sealed for s in seals)
        header_len = _FIXED.size + len(ids) + len(rcpt)
        header = (
            _FIXED.pack(
                SNP_MAGIC,
                fmt.VERSION,
                0,
                header_len,
                wall_ns,
                nonce,
                len(jpeg) + fmt.TAG_LEN,
                len(seals),
            )
            + ids
            + rcpt
        )
        ciphertext = key.encrypt(nonce, jpeg, header)
    finally:
        key.wipe()
    return header + ciphertext + signing_key.sign(_signed_message(header, ciphertext))


def parse_snapshot(raw: bytes) -> SealedSnapshot:
    if len(raw) < _FIXED.size + fmt.SIG_LEN:
        raise IntegrityError(f"truncated snapshot ({len(raw)} bytes)")
    magic, version, _flags, header_len, wall_ns, nonce, ct_len, count = _FIXED.unpack_from(raw)
    if magic != SNP_MAGIC:
        raise IntegrityError(f"not a sealed snapshot (magic {bytes(magic)!r})")
    if version != fmt.VERSION:
        raise IntegrityError(f"unsupported snapshot version {version}")
    if not 0 < count <= fmt.MAX_RECIPIENTS or not 0 < ct_len <= MAX_SNAPSHOT + fmt.TAG_LEN:
        raise IntegrityError("bad snapshot header")
    if len(raw) != header_len + ct_len + fmt.SIG_LEN:
        raise IntegrityError("snapshot truncated or extended")
    header = raw[:header_len]
    device_id, pos = fmt.unpack_id(header, _FIXED.size, "device id")
    camera_id, pos = fmt.unpack_id(header, pos, "camera id")
    event_id, pos = fmt.unpack_id(header, pos, "event id")
    seals = []
    for _ in range(count):
        if pos + _RCPT.size > header_len:
            raise IntegrityError("truncated snapshot recipient")
        kem_id, kid, n = _RCPT.unpack_from(header, pos)
        pos += _RCPT.size
        if pos + n > header_len:
            raise IntegrityError("truncated sealed key in snapshot")
        seals.append(fmt.RecipientSeal(kem_id, bytes(kid), bytes(header[pos : pos + n])))
        pos += n
    if pos != header_len:
        raise IntegrityError("trailing bytes in snapshot header")
    return SealedSnapshot(
        device_id,
        camera_id,
        event_id,
        wall_ns,
        bytes(nonce),
        tuple(seals),
        header,
        raw[header_len : header_len + ct_len],
    )


def verify_snapshot_file(raw: bytes, public_key: ed25519.Ed25519PublicKey) -> SealedSnapshot:
    """The parsed snapshot once its signature holds; :class:`IntegrityError` otherwise."""
    snp = parse_snapshot(raw)
    try:
        public_key.verify(raw[-fmt.SIG_LEN :], _signed_message(snp.header, snp.ciphertext))
    except InvalidSignature:
        raise IntegrityError(f"snapshot of event {snp.event_id}: bad signature (altered)") from None
    return snp


def open_snapshot(snp: SealedSnapshot, private: RecipientPrivate) -> bytes:
    """The JPEG, with a recipient's private key (CSU side; the unit has none)."""
    info = hpke_info(snp.device_id, snp.camera_id, snp.event_id)
    for seal in snp.recipients:
        if seal.key_id != private.public.key_id:
            continue
        if seal.kem_id != KEM_IDS[private.kem]:
            raise IntegrityError("snapshot KEM does not match the key")
        try:
            data_key = suite(private.kem).decrypt(seal.sealed, private.key, info)
            if len(data_key) != DATA_KEY_LEN:
                raise IntegrityError("sealed snapshot key has the wrong length")
            return AESGCM(data_key).decrypt(snp.nonce, snp.ciphertext, snp.header)
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"snapshot of event {snp.event_id}: does not open with this key (altered?)"
            ) from None
    raise IntegrityError(
        f"snapshot of event {snp.event_id} is not sealed to this key "
        f"(key id {private.public.key_id.hex()})"
    )
