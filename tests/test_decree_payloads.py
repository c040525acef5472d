"""Decree 2023-828 in the events themselves: no rule's event can carry identity, biometric or
face output (edged refuses any draft that tries, whatever the analytics process or a model it
runs says), and every alert carries, signed, the digest of the model and the version of the
analytics configuration that produced it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.analytics import channel, decree
from edge.analytics.bridge import AnalyticsBridge
from edge.analytics.engine import AnalyticsEngine
from edge.analytics.litert import sha256_file
from edge.capture.props import Prop
from edge.capture.synthetic import SyntheticSource
from edge.config import (
    AbandonedObjectRuleConfig,
    AnalyticsConfig,
    CameraAnalyticsConfig,
    CameraConfig,
    EdgeConfig,
    FallenPersonRuleConfig,
    FireRuleConfig,
    IntrusionRuleConfig,
    LineRuleConfig,
    TamperConfig,
)
from edge.errors import ProtocolError
from edge.events import EventDraft, SignedEvent, verify_wire
from edge.identity.unitkeys import keys_dir_of, load_signing_public_key

from .test_analytics_e2e import face_model, motion_only_config, scene, wait_for

W, H, FPS = 480, 270, 5.0


def _every_rule() -> CameraAnalyticsConfig:
    return CameraAnalyticsConfig(
        camera="cam1",
        lines=[LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=10)],
        intrusions=[IntrusionRuleConfig(name="works", classes=["object"], min_seconds=1.0)],
        abandoned_objects=[AbandonedObjectRuleConfig(name="pavement", min_seconds=10.0)],
        fallen_persons=[
            FallenPersonRuleConfig(name="ground", classes=["person", "object"], min_seconds=5.0)
        ],
        fires=[FireRuleConfig(name="bins", min_seconds=4.0)],
    )


def test_no_allowed_field_names_identity_biometrics_or_faces() -> None:
    assert not [key for key in decree.DETAIL_FIELDS if decree.FORBIDDEN.search(key)]


def test_every_rule_s_events_pass_the_decree_check_unchanged() -> None:
    """The drafts the real engine makes on a street with a fire, a case left behind and a fall
    go through edged's check (the channel) unchanged: the check refuses nothing legitimate."""
    src = SyntheticSource(
        W,
        H,
        FPS,
        seed=1,
        pedestrians=2,
        vehicles=2,
        props=[
            Prop("flame", (0.6, 0.55, 0.7, 0.72), start_s=5.0),
            Prop("left_bag", (0.5, 0.92, 0.54, 0.97), start_s=15.0),
            Prop("fall", (0.2, 0.93, 0.3, 0.97), start_s=15.0),
        ],
        realtime=False,
    )
    engine = AnalyticsEngine(
        camera="cam1",
        cfg=AnalyticsConfig(enabled=True, snapshots=True),
        cam_cfg=_every_rule(),
        detector=None,
    )
    drafts: list[EventDraft] = []
    for i in range(int(45 * FPS)):
        f = src.render(i)
        mono = round(i * 1e9 / FPS)
        drafts += engine.process(f.y, f.u, f.v, index=i, mono_ns=mono, wall_ns=10**18 + mono)
    kinds = {d.kind for d in drafts}
    assert {"fire", "abandoned_object", "person_on_ground", "intrusion", "line_crossing"} <= kinds
    for draft in drafts:
        assert channel.decode(channel.encode(draft)[4:], labels={"object"}) == draft


FORGED: dict[str, tuple[dict[str, Any], str]] = {
    "a face embedding": ({"persons": 6, "face_embedding": [0.1] * 128}, "decree"),
    "landmarks": ({"track": 3, "landmarks": [[0.1, 0.2]] * 6}, "decree"),
    "an identity": ({"identity": "Jean Dupont"}, "decree"),
    "a name": ({"name": "Jean Dupont"}, "decree"),
    "a plate": ({"track": 4, "plate": "AB-123-CD"}, "decree"),
    "a re-identification key": ({"reid": "a81f"}, "decree"),
    "a gender": ({"gender": "f"}, "decree"),
    "a face crop": ({"crop": "/9j/4AAQSkZJRgABAQ"}, "decree"),
    "an unknown field": ({"persons": 6, "notes": "tall, red coat"}, "not a field"),
    "a nested object": ({"persons": {"p1": {"x": 1}}}, "not a int"),
    "a name as a label": ({"track": 3, "label": "jean_dupont"}, "not a label"),
    "a name in the counts": ({"counts": {"jean/forward": 1}}, "not a counts"),
    "a picture in a word": ({"cause": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}, "not a word"),
    "text in a box": ({"box": ["Jean", 0.1, 0.2, 0.3]}, "not a box"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_edged_refuses_drafts_that_would_identify_anyone(case: str) -> None:
    details, reason = FORGED[case]
    category = "count" if "counts" in details else "alert"
    draft = EventDraft(
        category=category,
        kind="line_crossing" if category == "count" else "intrusion",
        rule="works",
        wall_ns=10**18,
        frame_index=5,
        details=details,
        interval_start_ns=10**18 - 10**9 if category == "count" else None,
    )
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        channel.decode(channel.encode(draft)[4:], labels={"object", "person", "car"})


def test_the_provenance_identifies_model_and_configuration() -> None:
    cfg = motion_only_config(Path("/nonexistent"))
    base = decree.provenance(cfg, "cam1")
    assert base["model_sha256"] == "motion-only"
    assert re.fullmatch(r"[0-9a-f]{64}", base["config_sha256"])
    assert decree.provenance(cfg, "cam1") == base  # stable
    cams = [_every_rule()]
    changed = cfg.model_copy(
        update={"analytics": cfg.analytics.model_copy(update={"cameras": cams})}
    )
    assert decree.config_version(changed, "cam1") != base["config_sha256"]  # a rule changed
    mqtt = cfg.analytics.mqtt.model_copy(update={"host": "broker.example"})
    moved = cfg.model_copy(update={"analytics": cfg.analytics.model_copy(update={"mqtt": mqtt})})
    assert decree.config_version(moved, "cam1") == base["config_sha256"]  # not what decides
    with_model = cfg.model_copy(
        update={
            "analytics": cfg.analytics.model_copy(
                update={
                    "detector": cfg.analytics.detector.model_copy(
                        update={"model_path": face_model(), "model_sha256": None}
                    )
                }
            )
        }
    )
    assert decree.model_digest(with_model) == sha256_file(face_model())


def _with_camera(cfg: EdgeConfig, cam: CameraAnalyticsConfig) -> EdgeConfig:
    return cfg.model_copy(update={"analytics": cfg.analytics.model_copy(update={"cameras": [cam]})})


def _run_analytics(
    cfg: EdgeConfig, done: Callable[[list[SignedEvent]], bool], *, quiet_after: bool = False
) -> list[SignedEvent]:
    """Feed the street scene to a real analytics process of cam1 until ``done`` holds of the
    events it sent (``quiet_after``: then stop feeding and wait for ``done`` again, so that a
    signal loss can be raised); its signed events."""
    events: list[SignedEvent] = []
    cam: CameraConfig = cfg.cameras[0]
    bridge = AnalyticsBridge(cfg, cam, listeners=[events.append], mqtt=False)
    bridge.start()
    src = scene()
    src.open()
    try:
        assert wait_for(lambda: bridge.stats()["state"] == "running")
        deadline = time.monotonic() + 20
        while not (quiet_after or done(list(events))) and time.monotonic() < deadline:
            frame = src.read()
            assert frame is not None
            frame.mono_ns = time.monotonic_ns()
            bridge.offer(frame)
            time.sleep(1 / 25)
        if quiet_after:  # frames for a while, then none
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                frame = src.read()
                assert frame is not None
                frame.mono_ns = time.monotonic_ns()
                bridge.offer(frame)
                time.sleep(1 / 25)
        assert wait_for(lambda: done(list(events)), 10)
    finally:
        src.close()
        bridge.stop()
    return events


def _counts(events: list[SignedEvent]) -> list[SignedEvent]:
    return [e for e in events if e.body["category"] == "count"]


def test_alerts_through_the_real_analytics_process_carry_their_provenance(
    data_dir: Path,
) -> None:
    tamper = TamperConfig(signal_lost_seconds=1.0, learn_seconds=0.5)
    kerb = LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=1.0)
    cfg = _with_camera(
        motion_only_config(data_dir),
        CameraAnalyticsConfig(camera="cam1", tamper=tamper, lines=[kerb]),
    )
    events = _run_analytics(
        cfg,
        lambda evs: bool(_counts(evs)) and any(e.kind == "signal_lost" for e in evs),
        quiet_after=True,
    )
    public = load_signing_public_key(keys_dir_of(data_dir))
    expected = decree.provenance(cfg, "cam1")
    assert expected["model_sha256"] == "motion-only"
    alert = next(e for e in events if e.kind == "signal_lost")
    body = verify_wire(alert.wire(), public)  # signed with the rest of the body
    assert body["provenance"] == expected
    # counts too: the same provenance, signed with the count and its FIWARE entities
    for count in _counts(events):
        body = verify_wire(count.wire(), public)
        assert body["provenance"] == expected
        assert "fiware" in body


def test_counts_of_a_changed_configuration_carry_its_version(data_dir: Path) -> None:
    """A line set otherwise (its hysteresis) is another configuration: the counts made after
    the change say so, and the model is the same."""
    versions = []
    for hysteresis in (0.01, 0.03):
        kerb = LineRuleConfig(
            name="kerb",
            points=((0.5, 0.0), (0.5, 1.0)),
            interval_seconds=1.0,
            hysteresis=hysteresis,
        )
        cfg = _with_camera(
            motion_only_config(data_dir), CameraAnalyticsConfig(camera="cam1", lines=[kerb])
        )
        counts = _counts(_run_analytics(cfg, lambda evs: bool(_counts(evs))))
        public = load_signing_public_key(keys_dir_of(data_dir))  # made at the first start
        bodies = [verify_wire(c.wire(), public) for c in counts]
        assert {b["provenance"]["config_sha256"] for b in bodies} == {
            decree.config_version(cfg, "cam1")
        }
        assert {b["provenance"]["model_sha256"] for b in bodies} == {"motion-only"}
        versions.append(bodies[0]["provenance"]["config_sha256"])
    assert versions[0] != versions[1]
