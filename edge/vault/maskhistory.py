"""The mask history of an evidence bundle: which privacy masks hid which second, provably.

Each exported segment commits (signed header, version 2) to the digest of the mask set its frames
were masked under; the bundle carries, for every digest committed to, the unit's signed
``mask-set`` audit record with the polygons (``masks/<camera>/<digest>.json``, one audit line).
From the two, :func:`timeline` gives per camera the spans of time under each set, and
:func:`per_second` the sets in force during each second. Segments recorded before commitments
existed (version 1) are reported as such, never guessed.

Export side: :func:`records_for` reads the vault's audit log. Verify side: :func:`verify_listed`
checks each carried record (signature with the unit key, device, polygons hashing to the digest).
Pure apart from reading those files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError, VaultError
from ..privacy.commitment import MASK_SET_ACTION, Committed, MaskSet
from . import format as fmt
from .audit import parse_record

#: Key of a mask set: camera and digest.
SetKey = tuple[str, bytes]


def mask_file(camera: str, digest: bytes) -> str:
    """Where a bundle keeps the record of a mask set."""
    return f"masks/{camera}/{digest.hex()}.json"


def records_for(
    audit_path: Path, public_key: ed25519.Ed25519PublicKey, wanted: Iterable[SetKey]
) -> dict[SetKey, bytes]:
    """The first intact signed ``mask-set`` line of the log announcing each wanted set.

    A set without an intact record is absent from the answer (the bundle then says its polygons
    are unknown); a damaged line is skipped here, since ``edgectl verify`` reports it.
    """
    want = set(wanted)
    found: dict[SetKey, bytes] = {}
    if not want:
        return found
    try:
        data = audit_path.read_bytes()
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise VaultError(f"{audit_path}: {exc.strerror}") from None
    for line in data.split(b"\n"):
        if b'"action":"' + MASK_SET_ACTION.encode() + b'"' not in line:
            continue  # cheap: most records are something else
        try:
            rec = parse_record(line, public_key)
            key = (str(rec.details["camera"]), bytes.fromhex(str(rec.details["digest"])))
        except (IntegrityError, KeyError, ValueError):
            continue
        if rec.action == MASK_SET_ACTION and key in want and key not in found:
            found[key] = line + b"\n"
    return found


def verify_listed(
    entries: Sequence[Mapping[str, Any]],
    read: Any,
    key: ed25519.Ed25519PublicKey,
    device: str,
) -> dict[SetKey, MaskSet]:
    """The mask sets a bundle carries, each checked; ``read(entry, where)`` gives the bytes of a
    listed file (digest checked against the manifest)."""
    out: dict[SetKey, MaskSet] = {}
    for i, entry in enumerate(entries):
        where = f"mask_sets[{i}]."
        line = bytes(read(entry, where)).rstrip(b"\n")
        try:
            rec = parse_record(line, key)
        except IntegrityError as exc:
            raise IntegrityError(f"{entry.get('file')}: {exc}") from None
        if rec.action != MASK_SET_ACTION or rec.device != device:
            raise IntegrityError(f"{entry.get('file')}: not a mask-set record of {device}")
        found = MaskSet.from_record(rec.details)
        if (
            found.camera_id != entry.get("camera")
            or found.digest.hex() != entry.get("digest")
            or entry.get("file") != mask_file(found.camera_id, found.digest)
        ):
            raise IntegrityError(f"{entry.get('file')}: record does not match the manifest")
        out[(found.camera_id, found.digest)] = found
    return out


@dataclass(frozen=True, slots=True)
class MaskSpan:
    """A stretch of one camera's recording and the masks that held over it."""

    camera: str
    from_ns: int
    to_ns: int
    committed: Committed | None
    """None: a segment recorded before mask commitments (nothing is proven about its masks)."""
    mask_set: MaskSet | None
    """The polygons, when the bundle carries the signed record of the committed digest."""

    @property
    def state(self) -> str:
        if self.committed is None:
            return "no commitment"
        return "committed" if self.mask_set is not None else "polygons unknown"

    def describe(self) -> str:
        if self.committed is None:
            return "no mask commitment (recorded before commitments)"
        digest = self.committed.mask_set.hex()[:16]
        if self.mask_set is None:
            return f"mask set {digest}…: its signed record is not in the bundle (polygons unknown)"
        names = ", ".join(self.mask_set.names()) or "no mask"
        return f"mask set {digest}… ({len(self.mask_set.masks)}: {names})"


def timeline(
    segments: Iterable[fmt.SealedSegment], mask_sets: Mapping[SetKey, MaskSet]
) -> list[MaskSpan]:
    """Per camera, in recording order, the spans of time under each committed mask set."""
    spans: list[MaskSpan] = []
    for seg in segments:
        h = seg.header
        if not h.masks:
            spans.append(MaskSpan(h.camera_id, h.start_wall_ns, h.end_wall_ns, None, None))
            continue
        ends = [e.from_wall_ns for e in h.masks[1:]] + [h.end_wall_ns]
        for entry, end in zip(h.masks, ends, strict=True):
            known = mask_sets.get((h.camera_id, entry.committed.mask_set))
            spans.append(MaskSpan(h.camera_id, entry.from_wall_ns, end, entry.committed, known))
    return spans


@dataclass(frozen=True, slots=True)
class SecondMasks:
    """The mask sets that held during one second (UTC, whole seconds since 1970)."""

    camera: str
    second: int
    spans: tuple[MaskSpan, ...]
    """Every span touching the second: more than one where the set changed in it."""


def per_second(spans: Sequence[MaskSpan]) -> list[SecondMasks]:
    """Each recorded second of each camera and the spans that cover part of it."""
    seconds: dict[tuple[str, int], list[MaskSpan]] = {}
    for span in spans:
        if span.to_ns <= span.from_ns:
            continue
        first, last = span.from_ns // 10**9, (span.to_ns - 1) // 10**9
        for s in range(first, last + 1):
            held = seconds.setdefault((span.camera, s), [])
            if not held or _span_key(held[-1]) != _span_key(span):
                held.append(span)
    return [SecondMasks(cam, s, tuple(v)) for (cam, s), v in sorted(seconds.items())]


def _span_key(span: MaskSpan) -> tuple[bytes, bytes] | None:
    c = span.committed
    return None if c is None else (c.mask_set, c.config_version)


def runs(seconds: Sequence[SecondMasks]) -> list[tuple[str, int, int, str]]:
    """Consecutive seconds of a camera with the same description: (camera, first, last, text),
    for people (``edge-csu open`` prints them)."""
    out: list[tuple[str, int, int, str]] = []
    for sec in seconds:
        text = " then ".join(span.describe() for span in sec.spans)
        if out and out[-1][0] == sec.camera and out[-1][2] == sec.second - 1 and out[-1][3] == text:
            out[-1] = (sec.camera, out[-1][1], sec.second, text)
        else:
            out.append((sec.camera, sec.second, sec.second, text))
    return out
