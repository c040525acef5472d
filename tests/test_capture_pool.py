"""Capture into the frame pool: I420 at the configured size is copied once from the decoder,
other pictures are converted once, and privacy holds on both paths."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from edge.capture.pyav import PyAVSource
from edge.config import MaskFill
from edge.errors import FrameBudgetError
from edge.framepool import FramePool
from edge.frames import Frame, i420_size
from edge.privacy.masker import PrivacyMasker

from .test_privacy_conversion import FPS, MASKS, outside_differences, planes_pair, write_raw


def _pooled_source(path: Path, width: int, height: int, pool: FramePool) -> PyAVSource:
    source = PyAVSource(f"file:{path}", width, height, FPS, realtime=False, privacy_masks=MASKS)
    source.pool = pool
    return source


def _read_all(source: PyAVSource) -> list[Frame]:
    source.open()
    frames = []
    try:
        while (frame := source.read()) is not None:
            frames.append(frame)
    finally:
        source.close()
    return frames


def test_i420_at_the_configured_size_is_one_copy_and_no_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder's picture goes plane by plane into a pooled buffer: FFmpeg's scaler,
    ``to_ndarray`` and the native masker's copy are never called."""
    planes, _ = planes_pair("yuv420p", 128, 96, seed=3)
    path = tmp_path / "camera.nut"
    write_raw(path, "yuv420p", 128, 96, planes, full_range=False)

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a second copy or a conversion on the I420 path")

    monkeypatch.setattr(av.VideoFrame, "reformat", forbidden)
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", forbidden)
    monkeypatch.setattr("edge.privacy.native.NativeMasker.masked_copy", forbidden)
    pool = FramePool(4 * i420_size(128, 96))
    source = _pooled_source(path, 128, 96, pool)
    source.open()
    try:
        frame = source.read()
        assert frame is not None and pool.owns(frame)
        assert np.array_equal(frame.y, planes[0])
        assert np.array_equal(frame.u, planes[1]) and np.array_equal(frame.v, planes[2])
    finally:
        source.close()


@pytest.mark.parametrize(
    ("fmt", "size"),
    [("yuv420p", (128, 96)), ("yuv422p", (192, 144)), ("nv12", (128, 96))],
    ids=["zero-copy", "converted-and-scaled", "converted"],
)
def test_pooled_frames_are_masked_on_every_path(
    tmp_path: Path, fmt: str, size: tuple[int, int]
) -> None:
    """Two sources differing only inside the masks give the same pooled frames outside them
    once masked, on the one-copy path as on the conversion paths."""
    first, second = planes_pair(fmt, *size, seed=11)
    frames = []
    pool = FramePool(8 * i420_size(128, 96))
    for name, planes in (("a", first), ("b", second)):
        path = tmp_path / f"{name}.nut"
        write_raw(path, fmt, *size, planes, full_range=False)
        source = _pooled_source(path, 128, 96, pool)
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
        assert frame is not None and pool.owns(frame)
        PrivacyMasker(MASKS, 128, 96).apply(frame)
        frames.append(frame)
    assert outside_differences(*frames) == 0
    solid = PrivacyMasker([m for m in MASKS if m.fill == MaskFill.SOLID], 128, 96).luma_mask()
    assert np.array_equal(frames[0].y[solid], frames[1].y[solid])
    assert not np.array_equal(first[0], second[0])  # the inputs did differ


def test_a_slow_file_repeats_its_picture_from_the_pool(tmp_path: Path) -> None:
    """A 5 fps file read at 15 fps: each picture is shown three times, the kept copy comes from
    the pool, and closing the source gives every buffer back."""
    planes, _ = planes_pair("yuv420p", 128, 96, seed=5)
    path = tmp_path / "slow.nut"
    write_raw(path, "yuv420p", 128, 96, planes, full_range=False)
    plain = PyAVSource(f"file:{path}", 128, 96, 15, realtime=False)
    expected = _read_all(plain)
    pool = FramePool(8 * i420_size(128, 96))
    pooled = PyAVSource(f"file:{path}", 128, 96, 15, realtime=False)
    pooled.pool = pool
    pooled.open()
    got = []
    while (frame := pooled.read()) is not None:
        got.append(frame.copy())
        pool.release(frame)
    pooled.close()
    assert len(got) == len(expected) >= 5
    assert all(np.array_equal(a.data, b.data) for a, b in zip(got, expected, strict=True))
    assert pool.stats().in_use == 0


def test_a_spent_budget_skips_the_picture_without_converting_it(tmp_path: Path) -> None:
    first, _ = planes_pair("rgb24", 192, 144, seed=9)
    path = tmp_path / "rgb.nut"
    write_raw(path, "rgb24", 192, 144, first, full_range=False)
    pool = FramePool(i420_size(128, 96))
    held = pool.acquire(128, 96)
    assert held is not None
    source = _pooled_source(path, 128, 96, pool)
    source.open()
    try:
        with pytest.raises(FrameBudgetError) as caught:
            source.read()
        assert caught.value.index == 0
        assert pool.stats().refused == 1 and pool.stats().allocated == i420_size(128, 96)
        pool.release(held)
        frame = source.read()
        assert frame is not None and frame.index == 1  # the refused slot has passed
    finally:
        source.close()
