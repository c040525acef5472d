"""End to end: what is behind a privacy mask never reaches the recording.

A bright object moves inside the masked area of the synthetic scene. The real recording path
(capture → mask → H.264 → CMAF) records it; the `ffmpeg` CLI decodes the segments; inside the
mask (less a small codec margin at its edge) every decoded frame must be the same. The same
check on a recording *without* the mask must fail, which proves the check can see a leak.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.capture import open_source
from edge.config import CameraConfig, EncoderConfig, PrivacyMaskConfig
from edge.privacy.masker import PrivacyMasker
from edge.video.encoder import SegmentEncoder

from .conftest import tool

W, H, FPS, FRAMES = 320, 240, 10, 40
MASK = PrivacyMaskConfig(
    name="flat", points=[(0.55, 0.12), (0.92, 0.10), (0.94, 0.55), (0.57, 0.58)]
)
CODEC_MARGIN = 4  # pixels: deblocking and prediction may touch the mask's edge


def record(tmp: Path, *, masked: bool) -> Path:
    cam = CameraConfig(
        source="synthetic",
        width=W,
        height=H,
        fps=FPS,
        privacy_masks=[MASK],
        encoder=EncoderConfig(segment_seconds=1.0, preset="ultrafast"),
    )
    source = open_source(cam, realtime=False)
    masker = PrivacyMasker([MASK] if masked else [], W, H)
    encoder = SegmentEncoder("cam1", W, H, FPS, cam.encoder)
    media = b""
    init = b""
    source.open()
    try:
        for _ in range(FRAMES):
            frame = source.read()
            assert frame is not None
            masker.apply(frame)
            for seg in encoder.encode(frame):
                init, media = seg.init, media + seg.media
        for seg in encoder.flush():
            init, media = seg.init, media + seg.media
    finally:
        source.close()
        encoder.close()
    out = tmp / ("masked.mp4" if masked else "unmasked.mp4")
    out.write_bytes(init + media)
    return out


def decode_luma(path: Path) -> npt.NDArray[np.uint8]:
    raw = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, H, W)
    assert len(frames) == FRAMES
    return frames


def erode(mask: npt.NDArray[np.bool_], steps: int) -> npt.NDArray[np.bool_]:
    """Binary erosion with a cross, outside the frame counting as unmasked."""
    for _ in range(steps):
        padded = np.pad(mask, 1, constant_values=False)
        mask = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
    return mask


def inner_mask() -> npt.NDArray[np.bool_]:
    mask = PrivacyMasker([MASK], W, H).luma_mask()
    inner = erode(mask, CODEC_MARGIN)
    assert inner.sum() > 0.5 * mask.sum()
    return inner


def temporal_spread(frames: npt.NDArray[np.uint8], region: npt.NDArray[np.bool_]) -> int:
    inside = frames[:, region].astype(np.int16)
    return int((inside.max(axis=0) - inside.min(axis=0)).max())


def test_moving_object_behind_mask_never_reaches_the_recording(tmp_path: Path) -> None:
    region = inner_mask()
    masked = decode_luma(record(tmp_path, masked=True))
    assert temporal_spread(masked, region) <= 2, "pixels inside the mask changed over time"


def test_leak_check_sees_the_object_without_mask(tmp_path: Path) -> None:
    region = inner_mask()
    unmasked = decode_luma(record(tmp_path, masked=False))
    assert temporal_spread(unmasked, region) > 50, "the scene's intruder should be visible"
