"""Object detector on LiteRT (``ai_edge_litert``, falling back to ``tflite_runtime``).

The model file is checked against its pinned SHA-256 before it is loaded: the image build
fetches the real unit's model and pins its digest in the configuration, so a swapped or
corrupted model refuses to start instead of producing silent nonsense. XNNPACK (LiteRT's
default CPU delegate) runs with the configured number of threads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..config import DetectorConfig, DetectorLayout, InputRange
from ..errors import AnalyticsError
from . import decoders
from .base import Detection, Detector

log = logging.getLogger(__name__)


def load_interpreter_class() -> Any:
    """LiteRT's ``Interpreter``: ``ai_edge_litert`` first, then the older ``tflite_runtime``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise AnalyticsError(
                "no LiteRT runtime: install ai-edge-litert (or tflite-runtime)"
            ) from None
    return Interpreter


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LiteRTDetector(Detector):
    """A ``.tflite`` detector with one of the output layouts of :mod:`.decoders`.

    Not thread-safe: one instance per thread (the analytics process owns one).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        layout: DetectorLayout,
        labels: Sequence[str],
        threads: int = 2,
        score_threshold: float = 0.5,
        nms_iou: float = 0.45,
        expected_sha256: str | None = None,
        input_range: InputRange = InputRange.AUTO,
    ) -> None:
        if not model_path.is_file():
            raise AnalyticsError(f"model {model_path} does not exist")
        actual = sha256_file(model_path)
        if expected_sha256 is not None and actual != expected_sha256:
            raise AnalyticsError(
                f"model {model_path}: SHA-256 {actual} differs from the pinned {expected_sha256}"
            )
        self.model_path = model_path
        self.sha256 = actual
        self.layout = layout
        self.labels = list(labels)
        self.threads = threads
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_range = input_range
        interpreter_class = load_interpreter_class()
        try:
            self._interp = interpreter_class(model_path=str(model_path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise AnalyticsError(f"model {model_path} cannot be loaded: {exc}") from None
        inp = self._interp.get_input_details()[0]
        self._input_index: int = inp["index"]
        self._input_dtype = np.dtype(inp["dtype"])
        self._input_quant: tuple[float, int] = tuple(inp.get("quantization", (0.0, 0)))
        _, self.input_height, self.input_width, _ = (int(v) for v in inp["shape"])
        self._outputs = self._interp.get_output_details()
        self._anchors: npt.NDArray[np.float64] | None = None
        self._box_scale = (1.0, 1.0)  # padded size / frame size of the last prepared frame
        if layout is DetectorLayout.MEDIAPIPE:
            count = int(self._outputs[0]["shape"][1])
            variant = decoders.MEDIAPIPE_VARIANTS.get((self.input_width, count))
            if variant is None:
                raise AnalyticsError(
                    f"model {model_path}: no known MediaPipe anchor layout for input "
                    f"{self.input_width} with {count} anchors"
                )
            self._anchors = decoders.mediapipe_anchors(self.input_width, *variant)
        log.info(
            "detector %s (%s, %dx%d, %d threads, sha256 %s)",
            model_path.name,
            layout.value,
            self.input_width,
            self.input_height,
            threads,
            actual[:16],
        )

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> LiteRTDetector:
        if cfg.model_path is None:
            raise AnalyticsError("analytics.detector.model_path is not set")
        return cls(
            cfg.model_path,
            layout=cfg.layout,
            labels=cfg.labels,
            threads=cfg.threads,
            score_threshold=cfg.score_threshold,
            nms_iou=cfg.nms_iou,
            expected_sha256=cfg.model_sha256,
            input_range=cfg.input_range,
        )

    @property
    def description(self) -> str:
        return f"{self.model_path.name} ({self.layout.value}, {self.threads} threads)"

    def _prepare(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        # YOLO and MediaPipe models are trained on letterboxed input: squashing a 16:9 frame
        # into their square input distorts faces and people enough to lose or misplace them.
        # Pad to the model's aspect ratio (bottom/right, black) and scale boxes back in detect().
        h, w = rgb.shape[:2]
        self._box_scale = (1.0, 1.0)
        if self.layout is not DetectorLayout.SSD:
            aspect = self.input_width / self.input_height
            pw, ph = max(w, round(h * aspect)), max(h, round(w / aspect))
            if (pw, ph) != (w, h):
                padded = np.zeros((ph, pw, 3), dtype=np.uint8)
                padded[:h, :w] = rgb
                rgb = padded
                self._box_scale = (pw / w, ph / h)
        img = Image.fromarray(rgb).resize(
            (self.input_width, self.input_height), Image.Resampling.BILINEAR
        )
        arr = np.asarray(img)[None, ...]
        scale, zero = self._input_quant
        if self._input_dtype == np.float32:
            return self._float_pixels(arr)
        if self.input_range is not InputRange.AUTO and scale:
            info = np.iinfo(self._input_dtype)
            q = np.round(self._float_pixels(arr) / scale + zero)
            return np.clip(q, info.min, info.max).astype(self._input_dtype)
        # Quantised vision models are calibrated so their input covers the pixel range: the
        # pixel itself for uint8, shifted by 128 for int8.
        if self._input_dtype == np.int8:
            return (arr.astype(np.int16) - 128).astype(np.int8)
        return arr.astype(self._input_dtype)

    def _float_pixels(self, arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        rng = self.input_range
        if rng is InputRange.AUTO:
            rng = InputRange.UNIT if self.layout is DetectorLayout.YOLOV8 else InputRange.SIGNED
        f = arr.astype(np.float32)
        if rng is InputRange.UNIT:
            return f / 255.0
        if rng is InputRange.SIGNED:
            return f / 127.5 - 1.0
        return f

    def _output(self, i: int) -> npt.NDArray[np.float64]:
        detail = self._outputs[i]
        raw = self._interp.get_tensor(detail["index"])
        scale, zero = detail.get("quantization", (0.0, 0))
        if scale:
            out: npt.NDArray[np.float64] = (raw.astype(np.float64) - zero) * scale
            return out
        return np.asarray(raw, dtype=np.float64)

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        self._interp.set_tensor(self._input_index, self._prepare(rgb))
        self._interp.invoke()
        sx, sy = self._box_scale
        dets = self._decode()
        if (sx, sy) == (1.0, 1.0):
            return dets
        out = []
        for d in dets:
            x1, y1, x2, y2 = d.box
            box = (min(1.0, x1 * sx), min(1.0, y1 * sy), min(1.0, x2 * sx), min(1.0, y2 * sy))
            if box[2] > box[0] and box[3] > box[1]:
                out.append(Detection(box, d.score, d.label))
        return out

    def _decode(self) -> list[Detection]:
        if self.layout is DetectorLayout.SSD:
            if len(self._outputs) < 4:
                raise AnalyticsError("SSD layout needs 4 outputs (boxes, classes, scores, count)")
            return decoders.decode_ssd(
                self._output(0),
                self._output(1),
                self._output(2),
                self._output(3),
                self.labels,
                self.score_threshold,
            )
        if self.layout is DetectorLayout.YOLOV8:
            return decoders.decode_yolov8(
                self._output(0),
                self.labels,
                self.score_threshold,
                self.nms_iou,
                (self.input_width, self.input_height),
            )
        assert self._anchors is not None
        regressors, logits = self._output(0), self._output(1)
        if regressors.shape[-1] == 1:  # some exports list the scores first
            regressors, logits = logits, regressors
        return decoders.decode_mediapipe(
            regressors,
            logits,
            self._anchors,
            self.input_width,
            self.labels,
            self.score_threshold,
            self.nms_iou,
        )
