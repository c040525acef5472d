"""The sealed-segment, epoch-envelope and checkpoint formats (docs/FORMATS.md, byte by byte).

One format for local storage, uplink and evidence export: the bytes the vault writes are the
bytes the CSU receives. Everything here is pure: bytes in, records out, no files, no clock.
Parsers raise :class:`IntegrityError` with a precise reason for any malformed input, never
another exception. Integers are big-endian.

Sealed segment (``.seg``)::

    header      fixed part (struct _SEG_FIXED) + device id + camera id      (AEAD associated data)
    ciphertext  AES-256-GCM(epoch data key, nonce, init || media, aad=header)
    signature   Ed25519 over  b"edge-seg-v1\\0" || SHA-256(header) || SHA-256(ciphertext)

The chain hash of a segment is SHA-256 over its complete bytes; the next segment of the same
camera carries it as ``prev_hash``. Version 2 adds the mask commitment to the header (after
the ids): which privacy-mask set and configuration version held from which frame on
(:mod:`edge.privacy.commitment`); version 1 segments, made before, stay readable.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError
from ..privacy.commitment import DIGEST_LEN, Committed, MaskCommitment

SEG_MAGIC = b"ESEG"
ENV_MAGIC = b"EENV"
CKP_MAGIC = b"ECKP"
VERSION = 1
#: Sealed segments with a mask commitment (version 1 without one stays readable).
SEG_VERSION_MASKS = 2
HASH_LEN = 32
SIG_LEN = 64
EPOCH_ID_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
ZERO_HASH = bytes(HASH_LEN)

_SEG_DOMAIN = b"edge-seg-v1\0"
_ENV_DOMAIN = b"edge-env-v1\0"
_CKP_DOMAIN = b"edge-ckp-v1\0"

# magic, version, flags, header_len, sequence, start_ns, end_ns, frame_count,
# first_frame_index, epoch_id, nonce, prev_hash, init_len, ciphertext_len
_SEG_FIXED = struct.Struct(">4sBBHQqqIQ16s12s32sIQ")
# the two length-prefixed identifiers follow: u8 length + UTF-8
MAX_ID_LEN = 63
MAX_PAYLOAD = 1 << 32  # 4 GiB: far above any 10 s segment; bounds what a parser allocates
# Version 2 header extension after the ids: entry count, then per entry the capture time from
# which it holds, the mask-set digest and the configuration version.
_MASK_COUNT = struct.Struct(">H")
_MASK_ENTRY = struct.Struct(f">q{DIGEST_LEN}s{DIGEST_LEN}s")
MAX_MASK_ENTRIES = 900  # keeps header_len (16 bits) in range; a set changes on SIGHUP only


def sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def _pack_id(value: str) -> bytes:
    raw = value.encode("utf-8")
    if not 0 < len(raw) <= MAX_ID_LEN:
        raise IntegrityError(f"identifier {value!r} must be 1-{MAX_ID_LEN} bytes")
    return bytes([len(raw)]) + raw


def _unpack_id(data: bytes | memoryview, pos: int, what: str) -> tuple[str, int]:
    if pos >= len(data):
        raise IntegrityError(f"truncated: {what} missing")
    n = data[pos]
    if not 0 < n <= MAX_ID_LEN or pos + 1 + n > len(data):
        raise IntegrityError(f"bad {what} length {n}")
    try:
        value = bytes(data[pos + 1 : pos + 1 + n]).decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{what} is not UTF-8") from None
    return value, pos + 1 + n


#: Length-prefixed identifiers, for the other sealed formats (event snapshots).
pack_id = _pack_id
unpack_id = _unpack_id


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    device_id: str
    camera_id: str
    sequence: int
    """Per camera, consecutive for the whole life of the vault (not per session)."""
    start_wall_ns: int
    end_wall_ns: int
    frame_count: int
    first_frame_index: int
    epoch_id: bytes
    nonce: bytes
    prev_hash: bytes
    init_len: int
    """Length of the init segment at the start of the plaintext (init || media)."""
    ciphertext_len: int
    flags: int = 0
    masks: tuple[MaskCommitment, ...] = ()
    """The mask commitment (version 2): which mask set and configuration version held from
    which instant; empty in a version 1 segment, recorded before commitments existed."""

    @property
    def version(self) -> int:
        return SEG_VERSION_MASKS if self.masks else VERSION

    def pack(self) -> bytes:
        ids = _pack_id(self.device_id) + _pack_id(self.camera_id)
        if self.masks:
            ids += _pack_masks(self)
        header_len = _SEG_FIXED.size + len(ids)
        return (
            _SEG_FIXED.pack(
                SEG_MAGIC,
                self.version,
                self.flags,
                header_len,
                self.sequence,
                self.start_wall_ns,
                self.end_wall_ns,
                self.frame_count,
                self.first_frame_index,
                self.epoch_id,
                self.nonce,
                self.prev_hash,
                self.init_len,
                self.ciphertext_len,
            )
            + ids
        )


def _pack_masks(header: SegmentHeader) -> bytes:
    entries = header.masks
    _check_masks(entries, header.start_wall_ns, header.end_wall_ns, header.frame_count)
    out = bytearray(_MASK_COUNT.pack(len(entries)))
    for e in entries:
        out += _MASK_ENTRY.pack(e.from_wall_ns, e.committed.mask_set, e.committed.config_version)
    return bytes(out)


def _check_masks(
    entries: tuple[MaskCommitment, ...], start_ns: int, end_ns: int, frame_count: int
) -> None:
    if not 0 < len(entries) <= min(max(frame_count, 1), MAX_MASK_ENTRIES):
        raise IntegrityError(f"mask commitment: {len(entries)} entries for {frame_count} frames")
    if entries[0].from_wall_ns != start_ns:
        raise IntegrityError("mask commitment: the first entry does not start with the segment")
    for before, after in itertools.pairwise(entries):
        if not before.from_wall_ns <= after.from_wall_ns <= end_ns:
            raise IntegrityError("mask commitment: entries out of order or past the segment")
    for e in entries:
        if len(e.committed.mask_set) != DIGEST_LEN or len(e.committed.config_version) != DIGEST_LEN:
            raise IntegrityError("mask commitment: bad digest length")


def _unpack_masks(data: bytes | memoryview, pos: int) -> tuple[tuple[MaskCommitment, ...], int]:
    if pos + _MASK_COUNT.size > len(data):
        raise IntegrityError("truncated: mask commitment missing")
    (count,) = _MASK_COUNT.unpack_from(data, pos)
    pos += _MASK_COUNT.size
    if pos + count * _MASK_ENTRY.size > len(data):
        raise IntegrityError(f"truncated: mask commitment of {count} entries")
    entries = []
    for _ in range(count):
        at, mask_set, version = _MASK_ENTRY.unpack_from(data, pos)
        entries.append(MaskCommitment(at, Committed(bytes(mask_set), bytes(version))))
        pos += _MASK_ENTRY.size
    return tuple(entries), pos


def parse_segment_header(data: bytes | memoryview) -> tuple[SegmentHeader, int]:
    """The header of a sealed segment and its length in bytes."""
    if len(data) < _SEG_FIXED.size:
        raise IntegrityError(f"truncated: {len(data)} bytes is shorter than a segment header")
    (
        magic,
        version,
        flags,
        header_len,
        sequence,
        start_ns,
        end_ns,
        frame_count,
        first_index,
        epoch_id,
        nonce,
        prev_hash,
        init_len,
        ct_len,
    ) = _SEG_FIXED.unpack_from(data, 0)
    if magic != SEG_MAGIC:
        raise IntegrityError(f"not a sealed segment (magic {bytes(magic)!r})")
    if version not in (VERSION, SEG_VERSION_MASKS):
        raise IntegrityError(f"unsupported sealed-segment version {version}")
    device_id, pos = _unpack_id(data, _SEG_FIXED.size, "device id")
    camera_id, pos = _unpack_id(data, pos, "camera id")
    masks: tuple[MaskCommitment, ...] = ()
    if version == SEG_VERSION_MASKS:
        masks, pos = _unpack_masks(data, pos)
    if pos != header_len:
        raise IntegrityError(f"header length field says {header_len}, header is {pos} bytes")
    if ct_len < TAG_LEN or ct_len > MAX_PAYLOAD:
        raise IntegrityError(f"bad ciphertext length {ct_len}")
    if init_len > ct_len - TAG_LEN:
        raise IntegrityError(f"init length {init_len} exceeds the payload")
    if end_ns < start_ns:
        raise IntegrityError("end time before start time")
    if masks:
        _check_masks(masks, start_ns, end_ns, frame_count)
    header = SegmentHeader(
        device_id=device_id,
        camera_id=camera_id,
        sequence=sequence,
        start_wall_ns=start_ns,
        end_wall_ns=end_ns,
        frame_count=frame_count,
        first_frame_index=first_index,
        epoch_id=bytes(epoch_id),
        nonce=bytes(nonce),
        prev_hash=bytes(prev_hash),
        init_len=init_len,
        ciphertext_len=ct_len,
        flags=flags,
        masks=masks,
    )
    return header, header_len


@dataclass(frozen=True, slots=True)
class SealedSegment:
    """A parsed sealed segment; ``raw`` is the exact bytes (what travels and is hashed)."""

    header: SegmentHeader
    header_bytes: bytes
    ciphertext: memoryview
    signature: bytes
    raw: bytes

    @property
    def chain_hash(self) -> bytes:
        return sha256(self.raw)


def segment_signed_message(header_bytes: bytes, ciphertext: bytes | memoryview) -> bytes:
    return _SEG_DOMAIN + sha256(header_bytes) + sha256(ciphertext)


def parse_segment(raw: bytes) -> SealedSegment:
    """Split a sealed segment into its parts; checks structure only (see :func:`verify_segment`)."""
    header, hlen = parse_segment_header(raw)
    end_ct = hlen + header.ciphertext_len
    if len(raw) != end_ct + SIG_LEN:
        raise IntegrityError(
            f"size {len(raw)} does not match header ({end_ct + SIG_LEN} expected): "
            "truncated or extended"
        )
    view = memoryview(raw)
    return SealedSegment(
        header=header,
        header_bytes=raw[:hlen],
        ciphertext=view[hlen:end_ct],
        signature=raw[end_ct:],
        raw=raw,
    )


def verify_segment(
    raw: bytes,
    public_key: ed25519.Ed25519PublicKey,
    *,
    prev_hash: bytes | None = None,
    device_id: str | None = None,
) -> SealedSegment:
    """Parse and authenticate one sealed segment, without any decryption key.

    Checks the Ed25519 signature over header and ciphertext digest and, when ``prev_hash`` is
    given, that the segment continues that chain. This is what the CSU receiver calls on
    every segment it accepts. Raises :class:`IntegrityError` saying what failed.
    """
    seg = parse_segment(raw)
    try:
        public_key.verify(seg.signature, segment_signed_message(seg.header_bytes, seg.ciphertext))
    except InvalidSignature:
        raise IntegrityError(
            f"segment {seg.header.camera_id}#{seg.header.sequence}: bad signature (altered)"
        ) from None
    if device_id is not None and seg.header.device_id != device_id:
        raise IntegrityError(
            f"segment {seg.header.camera_id}#{seg.header.sequence}: device id "
            f"{seg.header.device_id!r}, expected {device_id!r}"
        )
    if prev_hash is not None and seg.header.prev_hash != prev_hash:
        raise IntegrityError(
            f"segment {seg.header.camera_id}#{seg.header.sequence}: previous-hash does not "
            "match the segment before it (chain broken: a segment was removed, reordered or "
            "replaced)"
        )
    return seg


def sign_segment(header: SegmentHeader, ciphertext: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """The complete sealed segment bytes for a header and its ciphertext."""
    if len(ciphertext) != header.ciphertext_len:
        raise IntegrityError("ciphertext length does not match the header")
    header_bytes = header.pack()
    signature = key.sign(segment_signed_message(header_bytes, ciphertext))
    return header_bytes + ciphertext + signature


# --- epoch envelopes ---------------------------------------------------------------------------

# magic, version, flags, created_ns, epoch_id, recipient count
_ENV_FIXED = struct.Struct(">4sBBq16sB")
# per recipient: kem id (RFC 9180 registry), key id (16 bytes), sealed length; then sealed
_ENV_RCPT = struct.Struct(">H16sH")
MAX_RECIPIENTS = 8


@dataclass(frozen=True, slots=True)
class RecipientSeal:
    kem_id: int
    key_id: bytes
    """First 16 bytes of SHA-256 over the recipient's public key bytes."""
    sealed: bytes
    """HPKE single-shot ciphertext: encapsulated key || AEAD(epoch data key)."""


@dataclass(frozen=True, slots=True)
class EpochEnvelope:
    device_id: str
    camera_id: str
    epoch_id: bytes
    created_wall_ns: int
    recipients: tuple[RecipientSeal, ...]
    raw: bytes = b""

    def body(self) -> bytes:
        out = bytearray(
            _ENV_FIXED.pack(
                ENV_MAGIC, VERSION, 0, self.created_wall_ns, self.epoch_id, len(self.recipients)
            )
        )
        out += _pack_id(self.device_id) + _pack_id(self.camera_id)
        for r in self.recipients:
            out += _ENV_RCPT.pack(r.kem_id, r.key_id, len(r.sealed)) + r.sealed
        return bytes(out)


def hpke_info(device_id: str, camera_id: str, epoch_id: bytes) -> bytes:
    """HPKE ``info``: binds a sealed epoch key to its device, camera and epoch."""
    return b"edge-epoch-key-v1\0" + epoch_id + _pack_id(device_id) + _pack_id(camera_id)


def sign_envelope(env: EpochEnvelope, key: ed25519.Ed25519PrivateKey) -> bytes:
    body = env.body()
    return body + key.sign(_ENV_DOMAIN + sha256(body))


def parse_envelope(raw: bytes) -> EpochEnvelope:
    if len(raw) < _ENV_FIXED.size + SIG_LEN:
        raise IntegrityError(f"truncated epoch envelope ({len(raw)} bytes)")
    magic, version, _flags, created, epoch_id, count = _ENV_FIXED.unpack_from(raw, 0)
    if magic != ENV_MAGIC:
        raise IntegrityError(f"not an epoch envelope (magic {bytes(magic)!r})")
    if version != VERSION:
        raise IntegrityError(f"unsupported envelope version {version}")
    if not 0 < count <= MAX_RECIPIENTS:
        raise IntegrityError(f"bad recipient count {count}")
    body_end = len(raw) - SIG_LEN
    device_id, pos = _unpack_id(raw[:body_end], _ENV_FIXED.size, "device id")
    camera_id, pos = _unpack_id(raw[:body_end], pos, "camera id")
    recipients = []
    for _ in range(count):
        if pos + _ENV_RCPT.size > body_end:
            raise IntegrityError("truncated epoch envelope recipient")
        kem_id, kid, n = _ENV_RCPT.unpack_from(raw, pos)
        pos += _ENV_RCPT.size
        if pos + n > body_end:
            raise IntegrityError("truncated sealed key in epoch envelope")
        recipients.append(RecipientSeal(kem_id, bytes(kid), bytes(raw[pos : pos + n])))
        pos += n
    if pos != body_end:
        raise IntegrityError("trailing bytes in epoch envelope")
    return EpochEnvelope(device_id, camera_id, bytes(epoch_id), created, tuple(recipients), raw)


def verify_envelope(raw: bytes, public_key: ed25519.Ed25519PublicKey) -> EpochEnvelope:
    env = parse_envelope(raw)
    body, sig = raw[:-SIG_LEN], raw[-SIG_LEN:]
    try:
        public_key.verify(sig, _ENV_DOMAIN + sha256(body))
    except InvalidSignature:
        raise IntegrityError(
            f"epoch envelope {env.epoch_id.hex()}: bad signature (altered)"
        ) from None
    return env


# --- retention checkpoints ---------------------------------------------------------------------

# magic, version, flags, created_ns, purged_through (sequence), last purged hash,
# purged count (cumulative), previous checkpoint hash
_CKP_FIXED = struct.Struct(">4sBBqQ32sQ32s")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Signed statement that a camera's segments up to ``purged_through`` were purged.

    The first remaining segment (``purged_through + 1``) must carry ``last_hash`` as its
    ``prev_hash``: the chain verifies from the checkpoint on, and a verifier can tell segments
    *purged by retention* from segments *missing*.
    """

    device_id: str
    camera_id: str
    created_wall_ns: int
    purged_through: int
    last_hash: bytes
    purged_count: int
    prev_checkpoint_hash: bytes
    raw: bytes = b""

    def body(self) -> bytes:
        return _CKP_FIXED.pack(
            CKP_MAGIC,
            VERSION,
            0,
            self.created_wall_ns,
            self.purged_through,
            self.last_hash,
            self.purged_count,
            self.prev_checkpoint_hash,
        ) + (_pack_id(self.device_id) + _pack_id(self.camera_id))


def sign_checkpoint(ckp: Checkpoint, key: ed25519.Ed25519PrivateKey) -> bytes:
    body = ckp.body()
    return body + key.sign(_CKP_DOMAIN + sha256(body))


def _signed_fields(raw: bytes, fixed: struct.Struct, magic: bytes, what: str) -> tuple[Any, ...]:
    """The fixed fields after magic and version of a signed record (checkpoint, gap record)."""
    if len(raw) < fixed.size + SIG_LEN:
        raise IntegrityError(f"truncated {what} ({len(raw)} bytes)")
    found, version, *fields = fixed.unpack_from(raw, 0)
    if found != magic:
        raise IntegrityError(f"not a {what} (magic {bytes(found)!r})")
    if version != VERSION:
        raise IntegrityError(f"unsupported {what} version {version}")
    return tuple(fields)


def _check_signature(
    raw: bytes, public_key: ed25519.Ed25519PublicKey, domain: bytes, what: str
) -> None:
    try:
        public_key.verify(raw[-SIG_LEN:], domain + sha256(raw[:-SIG_LEN]))
    except InvalidSignature:
        raise IntegrityError(f"{what}: bad signature (altered)") from None


def parse_checkpoint(raw: bytes) -> Checkpoint:
    _f, created, through, last_hash, count, prev = _signed_fields(
        raw, _CKP_FIXED, CKP_MAGIC, "checkpoint"
    )
    body_end = len(raw) - SIG_LEN
    device_id, pos = _unpack_id(raw[:body_end], _CKP_FIXED.size, "device id")
    camera_id, pos = _unpack_id(raw[:body_end], pos, "camera id")
    if pos != body_end:
        raise IntegrityError("trailing bytes in checkpoint")
    return Checkpoint(
        device_id, camera_id, created, through, bytes(last_hash), count, bytes(prev), raw
    )


def verify_checkpoint(raw: bytes, public_key: ed25519.Ed25519PublicKey) -> Checkpoint:
    ckp = parse_checkpoint(raw)
    _check_signature(raw, public_key, _CKP_DOMAIN, f"checkpoint of {ckp.camera_id}")
    return ckp


# --- gap records -------------------------------------------------------------------------------

GAP_MAGIC = b"EGAP"
_GAP_DOMAIN = b"edge-gap-v1\0"
# magic, version, flags, created_ns, first lost sequence, last lost sequence, end time of the
# last record kept before the loss, prev_hash (chain hash of the record before ``first``)
_GAP_FIXED = struct.Struct(">4sBBqQQq32s")
MAX_REASON_LEN = 255


@dataclass(frozen=True, slots=True)
class GapRecord:
    """Signed, permanent statement that sequences ``first..last`` of a camera were lost.

    Written by start-up recovery when sequences the vault had issued (its high-water mark, or
    rows of the index) have no intact file any more. It takes their place in the chain: it
    carries the hash of the record before ``first`` as ``prev_hash``, and segment ``last + 1``
    carries the hash of the gap record, so the chain still verifies and the loss stays visible
    to every verifier. Sequences are never issued twice.
    """

    device_id: str
    camera_id: str
    created_wall_ns: int
    first: int
    last: int
    after_wall_ns: int
    """End time of the last segment kept before the loss (the loss lies after it and before
    ``created_wall_ns``); 0 when nothing is known."""
    prev_hash: bytes
    reason: str
    raw: bytes = b""

    def body(self) -> bytes:
        reason = self.reason.encode("utf-8")[:MAX_REASON_LEN]
        return (
            _GAP_FIXED.pack(
                GAP_MAGIC,
                VERSION,
                0,
                self.created_wall_ns,
                self.first,
                self.last,
                self.after_wall_ns,
                self.prev_hash,
            )
            + _pack_id(self.device_id)
            + _pack_id(self.camera_id)
            + bytes([len(reason)])
            + reason
        )

    @property
    def chain_hash(self) -> bytes:
        return sha256(self.raw)

    def describe(self) -> str:
        return f"sequences {self.first}..{self.last} lost before a restart ({self.reason})"


def sign_gap(gap: GapRecord, key: ed25519.Ed25519PrivateKey) -> bytes:
    if not 0 <= gap.first <= gap.last:
        raise IntegrityError(f"gap record: bad range {gap.first}..{gap.last}")
    body = gap.body()
    return body + key.sign(_GAP_DOMAIN + sha256(body))


def parse_gap(raw: bytes) -> GapRecord:
    _f, created, first, last, after, prev = _signed_fields(raw, _GAP_FIXED, GAP_MAGIC, "gap record")
    if first > last:
        raise IntegrityError(f"gap record: bad range {first}..{last}")
    body_end = len(raw) - SIG_LEN
    body = raw[:body_end]
    device_id, pos = _unpack_id(body, _GAP_FIXED.size, "device id")
    camera_id, pos = _unpack_id(body, pos, "camera id")
    if pos >= body_end or pos + 1 + body[pos] != body_end:
        raise IntegrityError("gap record: bad reason length")
    try:
        reason = bytes(body[pos + 1 :]).decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError("gap record: reason is not UTF-8") from None
    return GapRecord(device_id, camera_id, created, first, last, after, bytes(prev), reason, raw)


def verify_gap(raw: bytes, public_key: ed25519.Ed25519PublicKey) -> GapRecord:
    gap = parse_gap(raw)
    _check_signature(
        raw, public_key, _GAP_DOMAIN, f"gap record {gap.camera_id}#{gap.first}..{gap.last}"
    )
    return gap
