"""ONVIF Media Signing (specification 24.12+) for H.264: the signing SEIs, byte for byte.

What the recording thread adds to the encoded stream so that a clip stays verifiable outside
our tools, after decryption, by any validator of the standard (docs/FORMATS.md, *Media
Signing SEIs*). Layout and hashing follow the specification and, where it is silent or
differs, its reference implementation (github.com/onvif/media-signing-framework): big-endian
fields, the TLV order (crypto info, vendor info, certificates, general, hash list, signature),
SEIs hashed with their emulation-prevention bytes.

Hashing, per GOP (an IDR and the pictures up to the next IDR), in decoding order: the IDR's
primary slice is the anchor ``a = H(I)``; every other slice ``F`` counts as ``H(a ‖ H(F))``;
an unsigned Media Signing SEI as ``H(SEI)``. The GOP hash is ``H(h1 ‖ h2 ‖ …)``; the SEI
signing GOP *k* also carries the anchor of GOP *k−1* (the link that fixes the GOPs' order) and
the list of hashes. The SEI is appended to the first access unit of GOP *k+1* (before its
IDR), so a GOP is proven once its successor has started; a certificate SEI (crypto
information, vendor, certificate chain, signed) opens every segment, so any clip cut on
segment boundaries carries what verifies it.

:class:`MediaSigner` is used by one recording thread (no lock); :func:`parse_sei` and the
NAL helpers are pure and shared with the validator (:mod:`edge.video.msvalidate`).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import IntegrityError

UUID = bytes.fromhex("005bc93f2d715e95ada4796f90877a6f")
TAG_GENERAL = 1
TAG_HASH_LIST = 2
TAG_SIGNATURE = 3
TAG_CRYPTO = 4
TAG_VENDOR = 5
TAG_CERTIFICATES = 6
TAG_ARBITRARY = 7
HASH_LEN = 32
#: DER of the OIDs (as OpenSSL's i2d_ASN1_OBJECT writes them): SHA-256 and Ed25519.
SHA256_OID = bytes.fromhex("0609608648016503040201")
ED25519_OID = bytes.fromhex("06032b6570")
#: Room reserved for the signature (ECDSA P-256 DER ≤ 72 bytes; Ed25519 64).
MAX_SIGNATURE = 72
#: Specification version written in the general TLV (major, minor, patch 0: not the
#: reference code).
SPEC_VERSION = (25, 12, 0)
_FILETIME_1970 = 116_444_736_000_000_000  # 100 ns intervals from 1601-01-01 to 1970-01-01
RESERVED_CERTIFICATE = 0x80
RESERVED_EPB = 0x40

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6


def filetime(wall_ns: int) -> int:
    """UTC as 100-ns intervals since 1601 (the specification's timestamps)."""
    return wall_ns // 100 + _FILETIME_1970


def unix_ns(filetime_value: int) -> int:
    return (filetime_value - _FILETIME_1970) * 100


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- bytes of a NAL unit ------------------------------------------------------------------------


class _Escaper:
    """Writes bytes with H.264 emulation prevention (0x000003) as they come, like the
    reference's ``write_byte``: the state carries across calls so a prefix hashed early is a
    prefix of the final NAL."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._zeros = 0

    def write(self, data: bytes, *, escape: bool = True) -> None:
        for b in data:
            if escape and self._zeros >= 2 and b <= 3:
                self.out.append(3)
                self._zeros = 0
            self.out.append(b)
            self._zeros = self._zeros + 1 if b == 0 else 0


def unescape(data: bytes) -> bytes:
    """Remove emulation-prevention bytes."""
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def annexb_units(data: bytes) -> list[bytes]:
    """The NAL units of Annex B data (start codes removed, trailing zero bytes trimmed)."""
    units: list[bytes] = []
    starts: list[tuple[int, int]] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append((i, i + 3))
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, (_at, begin) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(data)
        unit = data[begin:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def length_prefixed_units(data: bytes, size: int = 4) -> list[bytes]:
    """The NAL units of an MP4 sample (each behind a ``size``-byte big-endian length)."""
    units: list[bytes] = []
    pos = 0
    while pos + size <= len(data):
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
        if n == 0 or pos + n > len(data):
            raise IntegrityError(f"malformed sample: NAL length {n} at byte {pos - size}")
        units.append(data[pos : pos + n])
        pos += n
    if pos != len(data):
        raise IntegrityError("malformed sample: trailing bytes")
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def is_primary_slice(unit: bytes) -> bool:
    """A slice with first_mb_in_slice = 0 (ue(v) 0 is a single 1 bit)."""
    return nal_type(unit) in (NAL_SLICE, NAL_IDR) and len(unit) > 1 and bool(unit[1] & 0x80)


# --- SEI ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OmsSei:
    """A Media Signing SEI as read from the stream."""

    raw: bytes
    """The NAL unit (header to stop bit, emulation prevention included)."""
    certificate_sei: bool
    tlvs: dict[int, bytes]
    """Tag → value, emulation prevention removed (the last of a repeated tag)."""
    certificates: tuple[bytes, ...] = ()
    """Every certificate-chain TLV value (the tag may appear twice)."""
    document: bytes = b""
    """What the signature covers: the NAL from its header up to the signature TLV, with its
    emulation-prevention bytes unless the reserved byte says they were added after signing;
    empty when unsigned."""

    @property
    def signed(self) -> bool:
        return TAG_SIGNATURE in self.tlvs

    @property
    def document_hash(self) -> bytes:
        return sha256(self.document)

    def signature(self) -> bytes:
        value = self.tlvs.get(TAG_SIGNATURE)
        if value is None:
            raise IntegrityError("unsigned SEI")
        if len(value) < 3:
            raise IntegrityError("signature TLV too short")
        size = int.from_bytes(value[1:3], "big")
        if 3 + size > len(value):
            raise IntegrityError("signature TLV: size beyond its value")
        return value[3 : 3 + size]

    def general(self) -> GeneralInfo:
        value = self.tlvs.get(TAG_GENERAL)
        if value is None:
            raise IntegrityError("SEI without its general TLV")
        return GeneralInfo.parse(value)

    def hash_list(self) -> list[bytes] | None:
        value = self.tlvs.get(TAG_HASH_LIST)
        if value is None:
            return None
        body = value[1:]
        if len(body) % HASH_LEN:
            raise IntegrityError("hash list TLV: not a whole number of hashes")
        return [body[i : i + HASH_LEN] for i in range(0, len(body), HASH_LEN)]

    def hash_oid(self) -> bytes | None:
        value = self.tlvs.get(TAG_CRYPTO)
        if value is None or len(value) < 2:
            return None
        return value[2 : 2 + value[1]]

    def signing_oid(self) -> bytes | None:
        value = self.tlvs.get(TAG_CRYPTO)
        if value is None or len(value) < 2:
            return None
        at = 2 + value[1]
        return value[at + 1 : at + 1 + value[at]] if at < len(value) else None

    def chain_pem(self) -> bytes | None:
        return self.certificates[0][2:] if self.certificates else None


@dataclass(frozen=True, slots=True)
class GeneralInfo:
    version: int
    start_filetime: int
    end_filetime: int | None
    counter: int
    nal_count: int
    gop_hash: bytes
    linked_hash: bytes

    @classmethod
    def parse(cls, value: bytes) -> GeneralInfo:
        try:
            version = value[0]
            if version not in (1, 2):
                raise IntegrityError(f"general TLV version {version} unknown")
            start = int.from_bytes(value[5:13], "big", signed=True)
            pos = 13
            end = None
            if version >= 2:
                end = int.from_bytes(value[13:21], "big", signed=True)
                pos = 21
            counter = int.from_bytes(value[pos : pos + 4], "big")
            count = int.from_bytes(value[pos + 4 : pos + 6], "big")
            rest = value[pos + 6 :]
        except IndexError:
            raise IntegrityError("general TLV truncated") from None
        if len(rest) % 2 or not rest:
            raise IntegrityError("general TLV: hashes of unequal size")
        h = len(rest) // 2
        return cls(version, start, end, counter, count, rest[:h], rest[h:])


def parse_sei(unit: bytes) -> OmsSei | None:
    """The Media Signing SEI in ``unit``, or None when it is another NAL or SEI."""
    if nal_type(unit) != NAL_SEI or len(unit) < 3 or unit[1] != 5:  # user data unregistered
        return None
    pos = 2
    size = 0
    while pos < len(unit) and unit[pos] == 0xFF:
        size += 0xFF
        pos += 1
    if pos >= len(unit):
        return None
    size += unit[pos]
    pos += 1
    if unit[pos : pos + 16] != UUID:
        return None
    header_len = pos + 16  # NAL header, payload type and size, UUID: no EPB by construction
    if header_len >= len(unit):
        raise IntegrityError("Media Signing SEI without its reserved byte")
    reserved = unit[header_len]
    # The NAL holds emulation-prevention bytes only if it is longer than its declared payload
    # (the reference decides the same way: a writer may also have applied none).
    stop = 1 if unit.endswith(b"\x80") else 0
    escaped = len(unit) - pos - stop > size
    tail = unit[header_len + 1 : len(unit) - stop]
    body = unescape(tail) if escaped else tail
    tlvs: dict[int, bytes] = {}
    certificates: list[bytes] = []
    at = 0
    document = b""
    while at < len(body):
        if at + 3 > len(body):
            raise IntegrityError("Media Signing SEI: truncated TLV header")
        tag = body[at]
        length = int.from_bytes(body[at + 1 : at + 3], "big")
        if tag == 0 or tag > TAG_ARBITRARY:
            raise IntegrityError(f"Media Signing SEI: unknown TLV tag {tag}")
        if at + 3 + length > len(body):
            raise IntegrityError(f"Media Signing SEI: TLV {tag} longer than the SEI")
        value = body[at + 3 : at + 3 + length]
        if tag == TAG_SIGNATURE:
            if not escaped:
                document = unit[: header_len + 1 + at]
            elif reserved & RESERVED_EPB:
                document = unit[: _escaped_offset(unit, header_len + 1, at)]
            else:
                document = unit[: header_len + 1] + body[:at]
        if tag == TAG_CERTIFICATES:
            certificates.append(value)
        tlvs[tag] = value
        at += 3 + length
    if TAG_SIGNATURE in tlvs and at != len(body):
        raise IntegrityError("Media Signing SEI: data after the signature")
    return OmsSei(
        unit,
        bool(reserved & RESERVED_CERTIFICATE),
        tlvs,
        tuple(certificates),
        document,
    )


def _escaped_offset(unit: bytes, start: int, unescaped_offset: int) -> int:
    """Where in ``unit`` the first ``unescaped_offset`` bytes of the unescaped data beginning
    at ``start`` end (before any emulation-prevention byte that follows them: the signer
    hashed the document before writing the tag that byte protects)."""
    zeros = 0
    seen = 0
    pos = end = start
    while pos < len(unit) and seen < unescaped_offset:
        b = unit[pos]
        pos += 1
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        seen += 1
        zeros = zeros + 1 if b == 0 else 0
        end = pos
    return end


# --- hashing ----------------------------------------------------------------------------------


@dataclass
class GopHasher:
    """The hashes of one GOP as the specification links them (signer and validator alike)."""

    anchor: bytes | None = None
    hashes: list[bytes] = field(default_factory=list)

    def add(self, unit: bytes) -> bytes | None:
        """Hash one NAL unit if it is hashable; returns its hash."""
        t = nal_type(unit)
        if t == NAL_SEI:
            sei = parse_sei(unit)
            if sei is None or sei.signed:
                return None  # other SEIs are ignored; signed ones are verified on their own
            h = sha256(unit)
        elif t in (NAL_SLICE, NAL_IDR):
            if t == NAL_IDR and self.anchor is None and is_primary_slice(unit):
                h = self.anchor = sha256(unit)
            else:
                h = sha256((self.anchor or bytes(HASH_LEN)) + sha256(unit))
        else:
            return None  # SPS, PPS, AUD, other SEIs: outside the signature by the standard
        self.hashes.append(h)
        return h

    def gop_hash(self) -> bytes:
        return sha256(b"".join(self.hashes)) if self.hashes else bytes(HASH_LEN)


# --- signing ----------------------------------------------------------------------------------


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">BH", tag, len(value)) + value


def _sei_prefix(payload_len: int, reserved: int) -> tuple[_Escaper, int]:
    out = _Escaper()
    out.write(b"\x06\x05", escape=False)
    size = payload_len
    while size >= 0xFF:
        out.write(b"\xff", escape=False)
        size -= 0xFF
    out.write(bytes([size]), escape=False)
    out.write(UUID)
    out.write(bytes([reserved]))
    return out, len(out.out)


def build_sei(
    tlvs: Sequence[bytes], sign: Callable[[bytes], bytes] | None, *, certificate_sei: bool = False
) -> bytes:
    """One Media Signing SEI NAL unit (no start code): the TLVs, then the signature over the
    SHA-256 of everything written before it (emulation prevention applied first)."""
    body = b"".join(tlvs)
    sig_tlv_len = 3 + 3 + MAX_SIGNATURE if sign is not None else 0
    payload_len = 16 + 1 + len(body) + sig_tlv_len
    reserved = RESERVED_EPB | (RESERVED_CERTIFICATE if certificate_sei else 0)
    out, _ = _sei_prefix(payload_len, reserved)
    out.write(body)
    if sign is not None:
        signature = sign(sha256(bytes(out.out)))
        if len(signature) > MAX_SIGNATURE:
            raise IntegrityError(f"signature of {len(signature)} bytes exceeds the reserved room")
        value = (
            bytes([1])
            + struct.pack(">H", len(signature))
            + signature
            + b"\x01" * (MAX_SIGNATURE - len(signature))
        )
        out.write(_tlv(TAG_SIGNATURE, value))
    out.write(b"\x80", escape=False)
    return bytes(out.out)


def crypto_tlv(signing_oid: bytes = ED25519_OID) -> bytes:
    value = bytes([1, len(SHA256_OID)]) + SHA256_OID + bytes([len(signing_oid)]) + signing_oid
    return _tlv(TAG_CRYPTO, value + b"\x00\x00")


def vendor_tlv(firmware: str, serial: str, manufacturer: str) -> bytes:
    value = bytearray([1])
    for text in (firmware, serial, manufacturer):
        raw = text.encode()[:255]
        value += bytes([len(raw)]) + raw
    return _tlv(TAG_VENDOR, bytes(value))


def certificates_tlv(chain_pem: bytes) -> bytes:
    return _tlv(TAG_CERTIFICATES, bytes([1, 0]) + chain_pem)


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """Who signs: the key (as a function over a document hash), its algorithm and its proof."""

    sign: Callable[[bytes], bytes]
    signing_oid: bytes
    chain_pem: bytes | None
    """Leaf first, intermediates after, never the root; None when the unit is not enrolled
    (then only a pinned key verifies)."""
    firmware: str
    serial: str
    manufacturer: str


class MediaSigner:
    """Adds the signing SEIs to one encoder session's access units, in decoding order.

    Recording thread only. :meth:`access_unit` returns the NAL units to put in front of the
    access unit's own (a certificate SEI at each segment start, the SEI signing the GOP that
    just ended); the caller inserts them before the access unit's first NAL.
    """

    def __init__(self, identity: SigningIdentity) -> None:
        self.identity = identity
        self._gop = GopHasher()
        self._gop_start_ns: int | None = None
        self._previous_anchor = bytes(HASH_LEN)
        self._counter = 0
        #: Counters for the benchmark and diagnostics: SEIs written, their bytes, bytes hashed.
        self.seis = 0
        self.sei_bytes = 0
        self.signed_bytes = 0
        self.cpu_s = 0.0
        """Thread CPU seconds spent in :meth:`access_unit` (hashing, SEIs, signatures)."""

    def access_unit(
        self, units: Sequence[bytes], wall_ns: int, *, segment_start: bool
    ) -> list[bytes]:
        began = time.thread_time()
        try:
            return self._access_unit(units, wall_ns, segment_start)
        finally:
            self.cpu_s += time.thread_time() - began

    def _access_unit(
        self, units: Sequence[bytes], wall_ns: int, segment_start: bool
    ) -> list[bytes]:
        out: list[bytes] = []
        starts_gop = any(nal_type(u) == NAL_IDR and is_primary_slice(u) for u in units)
        if starts_gop:
            if self._gop_start_ns is not None and self._gop.hashes:
                out.append(self._gop_sei(wall_ns))
            if segment_start:
                out.append(self.certificate_sei())
            if self._gop.anchor is not None:
                self._previous_anchor = self._gop.anchor
            self._gop = GopHasher()
            self._gop_start_ns = wall_ns
        self.sei_bytes += sum(len(u) for u in out)
        if self._gop_start_ns is None:
            return out  # before the first IDR nothing can be anchored
        for unit in units:
            self.signed_bytes += len(unit)
            self._gop.add(unit)
        return out

    def certificate_sei(self) -> bytes:
        ident = self.identity
        tlvs = [
            crypto_tlv(ident.signing_oid),
            vendor_tlv(ident.firmware, ident.serial, ident.manufacturer),
        ]
        if ident.chain_pem is not None:
            tlvs.append(certificates_tlv(ident.chain_pem))
        self.seis += 1
        return build_sei(tlvs, ident.sign, certificate_sei=True)

    def _gop_sei(self, end_ns: int) -> bytes:
        assert self._gop_start_ns is not None
        hashes = self._gop.hashes
        start, end = filetime(self._gop_start_ns), filetime(end_ns)
        general = (
            bytes([2, *SPEC_VERSION, 0])
            + struct.pack(">qqIH", start, end, self._counter, len(hashes))
            + self._gop.gop_hash()
            + self._previous_anchor
        )
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        tlvs = [
            crypto_tlv(self.identity.signing_oid),
            _tlv(TAG_GENERAL, general),
            _tlv(TAG_HASH_LIST, bytes([1]) + b"".join(hashes)),
        ]
        self.seis += 1
        return build_sei(tlvs, self.identity.sign)


def with_seis(units: Sequence[bytes], seis: Sequence[bytes]) -> bytes:
    """An access unit as Annex B with ``seis`` right before its first slice: after an access
    unit delimiter and parameter sets (H.264 orders an AU that way), before the picture."""
    at = next((n for n, u in enumerate(units) if nal_type(u) in (NAL_SLICE, NAL_IDR)), len(units))
    ordered = [*units[:at], *seis, *units[at:]]
    return b"".join(b"\x00\x00\x00\x01" + u for u in ordered)


def iter_units(data: bytes) -> Iterator[bytes]:
    """NAL units of an encoder packet, Annex B or 4-byte length-prefixed."""
    if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
        yield from annexb_units(data)
    else:
        yield from length_prefixed_units(data)
