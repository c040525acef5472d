"""Interfaces and plain data shared by the analytics stages.

Coordinates are normalised to the analysed frame (x right, y down, 0..1), so rules written
against the full-resolution view stay valid whatever the analytics resolution is.

No stage here identifies people: detections are anonymous boxes, tracks are short-lived
numbers that never leave the unit as anything but counts and alerts. No facial recognition,
ever; faces are only ever *detected*, to blur them or to count them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2), normalised."""

#: Categories the rules reason about; labels of a model map onto them (see :func:`category_of`).
PERSON = "person"
CYCLE = "cycle"
VEHICLE = "vehicle"
OTHER = "other"

_CATEGORY_OF_LABEL = {
    "person": PERSON,
    "pedestrian": PERSON,
    "face": PERSON,
    "bicycle": CYCLE,
    "cycle": CYCLE,
    "motorcycle": VEHICLE,
    "car": VEHICLE,
    "bus": VEHICLE,
    "truck": VEHICLE,
    "van": VEHICLE,
    "vehicle": VEHICLE,
}


def category_of(label: str) -> str:
    """The rule category of a model label (``"car"`` → ``"vehicle"``)."""
    return _CATEGORY_OF_LABEL.get(label.lower(), OTHER)


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in one frame."""

    box: Box
    score: float
    label: str

    @property
    def category(self) -> str:
        return category_of(self.label)


@dataclass(slots=True)
class TrackPoint:
    t: float
    """Seconds (monotonic clock of the frame)."""
    x: float
    y: float


@dataclass(slots=True)
class Track:
    """An object followed over frames, as the rules see it.

    ``anchor`` is the point rules test against zones and lines: the bottom centre of the box
    (where a person or vehicle touches the ground), the natural reference for street scenes.
    """

    id: int
    label: str
    box: Box
    confirmed: bool
    history: list[TrackPoint] = field(default_factory=list)

    @property
    def category(self) -> str:
        return category_of(self.label)

    @property
    def anchor(self) -> tuple[float, float]:
        x1, _y1, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2)


class Detector(abc.ABC):
    """Finds objects in an RGB image (H, W, 3 uint8)."""

    @abc.abstractmethod
    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]: ...

    @property
    @abc.abstractmethod
    def description(self) -> str: ...
