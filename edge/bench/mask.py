"""Privacy masking: time to mask a 4K I420 frame against one memcpy of that frame.

Three facade-like quadrilaterals (slanted edges, as a camera sees windows in perspective) cover
about a third of the frame. Each repetition masks the frame once and copies it once
(``np.copyto`` into a preallocated buffer), interleaved so both see the same machine state; the
medians give ``mask_vs_memcpy``. Pixelation and a worst case (a long thin diagonal band, whose
every row is ragged) are timed the same way and reported beside it, as is one upright
rectangle of the same area (``rectangle_*``: writing the pixels alone, the floor any method
pays), three upright rectangles of that area side by side (``columns_*``: the floor for three
masks, whose rows are three runs each) and a 64-sided disc of that area (``disc_*``: slanted
edges at every angle).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge.privacy import PrivacyMasker

from ..config import MaskFill, PrivacyMaskConfig
from ..frames import Frame, i420_size

#: Facade windows seen in perspective: near-vertical sides, slanted tops and bottoms.
FACADES: list[list[tuple[float, float]]] = [
    [(0.04, 0.10), (0.28, 0.14), (0.27, 0.60), (0.05, 0.63)],
    [(0.37, 0.06), (0.61, 0.07), (0.62, 0.39), (0.36, 0.37)],
    [(0.69, 0.24), (0.96, 0.14), (0.97, 0.72), (0.70, 0.67)],
]

#: The same area as one upright rectangle: the cost of writing the pixels alone (the floor).
RECTANGLE: list[tuple[float, float]] = [(0.1, 0.1), (0.65, 0.1), (0.65, 0.7), (0.1, 0.7)]

#: Three upright rectangles, 0.2 × 0.55 each, side by side: the same area and rows of three
#: runs, as the facades have, with no slanted edge.
COLUMNS: list[list[tuple[float, float]]] = [
    [(x, 0.1), (x + 0.2, 0.1), (x + 0.2, 0.65), (x, 0.65)] for x in (0.05, 0.4, 0.75)
]

#: Edges at every angle: a 64-sided disc of the same area (every row ragged at both ends).
DISC: list[tuple[float, float]] = [
    (
        0.5 + math.sqrt(0.33 / math.pi * 16 / 9) * 9 / 16 * math.cos(2 * math.pi * k / 64),
        0.5 + math.sqrt(0.33 / math.pi * 16 / 9) * math.sin(2 * math.pi * k / 64),
    )
    for k in range(64)
]

#: Worst case: a thin band across the whole frame diagonally (every row different and ragged).
DIAGONAL: list[tuple[float, float]] = [(0.0, 0.0), (0.004, 0.0), (1.0, 0.996), (1.0, 1.0)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=3840, help="frame width (default 3840)")
    parser.add_argument("--height", type=int, default=2160, help="frame height (default 2160)")
    parser.add_argument(
        "--repeat", type=int, default=200, help="repetitions per measurement (default 200)"
    )


def _median_pair(
    work: Callable[[], None], baseline: Callable[[], None], repeat: int
) -> tuple[float, float]:
    """Median seconds of ``work`` and of ``baseline``, measured alternately."""
    work()
    baseline()  # warm caches and page tables before timing either
    a: list[int] = []
    b: list[int] = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        work()
        t1 = time.perf_counter_ns()
        baseline()
        t2 = time.perf_counter_ns()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return float(np.median(a)) / 1e9, float(np.median(b)) / 1e9


def _masks(
    polygons: Sequence[Sequence[tuple[float, float]]], fill: MaskFill
) -> list[PrivacyMaskConfig]:
    return [
        PrivacyMaskConfig(name=f"area-{i + 1}", points=list(points), fill=fill)
        for i, points in enumerate(polygons)
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    width: int = args.width
    height: int = args.height
    repeat: int = max(5, args.repeat)
    rng = np.random.default_rng(1)
    frame = Frame(
        rng.integers(0, 256, i420_size(width, height), dtype=np.uint8), width, height, 0, 0, 0
    )
    scratch = np.empty_like(frame.data)

    def memcpy() -> None:
        np.copyto(scratch, frame.data)

    out: dict[str, Any] = {"width": width, "height": height, "repeat": repeat}
    # (key prefix, polygons, fill); the unprefixed keys are the headline figures.
    cases = [
        ("", FACADES, MaskFill.SOLID),
        ("pixelate_", FACADES, MaskFill.PIXELATE),
        ("worst_case_", [DIAGONAL], MaskFill.SOLID),
        ("rectangle_", [RECTANGLE], MaskFill.SOLID),
        ("columns_", COLUMNS, MaskFill.SOLID),
        ("disc_", [DISC], MaskFill.SOLID),
    ]
    for prefix, polygons, fill in cases:
        t0 = time.perf_counter()
        masker = PrivacyMasker(_masks(polygons, fill), width, height)
        build = time.perf_counter() - t0
        mask_s, copy_s = _median_pair(functools.partial(masker.apply, frame), memcpy, repeat)
        out[f"{prefix}coverage_percent"] = round(100.0 * masker.coverage, 3)
        out[f"{prefix}build_ms"] = round(build * 1e3, 2)
        out[f"{prefix}operations"] = masker.operations
        out[f"{prefix}mask_ms"] = round(mask_s * 1e3, 6)
        out[f"{prefix}memcpy_ms"] = round(copy_s * 1e3, 6)
        out[f"{prefix}mask_vs_memcpy"] = round(mask_s / copy_s, 4)
    out["goal_mask_vs_memcpy"] = 0.5
    return out
