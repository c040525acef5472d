"""What ``edge-csu verify`` reports: a verdict and, per camera and second, what is proven.

Built from a bundle :func:`~edge.vault.bundle.verify_bundle` accepted (everything in it is
authentic) or, when it refused, from what can still be told segment by segment (each listed
segment's digest and signature) so that a person sees *which* seconds fail, not only that one
does. States of a second:

``authentic``      an authentic segment covers (part of) it
``missing``        nothing in the bundle covers it (not recorded, lost, left out of the export)
``unsigned``       video without any signature (a plain file: nothing proves it)
``pending``        a signed file's last GOP whose signature is after the end of the file (the
                   ONVIF Media Signing *dangling end*): not proven, not disproven
``not-authentic``  the bundle holds something for it that fails its check

Pure apart from reading the bundle's files in the fallback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError
from ..video.msvalidate import GopState, MediaReport
from . import format as fmt
from . import maskhistory
from .bundle import VerifiedBundle
from .receipt import Coverage


class SecondState(StrEnum):
    AUTHENTIC = "authentic"
    MISSING = "missing"
    UNSIGNED = "unsigned"
    NOT_AUTHENTIC = "not-authentic"
    PENDING = "pending"


class Verdict(StrEnum):
    AUTHENTIC = "authentic"
    """Everything checks and the range is complete."""
    PARTIAL = "partial"
    """Everything present checks; parts of the range are declared missing (exit 3)."""
    NOT_AUTHENTIC = "not-authentic"
    """Something fails its check (exit 1)."""
    UNSIGNED = "unsigned"
    """A video file that carries no signature at all (exit 1: nothing is proven)."""


@dataclass(frozen=True, slots=True)
class Second:
    camera: str
    second: int
    """Whole seconds since 1970 UTC."""
    state: SecondState
    masks: tuple[str, ...] = ()
    """Hex digests of the mask sets in force (empty: no commitment covers it)."""
    receipt_ns: int | None = None
    """CSU time of the receipt anchoring it, when receipts were checked."""
    media: SecondState | None = None
    """ONVIF Media Signing verdict of the decrypted video at that second (``verify --key``)."""


@dataclass
class Report:
    source: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    trust: str = ""
    facts: list[str] = field(default_factory=list)
    """Lines for people: what was checked and found (seal, certificate, chains, receipts)."""
    seconds: list[Second] = field(default_factory=list)
    mask_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Digest → the signed set (camera, names, polygons) for the masks of ``seconds``."""

    @property
    def exit_status(self) -> int:
        return {
            Verdict.AUTHENTIC: 0,
            Verdict.PARTIAL: 3,
            Verdict.NOT_AUTHENTIC: 1,
            Verdict.UNSIGNED: 1,
        }[self.verdict]

    def as_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "verdict": self.verdict.value,
                "reasons": self.reasons,
                "trust": self.trust,
                "facts": self.facts,
                "seconds": [
                    {
                        "camera": s.camera,
                        "t": s.second,
                        "state": s.state.value,
                        "masks": list(s.masks),
                        "receipt_ns": s.receipt_ns,
                        "media_signing": None if s.media is None else s.media.value,
                    }
                    for s in self.seconds
                ],
                "mask_sets": self.mask_sets,
            },
            indent=1,
            sort_keys=True,
        )

    def runs(self) -> list[tuple[str, int, int, str]]:
        """Consecutive seconds of a camera in the same state: (camera, first, last, state)."""
        out: list[tuple[str, int, int, str]] = []
        for s in self.seconds:
            last = out[-1] if out else None
            if last and last[0] == s.camera and last[2] == s.second - 1 and last[3] == s.state:
                out[-1] = (s.camera, last[1], s.second, s.state.value)
                continue
            out.append((s.camera, s.second, s.second, s.state.value))
        return out


def _span_seconds(start_ns: int, end_ns: int) -> range:
    return range(start_ns // 10**9, max(start_ns, end_ns - 1) // 10**9 + 1)


def _range(manifest: dict[str, Any]) -> tuple[int, int] | None:
    r = manifest.get("range")
    if (
        isinstance(r, dict)
        and isinstance(r.get("from_ns"), int)
        and isinstance(r.get("to_ns"), int)
    ):
        return r["from_ns"], r["to_ns"]
    return None


def _fill(
    cameras: set[str], spans: list[tuple[str, int, int, SecondState]], bounds: tuple[int, int]
) -> dict[tuple[str, int], SecondState]:
    """Each second of the range per camera, the worst state any span gives it."""
    order = [SecondState.AUTHENTIC, SecondState.UNSIGNED, SecondState.NOT_AUTHENTIC]
    states: dict[tuple[str, int], SecondState] = {
        (cam, s): SecondState.MISSING for cam in cameras for s in _span_seconds(*bounds)
    }
    for cam, start, end, state in spans:
        for s in _span_seconds(start, end):
            held = states.get((cam, s), SecondState.MISSING)
            if held is SecondState.MISSING or order.index(state) > order.index(held):
                states[(cam, s)] = state
    return states


def from_verified(verified: VerifiedBundle) -> Report:
    """The report of a bundle that verified: authentic or partial, and what each second holds."""
    m = verified.manifest
    partial = verified.partial or bool(verified.gaps)
    report = Report(
        str(verified.path),
        Verdict.PARTIAL if partial else Verdict.AUTHENTIC,
        trust=verified.trust,
    )
    report.facts.append(
        verified.seal
        or f"seal: manifest signed by unit key {m.get('unit_key_id', '?')} of unit "
        f"{m['device']!r} (case {m['case']!r}); every file listed and intact"
    )
    if verified.certificate is not None:
        cert = verified.certificate
        report.facts.append(
            f"certificate: evidence certificate {cert.serial_number:x} "
            f"({cert.subject.rfc4514_string()}) chains to the given CA at the first and last "
            "recording time"
        )
    report.facts += _chain_facts(verified)
    for part in verified.damaged:
        report.reasons.append(f"declared missing in the signed manifest: {part}")
    for gap in verified.gaps:
        report.reasons.append(f"loss recorded by the unit: {gap.camera_id}: {gap.describe()}")
    cams = {s.header.camera_id for s in verified.segments}
    spans = [
        (s.header.camera_id, s.header.start_wall_ns, s.header.end_wall_ns, SecondState.AUTHENTIC)
        for s in verified.segments
    ]
    seg_bounds = (
        min(s.header.start_wall_ns for s in verified.segments),
        max(s.header.end_wall_ns for s in verified.segments),
    )
    bounds = _range(m) or seg_bounds
    # The range asked for may reach before the first or after the last segment: those seconds
    # were simply not recorded, which is "missing" but not a defect of the export.
    states = _fill(cams, spans, (max(bounds[0], seg_bounds[0]), min(bounds[1], seg_bounds[1])))
    masks: dict[tuple[str, int], list[str]] = {}
    for sec in maskhistory.per_second(verified.mask_timeline()):
        masks[(sec.camera, sec.second)] = [
            span.committed.mask_set.hex() for span in sec.spans if span.committed is not None
        ]
    receipts = _receipt_seconds(verified.receipt_coverage())
    for (cam, s), state in sorted(states.items()):
        report.seconds.append(
            Second(cam, s, state, tuple(masks.get((cam, s), ())), receipts.get((cam, s)))
        )
    for (cam, digest), found in sorted(verified.mask_sets.items()):
        report.mask_sets[digest.hex()] = {"camera": cam, **found.canonical()}
    report.facts += _mask_facts(verified)
    report.facts += _receipt_facts(verified)
    if any(s.state is SecondState.MISSING for s in report.seconds):
        report.verdict = Verdict.PARTIAL
    return report


def _chain_facts(verified: VerifiedBundle) -> list[str]:
    out = []
    for cam in sorted({s.header.camera_id for s in verified.segments}):
        seqs = [s.header.sequence for s in verified.segments if s.header.camera_id == cam]
        gaps = [g for g in verified.gaps if g.camera_id == cam]
        holes = [p for p in verified.damaged if p.camera == cam]
        out.append(
            f"chain {cam}: #{seqs[0]}..#{seqs[-1]}, {len(seqs)} segment(s), each signed and "
            f"linked to the one before; {len(gaps)} recorded loss(es), {len(holes)} declared "
            "missing part(s)"
        )
    return out


def _mask_facts(verified: VerifiedBundle) -> list[str]:
    seconds = maskhistory.per_second(verified.mask_timeline())
    return [
        f"masks {cam} {iso(first)} → {iso(last + 1)}: {text}"
        for cam, first, last, text in maskhistory.runs(seconds)
    ]


def iso(second: int) -> str:
    """A whole second since 1970 as ISO 8601 UTC."""
    return dt.datetime.fromtimestamp(second, dt.UTC).isoformat(timespec="seconds")


def _receipt_seconds(covered: list[Coverage]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for c in covered:
        if c.receipt is None:
            continue
        h = c.segment.header
        for s in _span_seconds(h.start_wall_ns, h.end_wall_ns):
            out.setdefault((h.camera_id, s), c.receipt.csu_time_ns)
    return out


def _receipt_facts(verified: VerifiedBundle) -> list[str]:
    if not verified.receipts_checked:
        if verified.receipts:
            return [f"receipts: {len(verified.receipts)} carried, not checked (no --receipt-key)"]
        return ["receipts: none in the bundle"]
    covered = verified.receipt_coverage()
    out = []
    for cam in sorted({c.segment.header.camera_id for c in covered}):
        mine = [c for c in covered if c.segment.header.camera_id == cam]
        held = [c for c in mine if c.receipt is not None]
        out.append(
            f"receipts {cam}: {len(held)} of {len(mine)} segment(s) held by the CSU "
            f"({sum(1 for c in held if c.direct)} receipted, the rest through the chain)"
        )
        # A segment cannot end after the CSU held it: if it claims to, the unit's clock (the
        # only source of the recording times) was ahead of the CSU's by at least that much.
        ahead = [
            (c.segment.header.end_wall_ns - c.receipt.csu_time_ns, c.segment.header.sequence)
            for c in held
            if c.receipt is not None and c.direct
        ]
        worst = max(ahead, default=(0, 0))
        if worst[0] > CLOCK_TOLERANCE_NS:
            out.append(
                f"WARNING {cam}: #{worst[1]} ends {worst[0] / 1e9:.1f} s after the CSU "
                "receipted it: the unit's clock ran ahead of the CSU's (recording times are "
                "that much too late, at least)"
            )
    return out


#: Clock difference between unit and CSU taken as noise (NTS keeps both within milliseconds).
CLOCK_TOLERANCE_NS = 2 * 10**9


def from_refused(bundle: Path, reason: str, unit_key: ed25519.Ed25519PublicKey | None) -> Report:
    """A refused bundle: the reason, and per second what each listed segment alone shows.

    Only segments whose digest matches the manifest *and* whose signature holds with
    ``unit_key`` (the key the refused bundle claims, when its own seal held) count as authentic;
    nothing is authentic when the seal itself failed (``unit_key`` None).
    """
    report = Report(str(bundle), Verdict.NOT_AUTHENTIC, reasons=[reason])
    try:
        manifest = json.loads((bundle / "manifest.json").read_bytes())
        entries = manifest["segments"]
        if not isinstance(entries, list):
            return report
    except (OSError, ValueError, KeyError, TypeError):
        return report
    spans: list[tuple[str, int, int, SecondState]] = []
    cams: set[str] = set()
    for entry in entries:
        try:
            raw = (bundle / str(entry["file"])).resolve().read_bytes()
            seg = fmt.parse_segment(raw)
        except (OSError, KeyError, TypeError, IntegrityError):
            continue  # no times to place it at: its seconds stay missing
        h = seg.header
        ok = unit_key is not None and hashlib.sha256(raw).hexdigest() == entry.get("sha256")
        if ok and unit_key is not None:
            try:
                fmt.verify_segment(raw, unit_key)
            except IntegrityError:
                ok = False
        state = SecondState.AUTHENTIC if ok else SecondState.NOT_AUTHENTIC
        cams.add(h.camera_id)
        spans.append((h.camera_id, h.start_wall_ns, h.end_wall_ns, state))
    if not spans:
        return report
    bounds = (min(s[1] for s in spans), max(s[2] for s in spans))
    for (cam, s), state in sorted(_fill(cams, spans, bounds).items()):
        report.seconds.append(Second(cam, s, state))
    return report


def from_media(source: str, media: MediaReport) -> Report:
    """The report of a video file checked for ONVIF Media Signing: per GOP, then per second
    (signed UTC times; media time from 0 when nothing in the file is signed)."""
    states = [g.state for g in media.gops]
    if media.problems or GopState.NOT_AUTHENTIC in states:
        verdict = Verdict.NOT_AUTHENTIC
    elif not media.signed:
        verdict = Verdict.UNSIGNED
    elif (
        GopState.UNSIGNED in states
        or GopState.MISSING in states
        or GopState.PENDING in states
        or media.missing
    ):
        # A pending end is not proven: partial (exit 3), never authentic, said explicitly.
        verdict = Verdict.PARTIAL
    else:
        verdict = Verdict.AUTHENTIC
    report = Report(source, verdict, trust=media.signer)
    report.reasons += media.problems
    report.facts += media.notes
    relative = all(g.start_ns is None for g in media.gops)
    track = "video (media time)" if relative else "video"
    by_state = {
        GopState.AUTHENTIC: SecondState.AUTHENTIC,
        GopState.MISSING: SecondState.MISSING,
        GopState.UNSIGNED: SecondState.UNSIGNED,
        GopState.NOT_AUTHENTIC: SecondState.NOT_AUTHENTIC,
        GopState.PENDING: SecondState.PENDING,
    }
    spans: list[tuple[str, int, int, SecondState]] = []
    for g in media.gops:
        if relative or g.start_ns is None or g.end_ns is None:
            start, end = round(g.first_pts_s * 1e9), round(g.last_pts_s * 1e9) + 1
        else:
            start, end = g.start_ns, max(g.end_ns, g.start_ns + 1)
        spans.append((track, start, end, by_state[g.state]))
    runs: list[tuple[int, int, GopState, str]] = []
    for g in media.gops:
        if runs and runs[-1][1] == g.index - 1 and runs[-1][2:] == (g.state, g.reason):
            runs[-1] = (runs[-1][0], g.index, g.state, g.reason)
        else:
            runs.append((g.index, g.index, g.state, g.reason))
    for first, last, verdict_of_run, reason in runs:
        if verdict_of_run is GopState.PENDING:
            g = media.gops[first]
            at = f" from {iso(g.start_ns // 10**9)}" if g.start_ns is not None else ""
            report.reasons.append(
                f"dangling end: the last GOP (GOP {first}{at}) is pending: its signature is "
                "after the end of the file (the clip was cut there, or the recording ended); "
                "not proven, not disproven"
            )
        elif verdict_of_run is not GopState.AUTHENTIC:
            which = f"GOP {first}" if first == last else f"GOPs {first}-{last}"
            report.reasons.append(f"{which} ({verdict_of_run.value}): {reason}")
    for start, end, count in media.missing:
        report.reasons.append(f"{count} signed GOP(s) missing between two signed ones")
        spans.append((track, start, end, SecondState.MISSING))
    counts: dict[str, int] = {}
    for st in states:
        counts[st.value] = counts.get(st.value, 0) + 1
    report.facts.append(
        "Media Signing GOPs: "
        + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
    )
    if spans:
        bounds = (min(s[1] for s in spans), max(s[2] for s in spans))
        order = [SecondState.AUTHENTIC, SecondState.PENDING, SecondState.MISSING,
                 SecondState.UNSIGNED, SecondState.NOT_AUTHENTIC]  # fmt: skip
        seconds: dict[int, SecondState] = {}
        for _track, start, end, state in spans:
            for s in _span_seconds(start, end):
                held = seconds.get(s)
                if held is None or order.index(state) > order.index(held):
                    seconds[s] = state
        for s in _span_seconds(*bounds):
            report.seconds.append(Second(track, s, seconds.get(s, SecondState.MISSING)))
    return report


def merge_media(report: Report, camera: str, media: MediaReport) -> None:
    """Add a camera's Media Signing verdicts (of its decrypted video) to a bundle's map.

    The vault's signatures already prove each authentic second; the video's own signatures
    must agree: a second they find not authentic makes the bundle not authentic. Unsigned
    video (recorded before Media Signing) and a pending last GOP (the dangling end, where the
    bundle does not hold the segment after its range) are only reported.
    """
    found = {s.second: s.state for s in from_media(camera, media).seconds}
    merged = []
    for sec in report.seconds:
        if sec.camera == camera and sec.second in found:
            sec = dataclasses.replace(sec, media=found[sec.second])
        merged.append(sec)
    report.seconds = merged
    bad = [s.second for s in merged if s.camera == camera and s.media is SecondState.NOT_AUTHENTIC]
    if bad or media.problems:
        report.verdict = Verdict.NOT_AUTHENTIC
        report.reasons += media.problems
        if bad:
            report.reasons.append(
                f"{camera}: the video's own signatures (ONVIF Media Signing) fail at "
                f"{len(bad)} second(s), from {iso(bad[0])}"
            )
    states = [g.state.value for g in media.gops]
    report.facts.append(
        f"media signing {camera}: "
        + ", ".join(f"{states.count(v)} {v}" for v in sorted(set(states)))
        + f" GOP(s); signer: {media.signer or 'none'}"
    )
