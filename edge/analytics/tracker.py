"""Multi-object tracker: constant-velocity Kalman filters with IoU association (SORT/ByteTrack).

Pure numpy over plain data, no threads or I/O: :meth:`Tracker.update` takes one frame's
detections and its time and returns the tracks. As in ByteTrack, confident detections are
associated first and weak ones only to tracks left over, which keeps identities through
partial occlusions; tracks survive ``max_age`` seconds without a detection, so an object
hidden briefly (behind a post, by another person) keeps its number. When boxes no longer
overlap (fast objects at a low analytics rate) association falls back to the distance between
centres, gated by the box size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .base import Box, Detection, Track, TrackPoint
from .decoders import iou_matrix

F64 = npt.NDArray[np.float64]


class KalmanBox:
    """State (cx, cy, w, h, vx, vy, vw, vh); measurement (cx, cy, w, h). Time in seconds."""

    def __init__(self, box: Box) -> None:
        x1, y1, x2, y2 = box
        self.x: F64 = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0, 0, 0, 0.0])
        self.p: F64 = np.diag([1e-4, 1e-4, 1e-4, 1e-4, 1e-2, 1e-2, 1e-3, 1e-3])
        self._h: F64 = np.hstack([np.eye(4), np.zeros((4, 4))])
        self._r: F64 = np.diag([1e-4, 1e-4, 4e-4, 4e-4])

    def predict(self, dt: float) -> None:
        f = np.eye(8)
        f[0:4, 4:8] = np.eye(4) * dt
        q = np.diag([1e-5, 1e-5, 1e-5, 1e-5, 4e-3, 4e-3, 1e-4, 1e-4]) * max(dt, 1e-3)
        self.x = f @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1e-3)
        self.p = f @ self.p @ f.T + q

    def correct(self, box: Box) -> None:
        x1, y1, x2, y2 = box
        z = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        s = self._h @ self.p @ self._h.T + self._r
        k = self.p @ self._h.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - self._h @ self.x)
        self.p = (np.eye(8) - k @ self._h) @ self.p

    @property
    def box(self) -> Box:
        cx, cy, w, h = (float(v) for v in self.x[:4])
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


class _State:
    __slots__ = ("hits", "kf", "last_seen", "track")

    def __init__(self, track: Track, kf: KalmanBox, t: float) -> None:
        self.track = track
        self.kf = kf
        self.hits = 1
        self.last_seen = t


class Tracker:
    """Follows detections over frames; not thread-safe (one per camera and analytics loop)."""

    def __init__(
        self,
        *,
        high_score: float = 0.5,
        min_iou: float = 0.1,
        max_age: float = 1.5,
        min_hits: int = 2,
        max_centre_distance: float = 1.5,
        history_seconds: float = 30.0,
    ) -> None:
        self.high_score = high_score
        self.min_iou = min_iou
        self.max_age = max_age
        self.min_hits = min_hits
        self.max_centre_distance = max_centre_distance
        self.history_seconds = history_seconds
        self._states: list[_State] = []
        self._next_id = 1
        self._last_t: float | None = None

    @property
    def tracks(self) -> list[Track]:
        return [s.track for s in self._states]

    def _cost(self, states: list[_State], dets: list[Detection]) -> F64:
        """Similarity in [0, 1+]: IoU, or a weaker centre-distance score when boxes are apart."""
        if not states or not dets:
            return np.zeros((len(states), len(dets)))
        tb = np.array([s.kf.box for s in states])
        db = np.array([d.box for d in dets])
        iou = iou_matrix(tb, db)
        tc = (tb[:, :2] + tb[:, 2:]) / 2
        dc = (db[:, :2] + db[:, 2:]) / 2
        size = np.maximum(tb[:, 2:] - tb[:, :2], 1e-3).max(axis=1)
        dist = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2) / size[:, None]
        near = np.clip(1.0 - dist / self.max_centre_distance, 0.0, 1.0) * self.min_iou
        same_class = np.array([[s.track.label == d.label for d in dets] for s in states])
        out: F64 = np.where(same_class, np.maximum(iou, near), 0.0)
        return out

    def _associate(
        self, states: list[_State], dets: list[Detection]
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Greedy best-first matching; (matches, unmatched states, unmatched detections)."""
        sim = self._cost(states, dets)
        matches: list[tuple[int, int]] = []
        used_s: set[int] = set()
        used_d: set[int] = set()
        if sim.size:
            for flat in np.argsort(-sim, axis=None):
                si, di = divmod(int(flat), sim.shape[1])
                if sim[si, di] <= 0.0:
                    break
                if si in used_s or di in used_d:
                    continue
                used_s.add(si)
                used_d.add(di)
                matches.append((si, di))
        return (
            matches,
            [i for i in range(len(states)) if i not in used_s],
            [i for i in range(len(dets)) if i not in used_d],
        )

    def update(self, detections: list[Detection], t: float) -> list[Track]:
        """Advance to time ``t`` (seconds) with this frame's detections; returns live tracks."""
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        for s in self._states:
            s.kf.predict(dt)
        high = [d for d in detections if d.score >= self.high_score]
        low = [d for d in detections if d.score < self.high_score]
        matches, rest, new = self._associate(self._states, high)
        for si, di in matches:
            self._hit(self._states[si], high[di], t)
        leftovers = [self._states[i] for i in rest]
        matches_low, _, _ = self._associate(leftovers, low)
        for si, di in matches_low:
            self._hit(leftovers[si], low[di], t)
        for di in new:
            self._spawn(high[di], t)
        self._states = [s for s in self._states if t - s.last_seen <= self.max_age]
        for s in self._states:
            s.track.box = s.kf.box
        return self.tracks

    def _hit(self, s: _State, det: Detection, t: float) -> None:
        s.kf.correct(det.box)
        s.hits += 1
        s.last_seen = t
        s.track.box = s.kf.box
        s.track.confirmed = s.track.confirmed or s.hits >= self.min_hits
        self._record(s.track, t)

    def _spawn(self, det: Detection, t: float) -> None:
        track = Track(self._next_id, det.label, det.box, confirmed=self.min_hits <= 1)
        self._next_id += 1
        self._record(track, t)
        self._states.append(_State(track, KalmanBox(det.box), t))

    def _record(self, track: Track, t: float) -> None:
        x, y = track.anchor
        track.history.append(TrackPoint(t, x, y))
        horizon = t - self.history_seconds
        while len(track.history) > 2 and track.history[0].t < horizon:
            track.history.pop(0)
