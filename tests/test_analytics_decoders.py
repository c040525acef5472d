"""Detector output decoders against known tensors."""

from __future__ import annotations

import numpy as np
import pytest

from edge.analytics import decoders


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [2, 2, 3, 3]], dtype=np.float64)
    scores = np.array([0.7, 0.9, 0.5])
    assert decoders.nms(boxes, scores, 0.5) == [1, 2]


def test_ssd_postprocess_outputs() -> None:
    boxes = np.array(
        [[[0.1, 0.2, 0.5, 0.4], [0.6, 0.6, 0.9, 0.8], [0.0, 0.0, 0.1, 0.1], [0, 0, 0, 0]]]
    )
    classes = np.array([[0.0, 2.0, 1.0, 0.0]])
    scores = np.array([[0.9, 0.6, 0.3, 0.95]])
    count = np.array([3.0])  # the fourth row is padding and must be ignored
    dets = decoders.decode_ssd(boxes, classes, scores, count, ["person", "bicycle", "car"], 0.5)
    assert [d.label for d in dets] == ["person", "car"]
    assert dets[0].box == pytest.approx((0.2, 0.1, 0.4, 0.5))
    assert dets[1].box == pytest.approx((0.6, 0.6, 0.8, 0.9))
    assert dets[0].category == "person" and dets[1].category == "vehicle"


def test_yolov8_raw_output_with_nms() -> None:
    labels = ["person", "car"]
    # [1, 4 + C, N] in input pixels (640x640): two overlapping persons, one car, one weak.
    cand = np.array(
        [
            [320, 320, 100, 200, 0.9, 0.1],
            [325, 322, 100, 200, 0.8, 0.05],
            [100, 500, 160, 80, 0.1, 0.7],
            [600, 40, 20, 20, 0.2, 0.3],
        ]
    )
    out = cand.T[None, ...]
    dets = decoders.decode_yolov8(out, labels, 0.5, 0.45, (640, 640))
    assert [d.label for d in dets] == ["person", "car"]
    assert dets[0].score == pytest.approx(0.9)
    assert dets[0].box == pytest.approx((270 / 640, 220 / 640, 370 / 640, 420 / 640))
    # The transposed layout [1, N, 4 + C], already normalised, decodes to the same boxes.
    norm = cand.copy()
    norm[:, :4] /= 640
    again = decoders.decode_yolov8(norm[None, ...], labels, 0.5, 0.45, (640, 640))
    assert np.allclose([d.box for d in again], [d.box for d in dets])


def test_yolov8_rejects_a_label_count_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        decoders.decode_yolov8(np.zeros((1, 9, 100)), ["a", "b"], 0.5, 0.5, (640, 640))


@pytest.mark.parametrize(
    ("size", "count"), [(128, 896), (256, 896), (192, 2304)], ids=["short", "back", "full"]
)
def test_mediapipe_anchor_counts_match_the_models(size: int, count: int) -> None:
    strides, interp = decoders.MEDIAPIPE_VARIANTS[(size, count)]
    anchors = decoders.mediapipe_anchors(size, strides, interp)
    assert anchors.shape == (count, 2)
    assert anchors.min() > 0 and anchors.max() < 1


def test_mediapipe_anchor_grid_of_the_short_range_model() -> None:
    anchors = decoders.mediapipe_anchors(128, (8, 16, 16, 16), 1.0)
    # First grid: 16x16 cells, 2 anchors each; then 8x8 cells with 6 anchors each.
    assert anchors[0] == pytest.approx((0.5 / 16, 0.5 / 16))
    assert anchors[1] == pytest.approx(anchors[0])
    assert anchors[2] == pytest.approx((1.5 / 16, 0.5 / 16))
    assert anchors[512] == pytest.approx((0.5 / 8, 0.5 / 8))
    assert anchors[517] == pytest.approx((0.5 / 8, 0.5 / 8))
    assert anchors[518] == pytest.approx((1.5 / 8, 0.5 / 8))


def test_mediapipe_decoding_relative_to_anchors() -> None:
    anchors = decoders.mediapipe_anchors(128, (8, 16, 16, 16), 1.0)
    reg = np.zeros((1, 896, 16))
    logits = np.full((1, 896, 1), -10.0)
    k = 600  # an anchor of the coarse grid
    ax, ay = anchors[k]
    reg[0, k, :4] = [6.4, -3.2, 32.0, 38.4]  # offsets and size in input pixels
    logits[0, k, 0] = 3.0
    logits[0, k + 1, 0] = 2.0  # the same face seen by the neighbouring anchor: suppressed
    reg[0, k + 1, :4] = [6.0, -3.0, 32.0, 38.0]
    dets = decoders.decode_mediapipe(reg, logits, anchors, 128, ["face"], 0.5, 0.3)
    assert len(dets) == 1
    cx, cy, w, h = ax + 0.05, ay - 0.025, 0.25, 0.3
    assert dets[0].box == pytest.approx((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    assert dets[0].score == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert dets[0].label == "face"
