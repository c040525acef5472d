"""Rules: each triggered by a scenario built for it, and not by its near miss."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from edge.analytics.base import Track, TrackPoint
from edge.analytics.rules import (
    Alert,
    CrowdMovementRule,
    GatheringRule,
    LineCounter,
    ParkingRule,
    WrongWayRule,
)
from edge.config import (
    CrowdMovementRuleConfig,
    GatheringRuleConfig,
    LineRuleConfig,
    ParkingRuleConfig,
    WrongWayRuleConfig,
)

Path = Callable[[float], tuple[float, float] | None]
"""Anchor position of an object at time t, or None when it is not in view."""

FPS = 5.0
ZONE = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]


def run(
    rule: object, paths: dict[int, tuple[str, Path]], seconds: float, start: float = 0.0
) -> list[Alert]:
    """Feed the rule tracks that follow ``paths`` at FPS from ``start``; the alerts raised."""
    tracks: dict[int, Track] = {}
    alerts: list[Alert] = []
    for i in range(round(seconds * FPS) + 1):
        t = start + i / FPS
        live = []
        for tid, (label, path) in paths.items():
            p = path(t)
            if p is None:
                tracks.pop(tid, None)
                continue
            x, y = p
            tr = tracks.setdefault(tid, Track(tid, label, (0, 0, 0, 0), confirmed=True))
            tr.box = (x - 0.02, y - 0.08, x + 0.02, y)
            tr.history.append(TrackPoint(t, x, y))
            live.append(tr)
        alerts.extend(rule.update(live, t))  # type: ignore[attr-defined]
    return alerts


def still(x: float, y: float) -> Path:
    return lambda t: (x, y)


def linear(x0: float, y0: float, vx: float, vy: float, t0: float = 0.0) -> Path:
    return lambda t: (x0 + vx * (t - t0), y0 + vy * (t - t0)) if t >= t0 else None


# --- line counting -----------------------------------------------------------------------


def test_line_counts_per_class_and_direction_and_reports_each_interval() -> None:
    line = LineCounter(
        LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=5)
    )
    paths = {
        1: ("person", linear(0.3, 0.5, 0.1, 0)),  # left to right: backward for a downward line
        2: ("person", linear(0.7, 0.6, -0.1, 0)),  # right to left: forward
        3: ("car", linear(0.1, 0.3, 0.2, 0)),
        4: ("person", linear(0.1, 0.9, 0.02, 0)),  # never reaches the line
    }
    reports = []
    tracks: dict[int, Track] = {}
    for i in range(int(10 * FPS) + 1):
        t = i / FPS
        live = []
        for tid, (label, path) in paths.items():
            x, y = path(t) or (0, 0)
            tr = tracks.setdefault(tid, Track(tid, label, (0, 0, 0, 0), confirmed=True))
            tr.box = (x - 0.02, y - 0.08, x + 0.02, y)
            tr.history.append(TrackPoint(t, x, y))
            live.append(tr)
        reports.extend(line.update(live, t))
    assert line.totals == {
        ("person", "backward"): 1,
        ("person", "forward"): 1,
        ("car", "backward"): 1,
    }
    assert [r.end - r.start for r in reports] == [5.0, 5.0]
    summed: dict[tuple[str, str], int] = {}
    for r in reports:
        for k, v in r.counts.items():
            summed[k] = summed.get(k, 0) + v
    assert summed == line.totals


def test_line_crossing_outside_the_segment_is_not_counted() -> None:
    line = LineCounter(LineRuleConfig(name="door", points=((0.4, 0.5), (0.6, 0.5))))
    run(line, {1: ("person", linear(0.8, 0.3, 0, 0.1))}, 5)  # passes beside the segment
    assert line.totals == {}
    run(line, {2: ("person", linear(0.5, 0.3, 0, 0.1))}, 5)
    assert line.totals == {("person", "forward"): 1}


# --- gathering ---------------------------------------------------------------------------


def gathering(n: int) -> dict[int, tuple[str, Path]]:
    return {k: ("person", still(0.3 + 0.05 * k, 0.5)) for k in range(n)}


def test_gathering_of_n_persons_for_t_seconds_raises_one_alert() -> None:
    rule = GatheringRule(
        GatheringRuleConfig(name="square", zone=ZONE, min_persons=5, min_seconds=10)
    )
    alerts = run(rule, gathering(5), 30)
    assert len(alerts) == 1  # cooldown: one situation, one alert
    assert alerts[0].kind == "gathering" and alerts[0].details["persons"] == 5
    assert alerts[0].t == pytest.approx(10.0)


def test_gathering_near_misses_raise_nothing() -> None:
    cfg = GatheringRuleConfig(name="square", zone=ZONE, min_persons=5, min_seconds=10)
    assert run(GatheringRule(cfg), gathering(4), 30) == []  # N - 1 persons
    assert run(GatheringRule(cfg), gathering(5), 9) == []  # T - 1 seconds
    outside = {k: ("person", still(0.85, 0.1 + 0.1 * k)) for k in range(6)}
    assert run(GatheringRule(cfg), outside, 30) == []  # beside the zone


# --- crowd movement ----------------------------------------------------------------------


def crowd(sudden_speed: float, *, spread_to: float | None = None) -> dict[int, tuple[str, Path]]:
    """Five persons strolling at 0.01/s; at t=10 they move at ``sudden_speed`` or spread out."""

    def path(k: int) -> Path:
        x0, y0 = 0.4 + 0.03 * (k % 3), 0.45 + 0.04 * (k // 3)

        def at(t: float) -> tuple[float, float]:
            if t < 10:
                return (x0 + 0.01 * t, y0)
            x = x0 + 0.1 + sudden_speed * (t - 10)
            if spread_to is not None:
                f = min(1.0, (t - 10) / 1.5)
                cx, cy = 0.5, 0.5
                return (x + (x0 - cx) * (spread_to - 1) * f, y0 + (y0 - cy) * (spread_to - 1) * f)
            return (x, y0)

        return at

    return {k: ("person", path(k)) for k in range(5)}


CROWD = CrowdMovementRuleConfig(name="plaza", zone=[(0, 0), (1, 0), (1, 1), (0, 1)], min_persons=3)


def test_crowd_suddenly_running_raises_one_alert() -> None:
    alerts = run(CrowdMovementRule(CROWD), crowd(0.12), 14)
    assert [a.details["cause"] for a in alerts] == ["speed"]
    assert 10 < alerts[0].t <= 12


def test_crowd_dispersal_raises_an_alert() -> None:
    alerts = run(CrowdMovementRule(CROWD), crowd(0.01, spread_to=4.0), 14)
    assert [a.details["cause"] for a in alerts] == ["dispersal"]


def test_crowd_near_misses_raise_nothing() -> None:
    assert run(CrowdMovementRule(CROWD), crowd(0.01), 20) == []  # same pace throughout
    assert run(CrowdMovementRule(CROWD), crowd(0.025), 20) == []  # faster, below factor
    assert run(CrowdMovementRule(CROWD), crowd(0.01, spread_to=1.6), 20) == []
    two = dict(list(crowd(0.12).items())[:2])
    assert run(CrowdMovementRule(CROWD), two, 20) == []  # N - 1 persons


# --- wrong way ---------------------------------------------------------------------------

LANE = WrongWayRuleConfig(
    name="lane-east", zone=[(0.0, 0.4), (1.0, 0.4), (1.0, 0.7), (0.0, 0.7)], direction=(1.0, 0.0)
)


def test_vehicle_against_the_lane_direction_raises_one_alert() -> None:
    alerts = run(WrongWayRule(LANE), {7: ("car", linear(0.9, 0.6, -0.1, 0))}, 8)
    assert len(alerts) == 1
    assert alerts[0].details["track"] == 7 and alerts[0].details["angle_degrees"] == 180.0


def test_wrong_way_near_misses_raise_nothing() -> None:
    rule = WrongWayRule(LANE)
    assert run(rule, {1: ("car", linear(0.1, 0.6, 0.1, 0))}, 8) == []  # allowed direction
    assert run(rule, {2: ("car", linear(0.5, 0.55, 0.02, 0.02))}, 4) == []  # turning right
    assert run(rule, {3: ("person", linear(0.9, 0.6, -0.1, 0))}, 8) == []  # a pedestrian
    assert run(rule, {4: ("car", linear(0.9, 0.2, -0.1, 0))}, 8) == []  # outside the lane
    assert run(rule, {5: ("car", linear(0.6, 0.6, -0.008, 0))}, 5) == []  # backs up 4 cm


# --- parking overstay --------------------------------------------------------------------

BAY = ParkingRuleConfig(name="blue-zone", zone=ZONE, max_seconds=60, stationary_tolerance=0.02)


def test_vehicle_parked_longer_than_allowed_raises_one_alert() -> None:
    alerts = run(ParkingRule(BAY), {3: ("car", still(0.5, 0.5))}, 90)
    assert len(alerts) == 1 and alerts[0].details["track"] == 3
    assert alerts[0].t == pytest.approx(60.2)


def test_parking_clock_survives_an_occlusion_that_loses_the_track() -> None:
    rule = ParkingRule(BAY)
    first = run(rule, {3: ("car", lambda t: (0.5, 0.5) if t < 40 else None)}, 45)
    assert first == []
    # The same car reappears as track 9 at the same place: its clock started 45 s ago.
    later = run(rule, {9: ("car", still(0.5, 0.5))}, 20, start=45.2)
    assert len(later) == 1 and later[0].details["seconds"] > 60


def test_parking_near_misses_raise_nothing() -> None:
    assert run(ParkingRule(BAY), {3: ("car", still(0.5, 0.5))}, 59) == []  # T - 1 seconds
    creeping = {3: ("car", linear(0.3, 0.5, 0.004, 0))}  # moves 2.4 cm a minute: in traffic
    assert run(ParkingRule(BAY), creeping, 90) == []
    assert run(ParkingRule(BAY), {3: ("person", still(0.5, 0.5))}, 90) == []
    assert run(ParkingRule(BAY), {3: ("car", still(0.9, 0.5))}, 90) == []  # outside the zone


def test_count_intervals_align_on_the_wall_clock_and_skip_unobserved_ones() -> None:
    line = LineCounter(
        LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=5)
    )
    walker = Track(1, "person", (0, 0, 0, 0), confirmed=True)
    reports = []
    # Monotonic 0 is wall-clock 2.5: intervals end at monotonic 2.5, 7.5, 12.5, ...
    times = [i / FPS for i in range(0, 41)] + [30.0 + i / FPS for i in range(0, 10)]
    for t in times:
        x = 0.3 + 0.05 * t if t < 20 else 0.9 - 0.05 * (t - 30)
        walker.history.append(TrackPoint(t, x, 0.5))
        reports += line.update([walker], t, wall_offset=2.5)
    assert [(r.start, r.end) for r in reports] == [(0.0, 2.5), (2.5, 7.5), (7.5, 12.5)]
    # Crossed rightward (backward for a downward line) at t = 4, in the interval [2.5, 7.5).
    assert [r.counts for r in reports] == [{}, {("person", "backward"): 1}, {}]
    # Frames stopped between 8 and 30: the intervals ending 17.5 ... 27.5 were skipped, and the
    # interval in progress starts at the last boundary before the frames came back.
    last = line.flush(31.8)
    assert (last.start, last.end) == (27.5, 31.8)


def test_count_intervals_follow_one_clock_despite_jittering_frame_stamps() -> None:
    """Field trials: each frame's wall-clock offset jitters by milliseconds; intervals must keep
    true bounds (no start = end), and each crossing must land in the interval around its time."""
    line = LineCounter(
        LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=5)
    )
    jitter = [0.0, 0.013, -0.011, 0.007, -0.019, 0.002, 0.017, -0.004]
    tracks: dict[int, Track] = {}
    crossed_at: dict[int, float] = {}
    reports = []
    for i in range(int(60 * FPS) + 1):
        t = i / FPS
        live = []
        for tid in range(12):  # one walker every 5 s, crossing x = 0.5 at 2.6 + 5 k s
            t0 = tid * 5.0
            x = 0.3 + 0.1 * (t - t0)
            if not 0.0 <= t - t0 <= 4.0:
                continue
            tr = tracks.setdefault(tid, Track(tid, "person", (0, 0, 0, 0), confirmed=True))
            tr.history.append(TrackPoint(t, x, 0.5))
            if x > 0.5 + line.cfg.hysteresis and tid not in crossed_at:
                crossed_at[tid] = t  # the frame at which it counts
            live.append(tr)
        reports += line.update(live, t, wall_offset=2.5 + jitter[i % len(jitter)])
    reports.append(line.flush(60.5))
    assert all(r.end > r.start for r in reports), [(r.start, r.end) for r in reports]
    assert all(r.end - r.start == pytest.approx(5.0) for r in reports[1:-1])
    for a, b in itertools.pairwise(reports):
        assert a.end == b.start  # contiguous: no gap, no overlap
    for r in reports:
        inside = [tid for tid, tc in crossed_at.items() if r.start <= tc < r.end]
        assert r.counts.get(("person", "backward"), 0) == len(inside), (r.start, r.end)
    assert line.totals == {("person", "backward"): 12}


def test_a_person_swaying_on_the_line_counts_once_when_leaving_it() -> None:
    line = LineCounter(LineRuleConfig(name="door", points=((0.5, 0.0), (0.5, 1.0))))
    # Stands astride the line for 20 s, swaying ±0.8 % of the frame (blob centre wobble)...
    sway: Path = lambda t: (0.5 + 0.008 * math.sin(t * 7.0), 0.5) if t < 20 else None  # noqa: E731
    run(line, {1: ("person", sway)}, 25)
    assert line.totals == {}

    # ...then one who arrives from the left, sways on the line, and walks off to the right.
    def arrive_sway_leave(t: float) -> tuple[float, float]:
        if t < 5:
            return (0.3 + 0.04 * t, 0.5)
        if t < 15:
            return (0.5 + 0.008 * math.sin(t * 5.0), 0.5)
        return (0.5 + 0.04 * (t - 15), 0.5)

    run(line, {2: ("person", arrive_sway_leave)}, 25)
    assert line.totals == {("person", "backward"): 1}


def test_line_hysteresis_is_validated() -> None:
    with pytest.raises(ValueError):
        LineRuleConfig(name="door", points=((0.5, 0.0), (0.5, 1.0)), hysteresis=-0.01)
    with pytest.raises(ValueError):
        LineRuleConfig(name="door", points=((0.5, 0.0), (0.5, 1.0)), hysteresis=0.5)
    assert LineRuleConfig.model_fields["hysteresis"].description
