"""The decree's event types as rules (decree 2023-828): forbidden-zone intrusion, abandoned
object, person on the ground, excessive density, fire start. Pure policy on plain tracks, and
the real pixel pipeline (synthetic street rendered to I420 → motion → tracker → rules) on
scenes with ground truth: each event is raised within its delay, and never on the decoys the
national evaluation named (headlights, lit signs, blinking lights) or on an ordinary street."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from edge.analytics.base import Track, TrackPoint
from edge.analytics.engine import AnalyticsEngine
from edge.analytics.fire import FireRule
from edge.analytics.ground import area_m2, homography, to_ground
from edge.analytics.schedule import Schedule
from edge.analytics.zone_rules import DensityRule, FallenPersonRule, IntrusionRule
from edge.capture.props import Prop
from edge.capture.synthetic import SyntheticSource
from edge.config import (
    AbandonedObjectRuleConfig,
    AnalyticsConfig,
    CameraAnalyticsConfig,
    DensityRuleConfig,
    FallenPersonRuleConfig,
    FireRuleConfig,
    GroundCalibration,
    IntrusionRuleConfig,
    parse,
)
from edge.errors import ConfigError

W, H, FPS = 480, 270, 5.0
WALL0_S = 1_795_000_000.0  # 2026-11-18, a Wednesday, 13:46 in Paris


def _track(
    tid: int, box: tuple[float, float, float, float], t: float, label: str = "person"
) -> Track:
    x1, _y1, x2, y2 = box
    return Track(tid, label, box, True, [TrackPoint(t, (x1 + x2) / 2, y2)])


# --- pure policy ---------------------------------------------------------------------------------


def test_schedules_hold_their_windows_across_midnight_and_days() -> None:
    nights = Schedule(["Mon-Fri 22:00-06:00"], "Europe/Paris")

    def at(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    assert nights.armed(at("2026-12-04T23:30:00+01:00"))  # Friday night
    assert nights.armed(at("2026-12-05T05:59:00+01:00"))  # ...until Saturday 06:00
    assert not nights.armed(at("2026-12-05T22:30:00+01:00"))  # Saturday night: not in it
    assert not nights.armed(at("2026-12-07T03:00:00+01:00"))  # Sunday night's morning part
    assert nights.armed(at("2026-12-08T03:00:00+01:00"))  # Monday night's morning part
    assert not nights.armed(at("2026-12-04T12:00:00+01:00"))
    assert Schedule([], "Europe/Paris").armed(at("2026-12-04T12:00:00+01:00"))
    whole = Schedule(["Sat,Sun 00:00-24:00"], "Europe/Paris")
    assert whole.armed(at("2026-12-06T23:59:00+01:00")) and not whole.armed(
        at("2026-12-07T00:01:00+01:00")
    )


def test_ground_calibration_gives_metres_and_areas() -> None:
    image = [(0.2, 0.6), (0.8, 0.6), (0.9, 0.9), (0.1, 0.9)]
    world = [(0.0, 10.0), (6.0, 10.0), (6.0, 0.0), (0.0, 0.0)]
    h = homography(image, world)
    for p, q in zip(image, world, strict=True):
        assert to_ground(h, p) == pytest.approx(q, abs=1e-9)
    assert area_m2(h, image) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="on one line"):
        homography([(0.1, 0.1), (0.2, 0.2), (0.3, 0.3), (0.1, 0.9)], world)


def test_configuration_refuses_what_cannot_work() -> None:
    base = '[[cameras]]\nid = "cam1"\n[analytics]\nenabled = true\n'
    with pytest.raises(ConfigError, match="ground calibration"):
        parse(base + '[[analytics.cameras]]\ncamera = "cam1"\n'
              '[[analytics.cameras.densities]]\nname = "square"\n')  # fmt: skip
    with pytest.raises(ConfigError, match="schedule"):
        parse(base + '[[analytics.cameras]]\ncamera = "cam1"\n'
              '[[analytics.cameras.intrusions]]\nname = "depot"\n'
              'schedule = ["Mon-Fry 22:00-06:00"]\n')  # fmt: skip
    with pytest.raises(ConfigError, match="time zone"):
        parse(base + 'timezone = "Europe/Pariss"\n')
    with pytest.raises(ValidationError, match="on one line"):
        GroundCalibration(image=[(0.1, 0.1), (0.2, 0.2), (0.3, 0.3), (0.1, 0.9)],
                          world=[(0, 0), (1, 0), (1, 1), (0, 1)])  # fmt: skip
    cfg = parse(base + '[[analytics.cameras]]\ncamera = "cam1"\n'
                '[[analytics.cameras.intrusions]]\nname = "depot"\nclasses = ["object"]\n'
                'schedule = ["Mon-Fri 22:00-06:00"]\nmin_seconds = 2\n')  # fmt: skip
    rule = cfg.analytics.cameras[0].intrusions[0]
    assert rule.classes == ["object"] and rule.zone[2] == (1.0, 1.0)


def test_intrusion_needs_dwell_schedule_and_class() -> None:
    zone = [(0.4, 0.4), (0.6, 0.4), (0.6, 0.9), (0.4, 0.9)]
    cfg = IntrusionRuleConfig(
        name="depot", zone=zone, min_seconds=2.0, schedule=["daily 12:00-14:00"]
    )
    rule = IntrusionRule(cfg)
    inside, outside = (0.45, 0.5, 0.5, 0.8), (0.1, 0.5, 0.15, 0.8)
    out = []
    for k in range(20):  # 13:46 local: armed; a person inside, a car outside
        t = k * 0.2
        out += rule.update([_track(1, inside, t), _track(2, outside, t, "car")], t, WALL0_S + t)
    assert [(a.kind, a.details["track"]) for a in out] == [("intrusion", 1)]
    assert out[0].t == pytest.approx(2.0)  # the dwell, no more
    late = IntrusionRule(cfg)  # 16:00 local: not armed, nothing however long
    assert not [
        a
        for k in range(50)
        for a in late.update([_track(1, inside, k * 0.2)], k * 0.2, WALL0_S + 8000 + k * 0.2)
    ]
    bird = IntrusionRule(IntrusionRuleConfig(name="d", zone=zone, classes=["object"]))
    tiny = (0.5, 0.5, 0.51, 0.51)  # a leaf blown through: below the smallest object
    assert not [
        a
        for k in range(20)
        for a in bird.update([_track(3, tiny, k * 0.2, "object")], k * 0.2, WALL0_S)
    ]


def test_person_on_the_ground_after_standing_not_a_bag_or_a_stoop() -> None:
    rule = FallenPersonRule(FallenPersonRuleConfig(name="ground", min_seconds=5.0))
    standing, lying = (0.50, 0.60, 0.52, 0.90), (0.44, 0.85, 0.58, 0.90)
    out = []
    for k in range(50):
        t = k * 0.2
        # the fall at 2 s: the tracker starts a new track for the lying person
        tracks = [_track(1, standing, t)] if t < 2.0 else [_track(2, lying, t)]
        out += rule.update(tracks, t, WALL0_S + t, aspect=W / H)
    assert [(a.kind, a.details["track"]) for a in out] == [("person_on_ground", 2)]
    assert out[0].t == pytest.approx(7.0)
    # a wide thing that never stood (a bag, a bench) and someone bending for two seconds
    rule = FallenPersonRule(FallenPersonRuleConfig(name="ground", min_seconds=5.0))
    out = []
    for k in range(100):
        t = k * 0.2
        bending = 5.0 <= t < 7.0
        tracks = [_track(3, lying, t), _track(4, lying if bending else standing, t)]
        out += rule.update(tracks, t, WALL0_S + t, aspect=W / H)
    assert out == []


def test_density_counts_persons_per_square_metre_of_ground() -> None:
    image = [(0.2, 0.6), (0.8, 0.6), (0.9, 0.9), (0.1, 0.9)]
    world = [(0.0, 10.0), (6.0, 10.0), (6.0, 0.0), (0.0, 0.0)]
    zone = [(0.2, 0.6), (0.8, 0.6), (0.9, 0.9), (0.1, 0.9)]  # 60 m²
    rule = DensityRule(
        DensityRuleConfig(name="square", zone=zone, max_per_m2=0.5, min_seconds=3.0), image, world
    )
    assert rule.area_m2 == pytest.approx(60.0)

    def crowd(n: int, t: float) -> list[Track]:
        return [_track(i, (0.3 + i * 0.01, 0.7, 0.31 + i * 0.01, 0.8), t) for i in range(n)]

    out = []
    for k in range(40):
        t = k * 0.2
        out += rule.update(crowd(30 if t < 2 else 31, t), t, WALL0_S + t)  # 0.50 then 0.52 /m²
    assert len(out) == 1 and out[0].details["persons"] == 31 and out[0].t == pytest.approx(5.0)
    assert out[0].details["per_m2"] == pytest.approx(31 / 60, abs=0.01)


# --- the real pixel pipeline on scenes -----------------------------------------------------------


def _scene(props: list[Prop], *, seed: int = 3, pedestrians: int = 4) -> SyntheticSource:
    return SyntheticSource(
        W, H, FPS, seed=seed, pedestrians=pedestrians, vehicles=2, props=props, realtime=False
    )


def _alerts(
    src: SyntheticSource, cam: CameraAnalyticsConfig, seconds: float
) -> list[tuple[float, str, str]]:
    """Motion-only engine (no model), as a unit without one runs: (time, kind, rule) of each
    alert."""
    engine = AnalyticsEngine(
        camera="cam1",
        cfg=AnalyticsConfig(enabled=True, snapshots=False),
        cam_cfg=cam,
        detector=None,
    )
    out = []
    for i in range(int(seconds * FPS)):
        frame = src.render(i)
        mono = round(i * 1e9 / FPS)
        for draft in engine.process(
            frame.y, frame.u, frame.v, index=i, mono_ns=mono, wall_ns=int(WALL0_S * 1e9) + mono
        ):
            if draft.category == "alert":
                out.append((round(i / FPS, 1), draft.kind, draft.rule))
    return out


FLAME = Prop("flame", (0.6, 0.55, 0.7, 0.72), start_s=5.0)
SMOKE = Prop("smoke", (0.55, 0.3, 0.75, 0.75), start_s=5.0, grow_s=15.0)
DECOYS = {
    "grey van": Prop("grey_car", (0.0, 0.76, 1.0, 0.86), period_s=6.0),
    "headlights": Prop("headlights", (0.0, 0.78, 1.0, 0.82), period_s=3.0),
    "lit sign": Prop("sign", (0.3, 0.10, 0.4, 0.16)),
    "blinking light": Prop("blinker", (0.5, 0.20, 0.56, 0.26), period_s=1.0),
    "fast blinker": Prop("blinker", (0.5, 0.20, 0.56, 0.26), period_s=0.6),
}


@pytest.mark.parametrize("seed", [1, 3])
def test_fire_start_is_raised_within_its_delay(seed: int) -> None:
    cfg = FireRuleConfig(name="street", min_seconds=4.0)
    src = _scene([FLAME, *DECOYS.values()], seed=seed)
    rule = FireRule(cfg)
    raised = []
    for i in range(int(25 * FPS)):
        f = src.render(i)
        t = i / FPS
        raised += [a for a in rule.update(f.y, f.u, f.v, t, WALL0_S + t)]
    assert [a.details["cause"] for a in raised] == ["flame"]
    # the dwell, plus the window that judges flicker (2 s) and the flame's first seconds
    assert FLAME.start_s + cfg.min_seconds <= raised[0].t <= FLAME.start_s + cfg.min_seconds + 3.0
    assert raised[0].details["growth"] >= 1.0


@pytest.mark.parametrize("seed", [1, 3])
def test_smoke_is_raised_within_its_delay(seed: int) -> None:
    cfg = FireRuleConfig(name="street", min_seconds=4.0)
    src = _scene([SMOKE, *DECOYS.values()], seed=seed)
    rule = FireRule(cfg)
    raised = []
    for i in range(int(30 * FPS)):
        f = src.render(i)
        raised += rule.update(f.y, f.u, f.v, i / FPS, WALL0_S + i / FPS)
    assert [a.details["cause"] for a in raised] == ["smoke"]
    # the dwell, plus the 4 s window that judges a haze and the plume's first seconds (it
    # starts as a wisp: a few cells of 8x8 pixels)
    assert SMOKE.start_s + cfg.min_seconds <= raised[0].t <= SMOKE.start_s + cfg.min_seconds + 8.0


@pytest.mark.parametrize("decoy", sorted(DECOYS))
@pytest.mark.parametrize("sensitivity", [0.5, 1.0])
def test_fire_is_never_raised_on_the_decoys(decoy: str, sensitivity: float) -> None:
    rule = FireRule(FireRuleConfig(name="street", min_seconds=2.0, sensitivity=sensitivity))
    src = _scene([DECOYS[decoy]], seed=1)
    for i in range(int(40 * FPS)):
        f = src.render(i)
        assert rule.update(f.y, f.u, f.v, i / FPS, WALL0_S + i / FPS) == [], f"{decoy} at {i / FPS}"


BAG = Prop("left_bag", (0.5, 0.92, 0.54, 0.97), start_s=15.0)
FALL = Prop("fall", (0.5, 0.93, 0.6, 0.97), start_s=15.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_abandoned_object_is_raised_after_its_owner_left(seed: int) -> None:
    cfg = AbandonedObjectRuleConfig(name="pavement", min_seconds=10.0)
    cam = CameraAnalyticsConfig(camera="cam1", abandoned_objects=[cfg])
    got = _alerts(_scene([BAG, DECOYS["lit sign"]], seed=seed, pedestrians=2), cam, 45)
    assert [k for _t, k, _r in got] == ["abandoned_object"]
    # dwell after the owner left, plus the seconds the case needs to be seen as static and the
    # owner to walk out of reach
    assert BAG.start_s + cfg.min_seconds <= got[0][0] <= BAG.start_s + cfg.min_seconds + 8.0


@pytest.mark.parametrize("props", [[FALL], [DECOYS["headlights"], DECOYS["lit sign"]], []])
def test_abandoned_object_is_not_raised_without_one(props: list[Prop]) -> None:
    cam = CameraAnalyticsConfig(
        camera="cam1",
        abandoned_objects=[AbandonedObjectRuleConfig(name="pavement", min_seconds=10.0)],
    )
    assert _alerts(_scene(props, seed=2, pedestrians=2), cam, 45) == []


def test_person_on_the_ground_is_raised_within_its_delay_and_not_for_a_bag() -> None:
    cfg = FallenPersonRuleConfig(name="ground", classes=["person", "object"], min_seconds=5.0)
    cam = CameraAnalyticsConfig(camera="cam1", fallen_persons=[cfg])
    got = _alerts(_scene([FALL], seed=1, pedestrians=2), cam, 35)
    assert [k for _t, k, _r in got] == ["person_on_ground"]
    assert FALL.start_s + cfg.min_seconds <= got[0][0] <= FALL.start_s + cfg.min_seconds + 2.0
    assert _alerts(_scene([BAG], seed=1, pedestrians=2), cam, 35) == []
    assert _alerts(_scene([], seed=2, pedestrians=4), cam, 35) == []


def test_intrusion_on_the_street_follows_the_schedule() -> None:
    crossing = [(0.18, 0.5), (0.3, 0.5), (0.3, 1.0), (0.18, 1.0)]  # the zebra crossing
    armed = IntrusionRuleConfig(name="works", zone=crossing, classes=["object"], min_seconds=1.0)
    resting = armed.model_copy(update={"name": "night", "schedule": ["daily 22:00-06:00"]})
    src = _scene([], seed=3)
    truth = {
        obj.id
        for i in range(int(40 * FPS))
        for obj in src.objects_at(i)
        if obj.bbox[0] < 0.3 * W and obj.bbox[2] > 0.18 * W and obj.bbox[3] > 0.5 * H
    }
    cam = CameraAnalyticsConfig(camera="cam1", intrusions=[armed, resting])
    got = _alerts(src, cam, 40)
    assert got and {(k, r) for _t, k, r in got} == {("intrusion", "works")}  # never at night
    assert len(got) <= 2 * len(truth) + 4  # one per entry (a track split makes a second one)


def test_excessive_density_with_real_person_detections() -> None:
    """Faces (the real MediaPipe detector on LiteRT, photographs composited into the street:
    faces are persons to the rules) walk slowly through a calibrated zone, six close together:
    the density alert comes within its dwell; two of them alone raise nothing."""
    from edge.analytics.litert import LiteRTDetector, sha256_file
    from edge.capture.synthetic import Sprite
    from edge.config import DetectorConfig, DetectorLayout

    from .test_analytics_e2e import face_model, faces

    model = face_model()
    detector_cfg = DetectorConfig(
        model_path=model,
        model_sha256=sha256_file(model),
        layout=DetectorLayout.MEDIAPIPE,
        labels=["face"],
        score_threshold=0.5,
    )
    zone = [(0.1, 0.1), (0.9, 0.1), (0.9, 0.95), (0.1, 0.95)]
    ground = GroundCalibration(image=zone, world=[(0, 3), (4, 3), (4, 0), (0, 0)])  # 12 m²
    rule = DensityRuleConfig(name="square", zone=zone, max_per_m2=0.3, min_seconds=3.0)
    cam = CameraAnalyticsConfig(camera="cam1", densities=[rule], ground=ground)
    a, b = faces()

    def run(count: int) -> list[float]:
        # a 3x2 group entering from the left at 30 px/s, fully in the zone from about 4 s
        sprites = [
            Sprite((a, b)[k % 2], (-150.0 + 75 * (k % 3), 40.0 + 90 * (k // 3)), (30.0, 0.0))
            for k in range(count)
        ]
        src = SyntheticSource(
            W, H, FPS, seed=1, pedestrians=0, vehicles=0, sprites=sprites, realtime=False
        )
        engine = AnalyticsEngine(
            camera="cam1",
            cfg=AnalyticsConfig(enabled=True, snapshots=False, detector=detector_cfg),
            cam_cfg=cam,
            detector=LiteRTDetector.from_config(detector_cfg),
        )
        out = []
        for i in range(int(14 * FPS)):
            f = src.render(i)
            mono = round(i * 1e9 / FPS)
            for d in engine.process(
                f.y, f.u, f.v, index=i, mono_ns=mono, wall_ns=int(WALL0_S * 1e9) + mono
            ):
                if d.category == "alert":
                    assert d.kind == "excessive_density" and d.details["persons"] >= 4
                    assert d.details["area_m2"] == pytest.approx(12.0, abs=0.1)
                    out.append(i / FPS)
        return out

    got = run(6)
    # all six in the zone (ground truth: their ground points) from 6 s; the dwell is 3 s, plus
    # the detector's pace: at this size it finds each face in about a third of the frames, and
    # the tracker confirms a face on its second detection
    assert len(got) == 1 and 6.0 + rule.min_seconds <= got[0] <= 6.0 + rule.min_seconds + 4.0
    assert run(2) == []
