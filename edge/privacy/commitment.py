"""Mask commitments: what proves, from a recording alone, which privacy masks hid which frames.

Every sealed segment commits in its signed header to the digest of the mask set in force for its
frames and to the configuration version (docs/FORMATS.md, sealed segment version 2); every mask
set edged starts with or changes to is written, polygons included, to the vault's signed audit
log (action ``mask-set``). A verifier holding a segment and the record whose polygons hash to its
digest knows which pixels were hidden at each instant, without trusting anything else the unit
says.

- :class:`MaskSet` is a camera's set of polygons in a canonical form and its SHA-256 digest.
- :func:`config_version` is the digest of the whole effective configuration.
- :class:`MaskTracker` (recording thread only) remembers which commitment each encoded frame was
  masked under until the encoder cuts the segment holding it.

Pure: no files, no clock, no threads.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.errors import IntegrityError

if TYPE_CHECKING:
    from edge.config import EdgeConfig, PrivacyMaskConfig

#: Audit action of a mask-set record (its ``details`` are :meth:`MaskSet.record`).
MASK_SET_ACTION = "mask-set"
MASK_SET_FORMAT = "edge-mask-set"
DIGEST_LEN = 32
_CONFIG_DOMAIN = b"edge-config-v1\0"


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class Committed:
    """The mask set and configuration version a frame was masked under."""

    mask_set: bytes
    """SHA-256 of the canonical mask set (:attr:`MaskSet.digest`)."""
    config_version: bytes
    """SHA-256 of the effective configuration (:func:`config_version`)."""


@dataclass(frozen=True, slots=True)
class MaskCommitment:
    """One entry of a segment's signed commitment: ``committed`` holds from ``from_wall_ns``
    (the capture time of the first frame masked under it) to the next entry or the segment's
    end. The first entry starts at the segment's start."""

    from_wall_ns: int
    committed: Committed


@dataclass(frozen=True, slots=True)
class MaskSet:
    """A camera's privacy masks in canonical form; the digest is what segments commit to."""

    camera_id: str
    width: int
    height: int
    masks: tuple[Mapping[str, Any], ...]
    """Each ``{"name", "points", "fill", "pixel_size"}``, in the configuration's order."""

    @classmethod
    def of(
        cls, camera_id: str, masks: Sequence[PrivacyMaskConfig], width: int, height: int
    ) -> MaskSet:
        return cls(
            camera_id,
            width,
            height,
            tuple(
                {
                    "name": m.name,
                    "points": [[float(x), float(y)] for x, y in m.points],
                    "fill": m.fill.value,
                    "pixel_size": m.pixel_size,
                }
                for m in masks
            ),
        )

    def canonical(self) -> dict[str, Any]:
        return {
            "format": MASK_SET_FORMAT,
            "version": 1,
            "camera": self.camera_id,
            "width": self.width,
            "height": self.height,
            "masks": [dict(m) for m in self.masks],
        }

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(_canonical(self.canonical())).digest()

    def names(self) -> list[str]:
        return [str(m["name"]) for m in self.masks]

    def record(self, config_version: bytes) -> dict[str, Any]:
        """The details of the signed ``mask-set`` audit record announcing this set."""
        return {
            "camera": self.camera_id,
            "digest": self.digest.hex(),
            "config_version": config_version.hex(),
            "mask_set": self.canonical(),
        }

    @classmethod
    def from_record(cls, details: Mapping[str, Any]) -> MaskSet:
        """The set a ``mask-set`` record announces; its polygons must hash to its digest."""
        try:
            body = details["mask_set"]
            if body["format"] != MASK_SET_FORMAT or body["version"] != 1:
                raise ValueError("not an edge-mask-set version 1")
            masks = tuple(dict(m) for m in body["masks"])
            for m in masks:
                if set(m) != {"name", "points", "fill", "pixel_size"}:
                    raise ValueError("mask fields")
            found = cls(str(body["camera"]), int(body["width"]), int(body["height"]), masks)
            claimed = bytes.fromhex(str(details["digest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"mask-set record malformed ({exc})") from None
        if found.digest != claimed:
            raise IntegrityError("mask-set record: its polygons do not hash to its digest")
        return found


def config_version(cfg: EdgeConfig) -> bytes:
    """SHA-256 of the effective configuration (every field, defaults included, as JSON)."""
    return hashlib.sha256(_CONFIG_DOMAIN + _canonical(cfg.model_dump(mode="json"))).digest()


class MaskTracker:
    """Which commitment each frame handed to the encoder was masked under, until its segment
    is cut. Used by one recording thread only (no lock).

    The capture thread reads the masker and its commitment together and queues them with the
    frame, so a frame is never attributed to a set it was not masked with. A segment holds
    ``frame_count`` consecutive encoded frames from ``first_frame_index`` on (frames are dropped
    before the queue, never inside the encoder), which is how frames are matched to segments.
    """

    def __init__(self) -> None:
        self._frames: deque[tuple[int, int, Committed]] = deque()

    def note(self, frame_index: int, wall_ns: int, committed: Committed) -> None:
        self._frames.append((frame_index, wall_ns, committed))

    def reset(self) -> None:
        """A new encoder: the frames noted so far will never be in a segment."""
        self._frames.clear()

    def commitments(self, first_frame_index: int, frame_count: int) -> tuple[MaskCommitment, ...]:
        """The entries of the segment made of these frames (forgotten afterwards)."""
        while self._frames and self._frames[0][0] < first_frame_index:
            self._frames.popleft()
        out: list[MaskCommitment] = []
        for _ in range(min(frame_count, len(self._frames))):
            _index, wall_ns, committed = self._frames.popleft()
            if out and out[-1].committed == committed:
                continue
            # A wall clock stepped back inside a segment must not order a change before the
            # one it follows: the entry keeps the later of the two times.
            start = max(wall_ns, out[-1].from_wall_ns) if out else wall_ns
            out.append(MaskCommitment(start, committed))
        return tuple(out)
