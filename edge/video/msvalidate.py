"""Validating ONVIF Media Signing in an H.264 MP4: a verdict per GOP, and where GOPs are missing.

Verdicts, as the specification names them: ``authentic`` (signature, GOP hash and link to the
GOP before all hold), ``missing`` (authentic, but NAL units the signature lists are not in the
file, or whole GOPs between two signed ones are gone), ``unsigned`` (no signing SEI covers it:
never signed, SEIs stripped), ``pending`` (the last GOP of a signed file when no SEI covers
it: its signature comes after the end of the file, the specification's *dangling end*, which
the reference validator counts as pending frames), ``not-authentic`` (anything else: a byte
changed, GOPs reordered, a signature or certificate that does not check).

Which SEI covers which GOP: the SEI sits in an access unit after its GOP, either in front of the
next GOP's IDR (how this firmware writes it) or in the access unit after it (the reference
implementation's sample files), or in front of the GOP's own last picture (a clip's last GOP:
``edge-csu open`` moves it there from the segment after the clip); a SEI whose GOP hash
equals a GOP's is matched to it first.
The signing key comes from the certificate chain in the stream, checked against the given
trust anchors at the signed recording times, or is pinned by the caller.

Pure apart from :func:`read_access_units` (PyAV demuxes the file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from ..errors import IntegrityError, from_av
from .mediasigning import (
    HASH_LEN,
    NAL_IDR,
    NAL_SEI,
    NAL_SLICE,
    SHA256_OID,
    GeneralInfo,
    OmsSei,
    is_primary_slice,
    length_prefixed_units,
    nal_type,
    parse_sei,
    sha256,
    unix_ns,
)

#: Earliest signed time taken as UTC (2000-01-01): anything before is a stream-relative clock.
_PLAUSIBLE_NS = 946_684_800 * 10**9

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class GopState(StrEnum):
    AUTHENTIC = "authentic"
    MISSING = "missing"
    UNSIGNED = "unsigned"
    NOT_AUTHENTIC = "not-authentic"
    PENDING = "pending"
    """The dangling end: the file's last GOP, whose signing SEI is after the end of the file
    (not proven, not disproven)."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    units: tuple[bytes, ...]
    pts_s: float


@dataclass
class _Gop:
    index: int
    first_pts_s: float
    last_pts_s: float
    anchor: bytes | None = None
    #: (kind, H(unit)) in decoding order: "anchor", "slice" or "sei" (an unsigned OMS SEI).
    parts: list[tuple[str, bytes]] = field(default_factory=list)

    def hashes(self, anchor: bytes | None) -> list[bytes]:
        link = anchor if anchor is not None else bytes(HASH_LEN)
        out = []
        for kind, h in self.parts:
            if kind in ("anchor", "sei"):
                out.append(h)
            else:
                out.append(sha256(link + h))
        return out


@dataclass(frozen=True, slots=True)
class GopVerdict:
    index: int
    state: GopState
    reason: str
    start_ns: int | None
    """Signed start (UTC ns) when a SEI covers it, else placed from the file's timeline."""
    end_ns: int | None
    first_pts_s: float
    last_pts_s: float
    signed_times: bool


@dataclass
class MediaReport:
    gops: list[GopVerdict] = field(default_factory=list)
    missing: list[tuple[int, int, int]] = field(default_factory=list)
    """Spans (start_ns, end_ns, GOP count) where signed GOPs were removed."""
    signer: str = ""
    problems: list[str] = field(default_factory=list)
    """Why signatures could not be checked (no key, certificate refused): not authentic."""
    notes: list[str] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return any(g.state not in (GopState.UNSIGNED, GopState.PENDING) for g in self.gops)


def read_access_units(path: Path) -> list[AccessUnit]:
    """The H.264 access units of an MP4 file, in decoding order."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise IntegrityError(f"{path}: {stream.codec_context.name}, not H.264")
            extradata = stream.codec_context.extradata or b""
            size = (extradata[4] & 0x03) + 1 if len(extradata) > 4 and extradata[0] == 1 else 4
            base = stream.time_base
            out = []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts or 0
                units = tuple(length_prefixed_units(bytes(packet), size))
                out.append(AccessUnit(units, float(pts * base) if base else 0.0))
            return out
    except IntegrityError:
        raise
    except (IndexError, ValueError) as exc:
        raise IntegrityError(f"{path}: no video stream ({exc})") from None
    except Exception as exc:  # every FFmpeg failure is translated
        raise from_av(exc, f"reading {path}") from exc


@dataclass
class _Sei:
    sei: OmsSei
    hint: int
    """Index of the GOP the SEI most plausibly covers by its position."""


def _collect(
    aus: Iterable[AccessUnit], damaged: list[str]
) -> tuple[list[_Gop], list[_Sei], list[OmsSei]]:
    gops: list[_Gop] = []
    seis: list[_Sei] = []
    cert_seis: list[OmsSei] = []
    current: _Gop | None = None
    signed_since_start = 0
    for au in aus:
        starts = any(nal_type(u) == NAL_IDR and is_primary_slice(u) for u in au.units)
        pending: list[OmsSei] = []
        for unit in au.units:
            t = nal_type(unit)
            if t == NAL_SEI:
                try:
                    sei = parse_sei(unit)
                except IntegrityError as exc:
                    damaged.append(f"a Media Signing SEI is malformed (altered?): {exc}")
                    continue
                if sei is None:
                    continue
                if sei.certificate_sei:
                    cert_seis.append(sei)
                elif sei.signed:
                    pending.append(sei)
                elif current is not None:
                    current.parts.append(("sei", sha256(unit)))
                continue
            if t not in (NAL_SLICE, NAL_IDR):
                continue
            if (
                t == NAL_IDR
                and is_primary_slice(unit)
                and (current is None or current.anchor is not None or current.parts)
            ):
                current = _Gop(len(gops), au.pts_s, au.pts_s)
                gops.append(current)
                signed_since_start = 0
            if current is None:  # a clip cut mid-GOP: the frames before its first IDR
                current = _Gop(len(gops), au.pts_s, au.pts_s)
                gops.append(current)
            h = sha256(unit)
            if t == NAL_IDR and current.anchor is None and is_primary_slice(unit):
                current.anchor = h
                current.parts.append(("anchor", h))
            else:
                current.parts.append(("slice", h))
            current.last_pts_s = max(current.last_pts_s, au.pts_s)
        for sei in pending:
            if current is None:
                continue
            if starts:
                hint = current.index - 1  # in front of the IDR that ended its GOP
            elif signed_since_start == 0:
                hint = current.index - 1  # the access unit after that IDR (reference)
            else:
                hint = current.index  # a closing SEI at the end of the stream
            signed_since_start += 1
            seis.append(_Sei(sei, hint))
    return gops, seis, cert_seis


def _match(gops: list[_Gop], seis: list[_Sei]) -> tuple[dict[int, OmsSei], list[OmsSei], int]:
    """Which SEI covers which GOP, the SEIs whose GOP is not in the file at all, and how many
    SEIs sign the GOP before the file (in front of its first picture: a clip that starts on a
    GOP boundary of a longer recording, not a loss).

    A SEI covers the GOP whose hash it signs (wherever that GOP now is: reordering is judged
    later, from the counters); else the GOP its position points to, if some of that GOP's NAL
    units are on its list (a damaged GOP); else its GOP is gone (an orphan: a signed GOP
    missing from the file)."""
    covered: dict[int, OmsSei] = {}
    orphans: list[OmsSei] = []
    before = 0
    by_hash: dict[bytes, list[int]] = {}
    for gop in gops:
        by_hash.setdefault(sha256(b"".join(gop.hashes(gop.anchor))), []).append(gop.index)
    for item in seis:
        try:
            info = item.sei.general()
            listed = item.sei.hash_list() or []
        except IntegrityError:
            continue
        chosen = next((i for i in by_hash.get(info.gop_hash, []) if i not in covered), None)
        if chosen is None and 0 <= item.hint < len(gops) and item.hint not in covered:
            gop = gops[item.hint]
            # With its own anchor, or with the signed one: an altered IDR changes every
            # linked hash of its GOP, but the intact pictures still match the signed anchor.
            anchors = {gop.anchor, listed[0] if listed else None}
            if any(set(gop.hashes(a)) & set(listed) for a in anchors):
                chosen = item.hint
        if chosen is None and item.hint < 0:
            before += 1
        elif chosen is None:
            orphans.append(item.sei)
        else:
            covered[chosen] = item.sei
    return covered, orphans, before


def verify_signature(key: PublicKey, signature: bytes, digest: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            key.verify(
                signature,
                digest,
                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                utils.Prehashed(hashes.SHA256()),
            )
    except (InvalidSignature, ValueError):
        return False
    return True


def chain_key(
    chain_pem: bytes, anchors: Sequence[x509.Certificate], when: Sequence[dt.datetime]
) -> tuple[PublicKey, str]:
    """The leaf key of a stream's certificate chain, once the chain checks against a
    self-signed certificate of ``anchors`` at each of the times ``when``.

    The path is walked by hand (issuer names, signatures, validity, CA flags where present)
    rather than with a web-PKI verifier: cameras' chains often hold X.509 v1 certificates,
    which the standard accepts and such verifiers refuse.
    """
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise IntegrityError(f"certificate chain in the stream unreadable ({exc})") from None
    roots = [c for c in anchors if c.issuer == c.subject]
    if not roots:
        raise IntegrityError("the CA file holds no root (self-signed) certificate")
    leaf = chain[0]
    path = [leaf]
    pool = [*chain[1:], *(c for c in anchors if c.issuer != c.subject)]
    while path[-1].issuer != path[-1].subject and len(path) < 8:
        cert = path[-1]
        issuer = next((r for r in roots if r.subject == cert.issuer), None)
        issuer = issuer or next((c for c in pool if c.subject == cert.issuer), None)
        if issuer is None:
            raise IntegrityError(f"the stream's certificate {cert.subject.rfc4514_string()} "
                                 "does not chain to the given CA (issuer not found)")  # fmt: skip
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise IntegrityError(
                f"{cert.subject.rfc4514_string()}: not signed by {issuer.subject.rfc4514_string()}"
            ) from None
        _check_ca(issuer)
        path.append(issuer)
    if path[-1] not in roots:
        raise IntegrityError("the stream's certificate does not chain to the given CA")
    for at in when:
        for cert in path:
            if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
                raise IntegrityError(
                    f"{cert.subject.rfc4514_string()} was not valid at "
                    f"{at.isoformat(timespec='seconds')}"
                )
    key = leaf.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise IntegrityError("the stream's certificate holds an unsupported key type")
    return key, leaf.subject.rfc4514_string()


def _check_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return  # a v1 CA certificate: nothing to check
    if not constraints.ca:
        raise IntegrityError(f"{cert.subject.rfc4514_string()} is not a CA certificate")


def validate(
    aus: Iterable[AccessUnit],
    *,
    anchors: Sequence[x509.Certificate] | None = None,
    pinned: PublicKey | None = None,
    recorded_at: dt.datetime | None = None,
) -> MediaReport:
    """Per-GOP verdicts of a stream (access units in decoding order).

    The certificate chain is checked at the signed UTC times of the stream, or at
    ``recorded_at`` (default: now) for a stream whose clock is not UTC."""
    report = MediaReport()
    gops, seis, cert_seis = _collect(aus, report.problems)
    covered, orphans, earlier_gop = _match(gops, seis)
    if earlier_gop:
        report.notes.append(
            "the first access unit also carries the signature of the GOP before the file "
            "(the file starts where a longer recording was cut): not a loss"
        )
    key = _signing_key(report, covered, cert_seis, anchors, pinned, recorded_at)
    times = _times(gops, covered)
    counters = {i: _counter(sei) for i, sei in covered.items()}
    for gop in gops:
        sei = covered.get(gop.index)
        start, end, signed_times = times[gop.index]
        if sei is None:
            state, reason = (
                GopState.UNSIGNED,
                "no signing SEI covers it (never signed, SEIs removed, or the GOP after it is "
                "not in the file)",
            )
        else:
            # The link is checked against the GOP before it only when that one held: an
            # altered GOP is reported once, not again through its successor.
            before = covered.get(gop.index - 1)
            held = bool(report.gops) and report.gops[-1].state is not GopState.NOT_AUTHENTIC
            previous = (gops[gop.index - 1], before) if before is not None and held else None
            state, reason = _judge(gop, sei, key, previous)
            own = counters[gop.index]
            earlier = [c for i, c in counters.items() if i < gop.index]
            later = [c for i, c in counters.items() if i > gop.index]
            if state is not GopState.NOT_AUTHENTIC and (
                any(c >= own for c in earlier) or any(c <= own for c in later)
            ):
                state, reason = GopState.NOT_AUTHENTIC, "out of its signed order (GOPs moved)"
        report.gops.append(
            GopVerdict(
                gop.index, state, reason, start, end, gop.first_pts_s, gop.last_pts_s, signed_times
            )
        )
    _mark_dangling_end(report)
    for sei in orphans:
        if key is None or not verify_signature(key, sei.signature(), sei.document_hash):
            report.problems.append("a signing SEI whose signature does not verify")
            continue
        info = sei.general()
        start = unix_ns(info.start_filetime)
        end = unix_ns(info.end_filetime) if info.end_filetime else start
        report.missing.append((start, end, 1))
    return report


def _mark_dangling_end(report: MediaReport) -> None:
    """The last GOP, unsigned after a signed one, is the dangling end: its SEI would be in
    the first access unit after the file (a clip cut there, or the recording ended)."""
    gops = report.gops
    if len(gops) < 2 or gops[-1].state is not GopState.UNSIGNED:
        return
    if not any(g.state is not GopState.UNSIGNED for g in gops[:-1]):
        return  # nothing signed: an unsigned file, not a dangling end
    gops[-1] = dataclasses.replace(
        gops[-1],
        state=GopState.PENDING,
        reason="its signature is after the end of the file (the GOP after it is not here): "
        "the dangling end, neither proven nor disproven",
    )


def _counter(sei: OmsSei) -> int:
    try:
        return sei.general().counter
    except IntegrityError:
        return -1


def _signing_key(
    report: MediaReport,
    covered: dict[int, OmsSei],
    cert_seis: list[OmsSei],
    anchors: Sequence[x509.Certificate] | None,
    pinned: PublicKey | None,
    recorded_at: dt.datetime | None,
) -> PublicKey | None:
    if pinned is not None:
        report.signer = "pinned key"
        return pinned
    if not covered and not cert_seis:
        return None  # nothing signed: nothing to check it with either
    chains = [s for s in cert_seis if s.chain_pem()] + [
        s for s in covered.values() if s.chain_pem()
    ]
    if not chains:
        report.problems.append("no certificate chain in the stream: give the signing key")
        return None
    if anchors is None:
        report.problems.append("no trust anchor given for the stream's certificate")
        return None
    signed = [unix_ns(t) for s in covered.values() for t in _signed_span(s)]
    if signed and min(signed) < _PLAUSIBLE_NS:
        # Not UTC (some signers write stream time): checked at the date the caller gives.
        report.notes.append(
            "the stream's timestamps are not UTC: certificate checked at "
            + ("the given recording date" if recorded_at else "the current date")
        )
        signed = []
    when = (
        [dt.datetime.fromtimestamp(ns / 1e9, dt.UTC) for ns in (min(signed), max(signed))]
        if signed
        else [recorded_at or dt.datetime.now(dt.UTC)]
    )
    source = chains[0]
    pem = source.chain_pem()
    assert pem is not None
    try:
        key, subject = chain_key(pem, anchors, when)
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return None
    if source.certificate_sei and not verify_signature(
        key, source.signature(), source.document_hash
    ):
        report.problems.append("the certificate SEI's own signature does not verify")
        return None
    if source.hash_oid() not in (None, SHA256_OID):
        report.problems.append("the stream uses a hash algorithm other than SHA-256")
        return None
    report.signer = f"{subject} (certificate chain in the stream, checked against the CA)"
    return key


def _signed_span(sei: OmsSei) -> list[int]:
    try:
        info = sei.general()
    except IntegrityError:
        return []
    return [info.start_filetime] + ([info.end_filetime] if info.end_filetime else [])


def _judge(
    gop: _Gop,
    sei: OmsSei,
    key: PublicKey | None,
    previous: tuple[_Gop, OmsSei] | None,
) -> tuple[GopState, str]:
    if key is None:
        return GopState.NOT_AUTHENTIC, "no trusted key to check its signature"
    try:
        info = sei.general()
        signature = sei.signature()
        listed = sei.hash_list()
    except IntegrityError as exc:
        return GopState.NOT_AUTHENTIC, f"signing SEI malformed: {exc}"
    if not verify_signature(key, signature, sei.document_hash):
        return GopState.NOT_AUTHENTIC, "the SEI's signature does not verify"
    if previous is not None:
        prev_gop, prev_sei = previous
        gap = (info.counter - _counter(prev_sei)) & 0xFFFFFFFF
        if gap == 1 and prev_gop.anchor is not None and info.linked_hash != prev_gop.anchor:
            return GopState.NOT_AUTHENTIC, "not linked to the GOP before it (GOPs reordered)"
    anchor = gop.anchor
    if anchor is None and listed:
        anchor = listed[0]  # cut mid-GOP: the signed list names the anchor of what is gone
    computed = gop.hashes(anchor)
    if sha256(b"".join(computed)) == info.gop_hash and len(computed) == info.nal_count:
        return GopState.AUTHENTIC, "signature, GOP hash and link hold"
    if listed is None:
        return GopState.NOT_AUTHENTIC, "GOP hash differs and the SEI lists no hashes"
    if computed == listed:
        # The specification's fallback when the GOP hash does not match: every NAL unit
        # checked against the signed list, in order, none missing.
        return GopState.AUTHENTIC, "signature holds; every NAL unit matches the signed list"
    at = 0
    for h in computed:
        while at < len(listed) and listed[at] != h:
            at += 1
        if at == len(listed):
            return GopState.NOT_AUTHENTIC, "a NAL unit is not the one signed (altered or added)"
        at += 1
    return (
        GopState.MISSING,
        f"{len(listed) - len(computed)} of {len(listed)} signed NAL unit(s) are not in the file",
    )


def _times(
    gops: list[_Gop], covered: dict[int, OmsSei]
) -> dict[int, tuple[int | None, int | None, bool]]:
    """Each GOP's wall-clock span: signed where a SEI covers it, else placed from the nearest
    signed GOP through the file's timeline (and said to be unsigned)."""
    out: dict[int, tuple[int | None, int | None, bool]] = {}
    offset: float | None = None
    for gop in gops:
        sei = covered.get(gop.index)
        if sei is not None:
            try:
                first = sei.general()
            except IntegrityError:
                continue
            start = unix_ns(first.start_filetime)
            if start >= _PLAUSIBLE_NS:
                offset = start / 1e9 - gop.first_pts_s
    for n, gop in enumerate(gops):
        sei = covered.get(gop.index)
        info: GeneralInfo | None = None
        if sei is not None:
            try:
                info = sei.general()
            except IntegrityError:
                info = None
        if info is not None and unix_ns(info.start_filetime) < _PLAUSIBLE_NS:
            info = None  # a stream-relative clock: placed on the file's timeline like the rest
        if info is not None:
            start = unix_ns(info.start_filetime)
            if info.end_filetime is not None:
                end = unix_ns(info.end_filetime)
            else:
                nxt = gops[n + 1].first_pts_s if n + 1 < len(gops) else gop.last_pts_s
                end = start + round((nxt - gop.first_pts_s) * 1e9)
            out[gop.index] = (start, end, True)
            offset = start / 1e9 - gop.first_pts_s
            continue
        nxt_pts = gops[n + 1].first_pts_s if n + 1 < len(gops) else gop.last_pts_s + 0.04
        if offset is None:
            out[gop.index] = (None, None, False)
        else:
            out[gop.index] = (
                round((gop.first_pts_s + offset) * 1e9),
                round((nxt_pts + offset) * 1e9),
                False,
            )
    return out
