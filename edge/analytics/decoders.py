"""Turn raw detector output tensors into :class:`Detection` lists.

Three layouts cover the models that run on street units:

- **SSD with the standard post-processing op** (``TFLite_Detection_PostProcess``): four
  outputs, boxes ``[1, N, 4]`` as (ymin, xmin, ymax, xmax) normalised, class ids, scores and
  the number of valid rows. The model has already done NMS.
- **YOLOv8-style raw output**: one tensor ``[1, 4 + C, N]`` (or its transpose) holding
  (cx, cy, w, h) and one score per class for every candidate; we pick the best class and run
  NMS ourselves.
- **MediaPipe anchors** (BlazeFace detectors): regressors ``[1, N, 4 + 2K]`` relative to a
  fixed grid of anchors, and one logit per anchor; we rebuild the anchors exactly as
  MediaPipe's ``SsdAnchorsCalculator`` does, decode, and run NMS.

Everything is numpy over plain arrays, so each decoder is tested against known tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .base import Detection

Array = npt.ArrayLike


def iou_matrix(a: Array, b: Array) -> npt.NDArray[np.float64]:
    """IoU of every box of ``a`` [N, 4] against every box of ``b`` [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def nms(boxes: Array, scores: Array, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep: list[int] = []
    while order:
        best = int(order.pop(0))
        keep.append(best)
        if not order:
            break
        ious = iou_matrix(boxes[best : best + 1], boxes[order])[0]
        order = [i for i, v in zip(order, ious, strict=True) if v <= iou_threshold]
    return keep


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class{class_id}"


def _clip_box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    return (
        float(np.clip(x1, 0.0, 1.0)),
        float(np.clip(y1, 0.0, 1.0)),
        float(np.clip(x2, 0.0, 1.0)),
        float(np.clip(y2, 0.0, 1.0)),
    )


def decode_ssd(
    boxes: Array,
    classes: Array,
    scores: Array,
    count: float | Array,
    labels: Sequence[str],
    score_threshold: float,
) -> list[Detection]:
    """Outputs of ``TFLite_Detection_PostProcess``: (ymin, xmin, ymax, xmax), ids, scores, n."""
    n = int(np.asarray(count).reshape(-1)[0])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:n]
    c = np.asarray(classes).reshape(-1)[:n]
    s = np.asarray(scores, dtype=np.float64).reshape(-1)[:n]
    out = []
    for (ymin, xmin, ymax, xmax), cls, score in zip(b, c, s, strict=True):
        if score < score_threshold or xmax <= xmin or ymax <= ymin:
            continue
        out.append(
            Detection(_clip_box(xmin, ymin, xmax, ymax), float(score), _label(labels, int(cls)))
        )
    return out


def decode_yolov8(
    output: Array,
    labels: Sequence[str],
    score_threshold: float,
    iou_threshold: float,
    input_size: tuple[int, int],
) -> list[Detection]:
    """YOLOv8 raw head ``[1, 4 + C, N]`` or ``[1, N, 4 + C]``; class-aware NMS.

    ``input_size`` is (width, height) of the model input: exports that give box coordinates
    in input pixels are normalised with it; exports that already normalise are left alone.
    """
    raw = np.asarray(output, dtype=np.float64)
    raw = raw.reshape(raw.shape[-2], raw.shape[-1])
    ncls = len(labels)
    if raw.shape[0] == 4 + ncls and raw.shape[1] != 4 + ncls:
        raw = raw.T  # -> [N, 4 + C]
    if raw.shape[1] != 4 + ncls:
        raise ValueError(f"YOLOv8 output {raw.shape} does not fit {ncls} labels")
    class_scores = raw[:, 4:]
    cls = np.argmax(class_scores, axis=1)
    score = class_scores[np.arange(len(cls)), cls]
    sel = score >= score_threshold
    if not np.any(sel):
        return []
    xywh, cls, score = raw[sel, :4], cls[sel], score[sel]
    if float(np.max(np.abs(xywh))) > 2.0:  # pixels of the model input
        xywh = xywh / np.array([input_size[0], input_size[1], input_size[0], input_size[1]])
    boxes = np.stack(
        [
            xywh[:, 0] - xywh[:, 2] / 2,
            xywh[:, 1] - xywh[:, 3] / 2,
            xywh[:, 0] + xywh[:, 2] / 2,
            xywh[:, 1] + xywh[:, 3] / 2,
        ],
        axis=1,
    )
    out = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        for k in nms(boxes[idx], score[idx], iou_threshold):
            i = idx[k]
            out.append(
                Detection(_clip_box(*boxes[i]), float(score[i]), _label(labels, int(cls[i])))
            )
    out.sort(key=lambda d: -d.score)
    return out


# --- MediaPipe anchors -------------------------------------------------------------------

#: (input size, anchor count) -> (strides, interpolated_scale_aspect_ratio) of the known
#: BlazeFace variants, as in MediaPipe's face_detection_*.pbtxt graphs.
MEDIAPIPE_VARIANTS: dict[tuple[int, int], tuple[tuple[int, ...], float]] = {
    (128, 896): ((8, 16, 16, 16), 1.0),  # short range (front camera)
    (256, 896): ((16, 32, 32, 32), 1.0),  # back camera
    (192, 2304): ((4,), 0.0),  # full range
}


def mediapipe_anchors(
    input_size: int, strides: Sequence[int], interpolated_scale_aspect_ratio: float = 1.0
) -> npt.NDArray[np.float64]:
    """Anchor centres [N, 2] (x, y, normalised), as ``SsdAnchorsCalculator`` with
    ``fixed_anchor_size``, offset 0.5 and aspect ratio 1 generates them.

    Consecutive layers with the same stride share one grid; each layer adds one anchor per cell
    (two when an interpolated scale is configured).
    """
    per_layer = 2 if interpolated_scale_aspect_ratio > 0 else 1
    anchors: list[tuple[float, float]] = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        repeats = 0
        while i < len(strides) and strides[i] == stride:
            repeats += 1
            i += 1
        cells = int(np.ceil(input_size / stride))
        for y in range(cells):
            for x in range(cells):
                for _ in range(repeats * per_layer):
                    anchors.append(((x + 0.5) / cells, (y + 0.5) / cells))
    return np.array(anchors, dtype=np.float64)


def decode_mediapipe(
    regressors: Array,
    logits: Array,
    anchors: npt.NDArray[np.float64],
    input_size: int,
    labels: Sequence[str],
    score_threshold: float,
    iou_threshold: float,
) -> list[Detection]:
    """BlazeFace-style output: offsets (cx, cy, w, h, keypoints…) in input pixels per anchor."""
    reg = np.asarray(regressors, dtype=np.float64).reshape(len(anchors), -1)
    logit = np.clip(np.asarray(logits, dtype=np.float64).reshape(-1), -100.0, 100.0)
    score = 1.0 / (1.0 + np.exp(-logit))
    sel = np.flatnonzero(score >= score_threshold)
    if sel.size == 0:
        return []
    cx = reg[sel, 0] / input_size + anchors[sel, 0]
    cy = reg[sel, 1] / input_size + anchors[sel, 1]
    w = reg[sel, 2] / input_size
    h = reg[sel, 3] / input_size
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    label = labels[0] if labels else "face"
    return [
        Detection(_clip_box(*boxes[k]), float(score[sel[k]]), label)
        for k in nms(boxes, score[sel], iou_threshold)
    ]
