"""The frame memory budget: the pool's accounting, and a 4K camera held within it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.config import CameraConfig, EdgeConfig, EncoderConfig, PrivacyMaskConfig
from edge.errors import ConfigError, FrameBudgetError
from edge.framepool import SPARE_BUFFERS, FramePool, queue_frames
from edge.frames import i420_size
from edge.video.base import MediaSegment, SegmentSink

K8 = (7680, 4320)
K4 = (3840, 2160)


def test_a_spent_budget_allocates_nothing_and_counts_the_refusal() -> None:
    frame_bytes = i420_size(*K8)
    pool = FramePool(3 * frame_bytes + frame_bytes // 2)  # room for three 8K frames, not four
    frames = [pool.acquire(*K8, index=i) for i in range(3)]
    assert all(f is not None for f in frames)
    before = pool.stats()
    assert pool.acquire(*K8, index=3) is None
    after = pool.stats()
    assert after.allocated == before.allocated == 3 * frame_bytes
    assert after.buffers == 3 and after.refused == 1
    assert after.peak_allocated <= pool.budget


def test_a_released_buffer_is_reused_not_reallocated() -> None:
    pool = FramePool(4 * i420_size(*K4))
    first = pool.acquire(*K4)
    assert first is not None
    data = first.data.base if first.data.base is not None else first.data
    pool.release(first)
    for i in range(100):  # a steady stream through one buffer: no growth at all
        frame = pool.acquire(*K4, index=i)
        assert frame is not None
        assert np.shares_memory(frame.data, data)
        pool.release(frame)
    stats = pool.stats()
    assert stats.buffers == 1 and stats.allocated == i420_size(*K4) and stats.in_use == 0


def test_a_burst_leaves_no_lasting_growth() -> None:
    """The encoder late for a moment fills the queue; once it catches up, the buffers the
    burst needed go back to the system, all but a few spares."""
    size = i420_size(1920, 1080)
    pool = FramePool(20 * size)
    burst = [pool.acquire(1920, 1080, index=i) for i in range(12)]
    assert pool.stats().allocated == 12 * size
    for frame in burst:
        pool.release(frame)
    stats = pool.stats()
    assert stats.allocated == SPARE_BUFFERS * size and stats.buffers == SPARE_BUFFERS
    assert stats.peak_allocated == 12 * size  # the burst stays visible in the accounting


def test_the_allocator_is_told_to_give_freed_memory_back() -> None:
    from edge.app.process import bound_malloc

    assert bound_malloc()  # glibc: fewer arenas, large blocks mapped and unmapped


def test_a_held_buffer_is_never_handed_out_again() -> None:
    """The preview's frame stays its own until released: the next picture, unmasked while it
    is written, must never land in it."""
    pool = FramePool(2 * i420_size(640, 480))
    kept = pool.acquire(640, 480)
    assert kept is not None
    pool.retain(kept)  # the preview slot
    pool.release(kept)  # the recording thread is done with it
    other = pool.acquire(640, 480)
    assert other is not None and not np.shares_memory(other.data, kept.data)
    assert pool.acquire(640, 480) is None  # both buffers held, budget spent
    pool.release(kept)
    again = pool.acquire(640, 480)
    assert again is not None and np.shares_memory(again.data, kept.data)


def test_releasing_twice_or_a_foreign_frame_changes_nothing() -> None:
    pool = FramePool(2 * i420_size(64, 64))
    frame = pool.acquire(64, 64)
    assert frame is not None
    pool.release(frame)
    pool.release(frame)  # a second release must not free a buffer someone else now holds
    held = pool.acquire(64, 64)
    assert held is not None
    pool.release(frame)
    assert pool.stats().in_use == i420_size(64, 64)
    pool.release(frame.copy())  # never from the pool
    assert pool.stats().in_use == i420_size(64, 64)


def test_reservations_count_against_the_budget() -> None:
    pool = FramePool(10 * i420_size(640, 480))
    pool.reserve(8 * i420_size(640, 480), "analytics")
    assert pool.acquire(640, 480) is not None
    assert pool.acquire(640, 480) is not None
    assert pool.acquire(640, 480) is None
    with pytest.raises(ConfigError, match="frame_budget_mib"):
        pool.reserve(i420_size(640, 480), "camera x's analytics shared memory")


def test_free_buffers_of_another_size_make_room() -> None:
    pool = FramePool(i420_size(*K4))
    small = pool.acquire(1920, 1080)
    assert small is not None
    pool.release(small)  # the camera was reconfigured to 4K: its old buffer is in the way
    assert pool.acquire(*K4) is not None
    assert pool.stats().allocated == i420_size(*K4)


def test_a_lowered_budget_gives_buffers_back_as_they_free() -> None:
    pool = FramePool(4 * i420_size(640, 480))
    frames = [pool.acquire(640, 480) for _ in range(4)]
    pool.set_budget(2 * i420_size(640, 480))
    for frame in frames:
        pool.release(frame)
    assert pool.stats().allocated <= 2 * i420_size(640, 480)


def test_queue_length_adapts_to_frame_size() -> None:
    budget = 384 * 1024 * 1024
    assert queue_frames(budget, i420_size(1920, 1080), 25, 2.0) == 50  # 2 s fit
    at_4k = queue_frames(budget, i420_size(*K4), 25, 2.0)
    assert 2 <= at_4k < 50 and (at_4k + 3) * i420_size(*K4) <= budget
    assert queue_frames(budget, i420_size(*K8), 25, 2.0) == 5
    assert queue_frames(budget // 8, i420_size(*K8), 25, 2.0) == 2  # never below two


def test_the_configuration_refuses_a_budget_its_cameras_cannot_fit_in() -> None:
    eight_k = {"source": "synthetic", "width": K8[0], "height": K8[1]}
    EdgeConfig.model_validate({"cameras": [{"id": "a", **eight_k}]})  # one 8K fits the default
    with pytest.raises(ValueError, match=r"memory.frame_budget_mib: 384 MiB .* at least 475 MiB"):
        EdgeConfig.model_validate({"cameras": [{"id": "a", **eight_k}, {"id": "b", **eight_k}]})
    with pytest.raises(ValueError, match="greater than or equal to 32"):
        EdgeConfig.model_validate({"memory": {"frame_budget_mib": 8}})


def test_a_source_with_a_spent_budget_refuses_without_writing() -> None:
    from edge.capture.synthetic import SyntheticSource

    source = SyntheticSource(320, 240, 25.0, realtime=False)
    source.pool = FramePool(i420_size(320, 240))
    source.open()
    held = source.read()
    assert held is not None
    with pytest.raises(FrameBudgetError) as caught:
        source.read()
    assert caught.value.index == 1
    source.pool.release(held)
    again = source.read()
    assert again is not None and again.index == 2  # the refused frame is gone, as from a camera


class _CountingSink(SegmentSink):
    def __init__(self) -> None:
        self.frames = 0

    def write(self, segment: MediaSegment) -> None:
        self.frames += segment.frame_count


def test_a_4k_camera_stays_within_its_budget_and_counts_its_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 4K25 scene rendered as fast as it can be read, against an encoder that cannot keep
    up on this machine: the pool never grows past the budget, every refused frame is counted
    as a drop (not as a camera gap), and every reference comes back."""
    from edge.app import pipeline as pipeline_mod
    from edge.capture.synthetic import SyntheticSource

    width, height = K4
    frame_bytes = i420_size(width, height)
    pool = FramePool(7 * frame_bytes)
    cam = CameraConfig(
        source="synthetic",
        width=width,
        height=height,
        fps=25,
        encoder=EncoderConfig(preset="ultrafast", bitrate_kbps=4000),
        privacy_masks=[
            PrivacyMaskConfig(name="windows", points=[(0.1, 0.1), (0.5, 0.1), (0.5, 0.3)])
        ],
    )
    monkeypatch.setattr(
        pipeline_mod,
        "open_source",
        lambda c: SyntheticSource(c.width, c.height, c.fps, realtime=False, pedestrians=2),
    )
    sink = _CountingSink()
    pipe = pipeline_mod.CameraPipeline(cam, sink, pool=pool)
    assert pipe.queue_frames == 4  # 2 s would be 50 frames: the budget holds 7
    # Another holder (another camera, analytics shared memory) takes two frames' worth: the
    # queue can no longer fill, the budget refuses first.
    pool.reserve(2 * frame_bytes, "another holder")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(pool.stats().allocated)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    pipe.start()
    deadline = time.monotonic() + 60
    while pipe.frames_encoded < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.stop()
    done.set()
    sampler.join()
    snap = pipe.snapshot()
    stats = pool.stats()
    assert snap["frames_encoded"] >= 12
    assert max(samples) <= pool.budget - stats.reserved
    assert stats.peak_allocated <= pool.budget - stats.reserved
    assert stats.buffers <= 5
    assert stats.refused > 0 and snap["frames_dropped"] >= stats.refused
    assert snap["capture"]["frames_lost"] == 0  # refused frames are drops, not camera gaps
    # Every frame the scene gave is recorded or counted as dropped.
    assert snap["frames_in"] == snap["frames_encoded"] + snap["frames_dropped"]
    assert sink.frames == snap["frames_encoded"]
    assert stats.in_use == 0  # the capture, queue and preview references all came back
