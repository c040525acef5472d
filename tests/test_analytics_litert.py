"""The LiteRT detector with the SSD and YOLOv8 layouts, through the real interpreter.

The models (see :mod:`tests.tflite_models`) reshape their input image into a detector's raw
outputs, so each test paints the outputs it wants into an image: what comes back has been
through our input preparation, LiteRT, dequantisation and our decoders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.analytics.litert import LiteRTDetector, sha256_file
from edge.config import DetectorLayout

from .tflite_models import ssd_model, yolo_model


def as_image(values: np.ndarray, side: int) -> np.ndarray:
    """Values in 0..1 (or raw uint8 values) as the RGB image the model will see."""
    return np.asarray(np.clip(np.rint(values), 0, 255), dtype=np.uint8).reshape(side, side, 3)


def test_yolov8_layout_through_the_interpreter(tmp_path: Path) -> None:
    model = yolo_model(tmp_path / "yolo.tflite", side=8, attributes=6, candidates=32)
    head = np.zeros((6, 32))
    head[:, 3] = (0.5, 0.4, 0.2, 0.4, 0.9, 0.1)  # a person
    head[:, 7] = (0.51, 0.41, 0.2, 0.4, 0.8, 0.0)  # the same person again: suppressed
    head[:, 20] = (0.2, 0.7, 0.3, 0.2, 0.05, 0.75)  # a car
    head[:, 25] = (0.8, 0.2, 0.1, 0.1, 0.3, 0.2)  # too weak
    det = LiteRTDetector(
        model,
        layout=DetectorLayout.YOLOV8,
        labels=["person", "car"],
        threads=1,
        expected_sha256=sha256_file(model),
    )
    found = det.detect(as_image(head * 255, 8))
    assert [d.label for d in found] == ["person", "car"]
    assert found[0].box == pytest.approx((0.4, 0.2, 0.6, 0.6), abs=0.01)
    assert found[1].box == pytest.approx((0.05, 0.6, 0.35, 0.8), abs=0.01)
    assert found[0].score == pytest.approx(0.9, abs=0.01)


def test_ssd_layout_through_the_interpreter(tmp_path: Path) -> None:
    model = ssd_model(tmp_path / "ssd.tflite", side=8, rows=10)
    raw = np.zeros(192)
    boxes = raw[:40].reshape(10, 4)
    classes, scores = raw[40:50], raw[50:60]
    boxes[0], classes[0], scores[0] = np.array([0.1, 0.2, 0.5, 0.4]) * 255, 2, 0.9 * 255
    boxes[1], classes[1], scores[1] = np.array([0.6, 0.6, 0.9, 0.8]) * 255, 0, 0.7 * 255
    boxes[2], classes[2], scores[2] = np.array([0.0, 0.0, 0.2, 0.2]) * 255, 1, 0.95 * 255
    raw[60] = 2  # count: the third row is padding and must be ignored
    det = LiteRTDetector(
        model, layout=DetectorLayout.SSD, labels=["person", "bicycle", "car"], threads=1
    )
    found = det.detect(as_image(raw, 8))
    assert [(d.label, round(d.score, 2)) for d in found] == [("car", 0.9), ("person", 0.7)]
    assert found[0].box == pytest.approx((0.2, 0.1, 0.4, 0.5), abs=0.01)
    assert found[1].category == "person"
