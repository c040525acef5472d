"""Tracker: identities kept through crossings and short occlusions."""

from __future__ import annotations

import numpy as np

from edge.analytics.base import Box, Detection
from edge.analytics.tracker import Tracker


def _box(cx: float, cy: float, w: float = 0.06, h: float = 0.12) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def test_two_people_crossing_keep_their_identities() -> None:
    tracker = Tracker()
    xs: dict[int, list[float]] = {}
    for i in range(40):
        t = i / 5.0
        a = Detection(_box(0.1 + 0.02 * i, 0.5), 0.9, "person")  # walks right
        b = Detection(_box(0.9 - 0.02 * i, 0.52), 0.9, "person")  # walks left, crosses a
        for tr in tracker.update([a, b], t):
            xs.setdefault(tr.id, []).append((tr.box[0] + tr.box[2]) / 2)
    # Exactly two identities, and neither turns back: a swap at the crossing would show as a
    # track whose position reverses.
    assert len(xs) == 2
    moves = sorted(np.sign(np.diff(path)).sum() for path in xs.values())
    assert moves[0] <= -len(xs[min(xs)]) + 3 and moves[1] >= len(xs[max(xs)]) - 3
    assert all(tr.confirmed for tr in tracker.tracks)


def test_identity_survives_a_short_occlusion_but_not_a_long_absence() -> None:
    tracker = Tracker(max_age=1.5)
    seen: set[int] = set()
    for i in range(30):
        t = i / 5
        if 10 <= i < 15:  # hidden behind a post for one second
            tracks = tracker.update([], t)
            assert len(tracks) == 1  # predicted, not yet lost
            continue
        tracks = tracker.update([Detection(_box(0.1 + 0.025 * i, 0.5), 0.8, "person")], t)
        seen.update(tr.id for tr in tracks)
    assert len(seen) == 1
    for i in range(30, 45):  # gone for three seconds
        tracker.update([], i / 5)
    assert tracker.tracks == []


def test_weak_detections_extend_tracks_but_do_not_start_them() -> None:
    tracker = Tracker(high_score=0.5)
    tracker.update([Detection(_box(0.5, 0.5), 0.9, "car")], 0.0)
    tracks = tracker.update(
        [Detection(_box(0.51, 0.5), 0.3, "car"), Detection(_box(0.1, 0.1), 0.3, "car")], 0.2
    )
    assert len(tracks) == 1 and tracks[0].confirmed


def test_fast_object_without_overlap_is_followed_by_centre_distance() -> None:
    tracker = Tracker()
    ids: set[int] = set()
    for i in range(10):  # moves more than its own width between frames
        tracks = tracker.update([Detection(_box(0.1 + 0.08 * i, 0.5, w=0.05), 0.9, "car")], i)
        ids.update(tr.id for tr in tracks)
    assert len(ids) == 1


def test_classes_are_never_mixed() -> None:
    tracker = Tracker()
    tracker.update([Detection(_box(0.5, 0.5), 0.9, "person")], 0.0)
    tracks = tracker.update([Detection(_box(0.5, 0.5), 0.9, "car")], 0.2)
    assert sorted(tr.label for tr in tracks) == ["car", "person"]
