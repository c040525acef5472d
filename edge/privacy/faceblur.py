"""Face blurring for cameras run as pure Smart City sensors ("metering mode").

Face *detection* only, never recognition: a detector finds face-shaped regions and they are
pixelated in the frame, in place, before the frame is recorded or analysed. Nothing about a
face is kept, compared or sent. Off by default (``analytics.cameras[].face_blur``).

Runs in the capture thread right after the privacy masker, so it must stay cheap: detection
runs on a downscaled copy every ``detect_every`` frames, and the boxes found, widened by
``margin`` to cover movement until the next detection, are pixelated on every frame.
Detection is not perfect (small, turned or partly hidden faces can be missed): this lowers
what a recording shows, it does not replace privacy masks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.analytics.base import Box, Detector
from edge.analytics.engine import i420_to_rgb
from edge.analytics.litert import LiteRTDetector
from edge.config import DetectorLayout, EdgeConfig
from edge.errors import AnalyticsError
from edge.frames import Frame, Plane

log = logging.getLogger(__name__)


def pixelate(plane: Plane, x0: int, y0: int, x1: int, y1: int, block: int) -> None:
    """Replace each ``block``-sized tile of the region by its mean, in place."""
    for ty in range(y0, y1, block):
        for tx in range(x0, x1, block):
            tile = plane[ty : min(ty + block, y1), tx : min(tx + block, x1)]
            if tile.size:
                tile[...] = int(tile.mean())


class FaceBlurrer:
    """Detects faces and pixelates them; one per camera, used by the capture thread only."""

    def __init__(
        self,
        detector: Detector,
        *,
        detect_every: int = 2,
        analysis_width: int = 640,
        margin: float = 0.3,
        block: int = 16,
    ) -> None:
        self.detector = detector
        self.detect_every = detect_every
        self.analysis_width = analysis_width
        self.margin = margin
        self.block = block
        self.boxes: list[Box] = []
        self.frames = 0
        self.faces_blurred = 0

    @classmethod
    def with_model(
        cls, model_path: Path, *, sha256: str | None = None, threads: int = 1
    ) -> FaceBlurrer:
        detector = LiteRTDetector(
            model_path,
            layout=DetectorLayout.MEDIAPIPE,
            labels=["face"],
            threads=threads,
            score_threshold=0.5,
            nms_iou=0.3,
            expected_sha256=sha256,
        )
        return cls(detector)

    @classmethod
    def for_camera(cls, cfg: EdgeConfig, camera_id: str) -> FaceBlurrer | None:
        """The blurrer of a camera in metering mode, None when face blurring is off for it."""
        if not cfg.analytics.for_camera(camera_id).face_blur:
            return None
        if cfg.analytics.face_model_path is None:
            raise AnalyticsError(
                f"camera {camera_id}: face_blur needs analytics.face_model_path (a face detector)"
            )
        return cls.with_model(cfg.analytics.face_model_path, sha256=cfg.analytics.face_model_sha256)

    def apply(self, frame: Frame) -> int:
        """Pixelate the faces of ``frame`` in place; returns how many regions were hidden."""
        if self.frames % self.detect_every == 0:
            step = max(1, -(-frame.width // self.analysis_width))
            y = frame.y[::step, ::step]
            h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
            rgb = i420_to_rgb(
                y[:h, :w],
                frame.u[::step, ::step][: h // 2, : w // 2],
                frame.v[::step, ::step][: h // 2, : w // 2],
            )
            self.boxes = [d.box for d in self.detector.detect(rgb)]
        self.frames += 1
        for x1, y1, x2, y2 in self.boxes:
            mx, my = (x2 - x1) * self.margin, (y2 - y1) * self.margin
            # Even pixel bounds so luma and chroma cover the same area.
            px0 = max(0, int((x1 - mx) * frame.width)) // 2 * 2
            py0 = max(0, int((y1 - my) * frame.height)) // 2 * 2
            px1 = min(frame.width, -(-int((x2 + mx) * frame.width) // 2) * 2)
            py1 = min(frame.height, -(-int((y2 + my) * frame.height) // 2) * 2)
            if px1 <= px0 or py1 <= py0:
                continue
            # About four tiles across a face whatever its size: finer tiles leave a face that a
            # detector (or a person) still reads as one.
            block = max(self.block, (px1 - px0) // 4 // 2 * 2)
            pixelate(frame.y, px0, py0, px1, py1, block)
            half = block // 2
            pixelate(frame.u, px0 // 2, py0 // 2, px1 // 2, py1 // 2, half)
            pixelate(frame.v, px0 // 2, py0 // 2, px1 // 2, py1 // 2, half)
        self.faces_blurred += len(self.boxes)
        return len(self.boxes)
