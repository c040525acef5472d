"""Tiny ``.tflite`` models written with LiteRT's own flatbuffer schema, for tests.

They compute nothing clever: they *reshape* (and split) their input image into the output
layout of a detector, so a test can paint the raw outputs it wants into an image and check
that the real interpreter, our input preparation and our decoders together turn them into
the right detections. No TensorFlow is needed to write them.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
from ai_edge_litert import schema_py_generated as tfl


def _tensor(
    shape: list[int], ttype: int, buffer: int, name: str, scale: float | None = None
) -> tfl.TensorT:
    t = tfl.TensorT()
    t.shape, t.type, t.buffer, t.name = shape, ttype, buffer, name
    if scale is not None:
        q = tfl.QuantizationParametersT()
        q.scale, q.zeroPoint = [scale], [0]
        t.quantization = q
    return t


class _Graph:
    def __init__(self) -> None:
        self.buffers = [tfl.BufferT()]  # buffer 0: the empty buffer by convention
        self.tensors: list[tfl.TensorT] = []
        self.ops: list[tfl.OperatorT] = []
        self.codes: list[int] = []

    def tensor(self, shape: list[int], ttype: int, name: str, scale: float | None = None) -> int:
        self.tensors.append(_tensor(shape, ttype, 0, name, scale))
        return len(self.tensors) - 1

    def const_int32(self, values: list[int], name: str) -> int:
        b = tfl.BufferT()
        b.data = list(np.asarray(values, dtype="<i4").tobytes())
        self.buffers.append(b)
        self.tensors.append(
            _tensor([len(values)], tfl.TensorType.INT32, len(self.buffers) - 1, name)
        )
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options_type: int = 0,
        options: object = None,
    ) -> None:
        if code not in self.codes:
            self.codes.append(code)
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.ops.append(o)

    def reshape(
        self, src: int, shape: list[int], ttype: int, name: str, scale: float | None = None
    ) -> int:
        out = self.tensor(shape, ttype, name, scale)
        opts = tfl.ReshapeOptionsT()
        opts.newShape = shape
        self.op(
            tfl.BuiltinOperator.RESHAPE,
            [src, self.const_int32(shape, name + "/shape")],
            [out],
            tfl.BuiltinOptions.ReshapeOptions,
            opts,
        )
        return out

    def save(self, path: Path, inputs: list[int], outputs: list[int]) -> Path:
        sg = tfl.SubGraphT()
        sg.tensors, sg.operators, sg.inputs, sg.outputs = self.tensors, self.ops, inputs, outputs
        model = tfl.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [sg], self.buffers
        codes = []
        for c in self.codes:
            oc = tfl.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
            codes.append(oc)
        model.operatorCodes = codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(builder.Output())
        return path


def yolo_model(path: Path, side: int, attributes: int, candidates: int) -> Path:
    """float32 image [1, side, side, 3] reshaped to a YOLOv8 head [1, attributes, candidates]."""
    assert side * side * 3 == attributes * candidates
    g = _Graph()
    image = g.tensor([1, side, side, 3], tfl.TensorType.FLOAT32, "image")
    head = g.reshape(image, [1, attributes, candidates], tfl.TensorType.FLOAT32, "head")
    return g.save(path, [image], [head])


def ssd_model(path: Path, side: int, rows: int) -> Path:
    """uint8 image [1, side, side, 3] split into the four post-processed SSD outputs:
    boxes [1, rows, 4] and scores [1, rows] quantised with scale 1/255, class ids [1, rows]
    and the count [1] with scale 1."""
    total = side * side * 3
    sizes = [rows * 4, rows, rows, 1, total - rows * 6 - 1]
    g = _Graph()
    u8 = tfl.TensorType.UINT8
    image = g.tensor([1, side, side, 3], u8, "image", 1.0)
    flat = g.reshape(image, [total], u8, "flat", 1.0)
    pieces = [g.tensor([n], u8, f"piece{i}", 1.0) for i, n in enumerate(sizes)]
    opts = tfl.SplitVOptionsT()
    opts.numSplits = len(sizes)
    g.op(
        tfl.BuiltinOperator.SPLIT_V,
        [flat, g.const_int32(sizes, "sizes"), g.const_int32([0], "axis")],
        pieces,
        tfl.BuiltinOptions.SplitVOptions,
        opts,
    )
    # DEQUANTIZE gives float outputs, as the real post-processing op does.
    f32 = tfl.TensorType.FLOAT32
    outs = []
    for piece, shape, scale, name in (
        (pieces[0], [1, rows, 4], 1 / 255, "boxes"),
        (pieces[1], [1, rows], 1.0, "classes"),
        (pieces[2], [1, rows], 1 / 255, "scores"),
        (pieces[3], [1], 1.0, "count"),
    ):
        g.tensors[piece].quantization.scale = [scale]
        q = g.tensor([int(np.prod(shape))], f32, name + "/f")
        g.op(tfl.BuiltinOperator.DEQUANTIZE, [piece], [q])
        outs.append(g.reshape(q, shape, f32, name) if len(shape) > 1 else q)
    return g.save(path, [image], outs)
