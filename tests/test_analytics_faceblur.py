"""Metering mode: faces found by a real detector are pixelated in place (detection only)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge.analytics.engine import i420_to_rgb
from edge.analytics.faceblur import FaceBlurrer
from edge.capture.synthetic import Sprite, SyntheticSource
from edge.config import parse
from edge.errors import ConfigError

from .test_analytics_e2e import face_model, skimage_data


def test_faces_are_pixelated_and_no_longer_detectable() -> None:
    face = np.asarray(Image.fromarray(skimage_data.astronaut()[20:240, 140:340]).resize((130, 142)))
    src = SyntheticSource(
        1280,
        720,
        25,
        seed=2,
        pedestrians=2,
        vehicles=1,
        realtime=False,
        sprites=[Sprite(face, (500, 300), (40, 0))],
    )
    src.open()
    blurrer = FaceBlurrer.with_model(face_model(), threads=1)
    for _ in range(3):
        frame = src.read()
        assert frame is not None
        before = frame.copy()
        hidden = blurrer.apply(frame)
        assert hidden == 1
        changed = np.argwhere(frame.y != before.y)
        (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
        # Only around the face: the sprite's box, widened by the margin, nothing else.
        sprite = next(o for o in src.objects_at(frame.index) if o.kind == "sprite")
        sx0, sy0, sx1, sy1 = sprite.bbox
        assert sx0 - 80 <= x0 and x1 <= sx1 + 80 and sy0 - 80 <= y0 and y1 <= sy1 + 80
        assert np.array_equal(frame.y[: max(0, y0 - 1)], before.y[: max(0, y0 - 1)])
        # The same detector finds the face before blurring and nothing after.
        assert len(blurrer.detector.detect(i420_to_rgb(before.y, before.u, before.v))) == 1
        assert blurrer.detector.detect(i420_to_rgb(frame.y, frame.u, frame.v)) == []
    src.close()


def test_face_blurring_is_off_unless_a_camera_asks_and_needs_a_model() -> None:
    assert FaceBlurrer.for_camera(parse(""), "cam1") is None
    metering = '[[analytics.cameras]]\ncamera = "cam1"\nface_blur = true\n'
    # The schema refuses face_blur without a model when the file is read (not at start-up).
    with pytest.raises(ConfigError, match="face_model_path"):
        parse(metering)
    model = f'[analytics]\nface_model_path = "{face_model()}"\n'
    blurrer = FaceBlurrer.for_camera(parse(model + metering), "cam1")
    assert blurrer is not None and blurrer.frames == 0
