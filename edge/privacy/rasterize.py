"""Privacy polygons → conservative pixel masks → a cheap fill plan.

Geometry conventions. Pixel ``(col i, row j)`` is the square ``[i, i+1] × [j, j+1]`` in pixel
units (a normalised point ``(x, y)`` is ``(x * width, y * height)``). A polygon is the closed
region its outline encloses with the *non-zero* winding rule: a self-intersecting outline masks
every area it winds around, which includes everything the even-odd rule would fill (the
conservative choice). A pixel is masked when the polygon meets the *interior* of its square:

- a polygon that covers any part of a pixel, however small, masks it (never under-masked);
- a polygon edge lying exactly on a grid line does not spill into the neighbouring row or
  column (so a mask drawn on pixel boundaries masks exactly the pixels it encloses);
- a degenerate polygon (a slanted sliver, a spike) still masks every pixel its outline crosses.

Both planes of the frame are masked: a chroma sample stands for a 2×2 block of luma pixels and is
masked when any of those four is (:func:`chroma_of`), so no colour leaks at the mask edge.

Applying a mask must cost far less than copying the frame, so :func:`plan_fill` turns a boolean
mask into a :class:`FillPlan`: rectangles (one numpy slice assignment each) for the bulk, and one
array of flat indices (one fancy assignment for all of them) for the ragged pixels along slanted
edges. Masks in separate columns are planned apart (:func:`column_groups`), so the steps of one
do not cut the bands of another; within each, rows are grouped into bands greedily by a cost
model of those two operations (see :data:`SLICE_COST_PX`), which is what keeps the per-row
Python overhead of a 2160-row frame away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolPlane = npt.NDArray[np.bool_]
Index = npt.NDArray[np.intp]

#: Cost of one slice assignment expressed in pixels written by a fancy (index) assignment.
#: Measured with numpy 2 on x86-64: a 2-D slice assignment costs ~0.3 µs of interpreter and
#: dispatch overhead, a fancy assignment ~1 ns per pixel, so ~300 scattered pixels cost as much
#: as one more rectangle. The figure only steers the banding; any value in 100..1000 works.
SLICE_COST_PX = 300

#: The same price when the scatter is written as aligned words (:func:`pack_words`, as
#: :class:`~edge.privacy.masker.PrivacyMasker` does): runs of scattered pixels then cost up to
#: eight times less each, so taller bands with fewer rectangles pay. Measured at 4K against
#: 300 and 600: 1000 was best or level on façades, a disc and the thin diagonal band.
PACKED_SLICE_COST_PX = 1000

#: A ragged run at least this long is written as its own 1-row rectangle, not scattered.
LONG_RUN_PX = 300


def to_pixels(
    points: Sequence[Sequence[float]], width: int, height: int
) -> npt.NDArray[np.float64]:
    """Normalised polygon vertices → pixel coordinates, shape ``(n, 2)``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts * np.array([width, height], dtype=np.float64)


#: Column intervals of pixels a polygon touches: rows, first columns, stop columns (exclusive).
_Intervals = tuple[Index, Index, Index]


def _edge_rows(
    lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], height: int
) -> tuple[Index, Index]:
    """(edge index, row) for every row ``floor(lo) - 1 .. ceil(hi)`` of each edge, in the frame:
    candidates a little wider than needed, which the callers filter with the exact test."""
    first = np.clip(np.floor(lo) - 1, 0, height).astype(np.intp)
    stop = np.clip(np.ceil(hi) + 1, 0, height).astype(np.intp)
    counts = np.maximum(stop - first, 0)
    total = int(counts.sum())
    edge = np.repeat(np.arange(counts.size, dtype=np.intp), counts)
    offset = np.arange(total, dtype=np.intp) - np.repeat(np.cumsum(counts) - counts, counts)
    return edge, first[edge] + offset


def polygon_intervals(points_px: npt.NDArray[np.float64], width: int, height: int) -> _Intervals:
    """Column intervals ``(row, first, stop)`` (stop exclusive, clipped to the frame) whose
    union is every pixel the polygon (pixel coordinates) touches; they may overlap.

    A pixel is masked when (a) an edge of the outline passes through the inside of its square,
    or (b) its centre lies inside the polygon (non-zero winding). A pixel meeting the polygon
    either contains a piece of the outline or lies wholly inside it, so (a) ∪ (b) is exactly the
    set of pixels the polygon meets. Both are computed for (edge, row) pairs the edge spans
    only, all at once: the work grows with the outline's length in rows, not rows × edges, and
    no Python loop runs per row or per interval.
    """
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    empty = np.zeros(0, dtype=np.intp)
    if pts.shape[0] == 0 or y0.max() <= 0 or y0.min() >= height:
        return empty, empty, empty
    if x0.max() < 0 or x0.min() > width:
        return empty, empty, empty
    dy = y1 - y0
    dx = x1 - x0
    safe_dy = np.where(dy != 0, dy, 1.0)
    ylo = np.minimum(y0, y1)
    yhi = np.maximum(y0, y1)

    def x_at(e: Index, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """x of edges ``e`` at heights ``y``, measured from the nearer end point: exact at both
        ends and along vertical edges, so rounding cannot push an edge across a grid line it
        only touches (which would add a column to some rows)."""
        t = (y - y0[e]) / safe_dy[e]  # a division, so t is exactly 1 at y1 (a product might not)
        near0 = x0[e] + t * dx[e]
        near1 = x1[e] - (1.0 - t) * dx[e]
        return np.asarray(np.where(t <= 0.5, near0, near1), dtype=np.float64)

    rows_out: list[Index] = []
    first_out: list[Index] = []
    stop_out: list[Index] = []

    def add(rows: Index, lo: Index, hi: Index) -> None:
        """Columns ``lo..hi`` inclusive of ``rows`` (unclipped) join the mask."""
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, width - 1) + 1
        ok = hi > lo
        rows_out.append(rows[ok])
        first_out.append(lo[ok])
        stop_out.append(hi[ok])

    # (a) Edges through the open strip (j, j+1) of each row; their x-extent there names the
    # columns whose open squares they cross.
    all_e, all_j = _edge_rows(ylo, yhi, height)
    e, j = all_e, all_j
    rows = j.astype(np.float64)
    flat = dy[e] == 0
    lo_e, hi_e = ylo[e], yhi[e]
    crosses = np.where(flat, (lo_e > rows) & (lo_e < rows + 1), (lo_e < rows + 1) & (hi_e > rows))
    e, j, flat = e[crosses], j[crosses], flat[crosses]
    rows, lo_e, hi_e = rows[crosses], lo_e[crosses], hi_e[crosses]
    ya = np.clip(rows, lo_e, hi_e)
    yb = np.clip(rows + 1, lo_e, hi_e)
    xa = np.where(flat, np.minimum(x0[e], x1[e]), x_at(e, ya))
    xb = np.where(flat, np.maximum(x0[e], x1[e]), x_at(e, yb))
    left = np.minimum(xa, xb)
    right = np.maximum(xa, xb)
    # Open interval (left, right) meets (i, i+1) for floor(left) <= i <= ceil(right) - 1; a
    # vertical edge (left == right) on a grid line meets no open square, and that formula then
    # yields an empty range by itself.
    add(j, np.floor(left).astype(np.intp), (np.ceil(right) - 1).astype(np.intp))

    # (b) Pixel centres inside: scan line y = j + 0.5, crossings sorted by x within each row,
    # running winding number per row.
    e, j = all_e, all_j
    yc = j.astype(np.float64) + 0.5
    hit = (ylo[e] <= yc) & (yc < yhi[e])
    e, j, yc = e[hit], j[hit], yc[hit]
    if e.size >= 2:
        xc = x_at(e, yc)
        order = np.lexsort((xc, j))
        xs, row, wind = xc[order], j[order], np.sign(dy[e[order]])
        total = np.cumsum(wind)
        starts = np.flatnonzero(np.concatenate(([True], row[1:] != row[:-1])))
        run_first = np.repeat(starts, np.diff(np.concatenate((starts, [row.size]))))
        ws = total - (total - wind)[run_first]  # winding after each crossing, per row
        inside = (ws[:-1] != 0) & (row[1:] == row[:-1])
        k = np.flatnonzero(inside)
        add(
            row[k],
            np.ceil(xs[k] - 0.5).astype(np.intp),
            np.floor(xs[k + 1] - 0.5).astype(np.intp),
        )

    return np.concatenate(rows_out), np.concatenate(first_out), np.concatenate(stop_out)


def _paint(intervals: Sequence[_Intervals], width: int, height: int) -> BoolPlane:
    """The pixels covered by any of the intervals: one difference array and one running sum
    per row for all of them (overlaps only raise the count)."""
    rows = np.concatenate([i[0] for i in intervals]) if intervals else np.zeros(0, np.intp)
    if rows.size == 0:
        return np.zeros((height, width), dtype=np.bool_)
    first = np.concatenate([i[1] for i in intervals])
    stop = np.concatenate([i[2] for i in intervals])
    stride = width + 1
    size = height * stride
    diff = np.bincount(rows * stride + first, minlength=size) - np.bincount(
        rows * stride + stop, minlength=size
    )
    counts = np.cumsum(diff.reshape(height, stride), axis=1)
    return np.ascontiguousarray(counts[:, :width] > 0)


def polygon_mask(points_px: npt.NDArray[np.float64], width: int, height: int) -> BoolPlane:
    """Every pixel of a ``height × width`` grid that the polygon (pixel coordinates) touches
    (see :func:`polygon_intervals` for the rule)."""
    return _paint([polygon_intervals(points_px, width, height)], width, height)


def union_mask(polygons: Iterable[Sequence[Sequence[float]]], width: int, height: int) -> BoolPlane:
    """Union of the conservative masks of normalised polygons, painted in one pass."""
    intervals = [
        polygon_intervals(to_pixels(points, width, height), width, height) for points in polygons
    ]
    return _paint(intervals, width, height)


def chroma_of(luma: BoolPlane) -> BoolPlane:
    """Chroma (4:2:0) mask: a sample is masked when any luma pixel of its 2×2 block is."""
    h, w = luma.shape
    return np.asarray(luma.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3)), dtype=np.bool_)


def block_grid(mask: BoolPlane, block: int) -> BoolPlane:
    """Which ``block × block`` tiles of the frame-aligned grid contain a masked pixel."""
    h, w = mask.shape
    nby, nbx = -(-h // block), -(-w // block)
    padded = np.zeros((nby * block, nbx * block), dtype=np.bool_)
    padded[:h, :w] = mask
    return np.asarray(padded.reshape(nby, block, nbx, block).any(axis=(1, 3)), dtype=np.bool_)


def expand_blocks(grid: BoolPlane, block: int, height: int, width: int) -> BoolPlane:
    """Pixel mask of the tiles set in ``grid`` (cropped to the frame)."""
    full = np.repeat(np.repeat(grid, block, axis=0), block, axis=1)
    return np.ascontiguousarray(full[:height, :width])


def runs(row: BoolPlane) -> list[tuple[int, int]]:
    """``[start, stop)`` column runs of True in one row."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], row, [False])).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def rectangles(grid: BoolPlane) -> list[tuple[int, int, int, int]]:
    """Cover the True cells exactly by ``(r0, r1, c0, c1)`` rectangles: row runs, with runs of
    consecutive identical rows merged (used for tiles, where rows repeat a lot)."""
    out: list[tuple[int, int, int, int]] = []
    open_: dict[tuple[int, int], int] = {}
    for r in range(grid.shape[0]):
        now: dict[tuple[int, int], int] = {}
        for c0, c1 in runs(grid[r]):
            k = open_.get((c0, c1))
            if k is not None:
                a, _, _, _ = out[k]
                out[k] = (a, r + 1, c0, c1)
                now[(c0, c1)] = k
            else:
                out.append((r, r + 1, c0, c1))
                now[(c0, c1)] = len(out) - 1
        open_ = now
    return out


@dataclass(frozen=True, slots=True)
class FillPlan:
    """How to write one value over the pixels of a mask, cheaply.

    ``rects`` are ``(r0, r1, c0, c1)`` (rows and columns, stop exclusive); ``scatter`` holds the
    flat row-major indices (into the plane) of the remaining pixels. Together they cover the
    mask exactly, with no overlap.
    """

    rects: tuple[tuple[int, int, int, int], ...]
    scatter: Index
    pixels: int

    @property
    def operations(self) -> int:
        """Interpreter-level operations per apply (one per rectangle, one for the scatter)."""
        return len(self.rects) + (1 if self.scatter.size else 0)


#: Most column groups :func:`plan_fill` bands separately (see there); more are merged.
MAX_GROUPS = 16


def column_groups(mask: BoolPlane, max_groups: int = MAX_GROUPS) -> list[tuple[int, int]]:
    """``[c0, c1)`` column ranges holding masked pixels, split at fully unmasked columns.

    Masks side by side (three façades) step at different rows; banding them together would cut
    every band at the union of their steps. When there are more than ``max_groups`` ranges, the
    ones separated by the narrowest gaps are joined (a comb of thin stripes must not turn the
    build into thousands of row scans).
    """
    groups = runs(np.asarray(mask.any(axis=0), dtype=np.bool_))
    while len(groups) > max(1, max_groups):
        gaps = [groups[i + 1][0] - groups[i][1] for i in range(len(groups) - 1)]
        k = gaps.index(min(gaps))
        groups[k : k + 2] = [(groups[k][0], groups[k + 1][1])]
    return groups


def plan_fill(
    mask: BoolPlane, *, slice_cost: int = SLICE_COST_PX, max_groups: int = MAX_GROUPS
) -> FillPlan:
    """Split ``mask`` into rectangles + scatter, each group of columns on its own.

    Column ranges separated by unmasked columns (:func:`column_groups`) are planned separately:
    within each, rows are grouped into bands and every band split by :func:`_plan_group`.
    ``slice_cost`` is the price of one rectangle in scattered pixels (:data:`SLICE_COST_PX`),
    ``max_groups`` bounds the number of column groups (:data:`MAX_GROUPS`).
    """
    w = mask.shape[1]
    rects: list[tuple[int, int, int, int]] = []
    scatter: list[Index] = []
    for c0, c1 in column_groups(mask, max_groups):
        _plan_group(mask[:, c0:c1], c0, w, slice_cost, rects, scatter)
    merged = _merge_vertical(rects)
    idx = np.sort(np.concatenate(scatter)) if scatter else np.zeros(0, dtype=np.intp)
    return FillPlan(tuple(merged), idx, int(np.count_nonzero(mask)))


def _plan_group(
    mask: BoolPlane,
    col0: int,
    width: int,
    slice_cost: int,
    rects: list[tuple[int, int, int, int]],
    scatter: list[Index],
) -> None:
    """Group the rows of ``mask`` (columns ``col0..`` of a plane ``width`` wide) into bands and
    split each band into rectangles + scatter, appended to ``rects`` and ``scatter``.

    A band of rows contributes one rectangle per column run masked in *all* its rows; pixels
    masked in only some rows are ragged and go to the scatter (or to 1-row rectangles when
    the run is long). A band grows row by row while its estimated cost per row goes down, so
    identical rows (vertical edges) merge into tall rectangles and slanted edges get bands whose
    height balances rectangle count against scattered pixels.
    """
    h = mask.shape[0]
    row_px = mask.sum(axis=1)

    def n_runs(row: BoolPlane) -> int:
        return int(np.count_nonzero(np.diff(row.astype(np.int8)) == 1) + (1 if row[0] else 0))

    def emit(r0: int, r1: int, full: BoolPlane) -> None:
        for c0, c1 in runs(full):
            rects.append((r0, r1, c0 + col0, c1 + col0))
        ragged = mask[r0:r1] & ~full
        if not ragged.any():
            return
        # Runs of ragged pixels in every row of the band at once (no loop per row or run).
        edges = np.diff(
            np.pad(ragged, ((0, 0), (1, 1))).astype(np.int8), axis=1
        )  # +1 where a run starts, -1 where it stops
        rr, c_start = np.nonzero(edges == 1)
        _, c_stop = np.nonzero(edges == -1)  # same row-major order: one stop per start
        for k in np.flatnonzero(c_stop - c_start >= LONG_RUN_PX).tolist():
            r, c0, c1 = int(rr[k]), int(c_start[k]), int(c_stop[k])
            rects.append((r0 + r, r0 + r + 1, c0 + col0, c1 + col0))
            ragged[r, c0:c1] = False
        rows, cols = np.nonzero(ragged)
        scatter.append(((rows + r0) * width + col0 + cols).astype(np.intp))

    r = 0
    while r < h:
        if row_px[r] == 0:
            r += 1
            continue
        r0 = r
        full = mask[r].copy()
        total = int(row_px[r])
        cost = n_runs(full) * slice_cost
        r += 1
        while r < h and row_px[r] > 0:
            nfull = full & mask[r]
            ntotal = total + int(row_px[r])
            k = r - r0 + 1
            ragged = ntotal - k * int(nfull.sum())
            ncost = (n_runs(nfull) if nfull.any() else 0) * slice_cost + ragged
            # Extend while the cost per row does not grow (k-1 rows cost `cost` so far).
            if ncost * (k - 1) > cost * k:
                break
            full, total, cost = nfull, ntotal, ncost
            r += 1
        emit(r0, r, full)


def _merge_vertical(
    rects: list[tuple[int, int, int, int]],
) -> list[tuple[int, int, int, int]]:
    """Join rectangles with the same columns that sit directly on top of each other."""
    by_bottom: dict[tuple[int, int, int], int] = {}  # (r1, c0, c1) -> index in out
    out: list[tuple[int, int, int, int]] = []
    for r0, r1, c0, c1 in sorted(rects):
        k = by_bottom.pop((r0, c0, c1), None)
        if k is not None:
            out[k] = (out[k][0], r1, c0, c1)
        else:
            out.append((r0, r1, c0, c1))
            k = len(out) - 1
        by_bottom[(r1, c0, c1)] = k
    return out


#: Word sizes (bytes) :func:`pack_words` groups scattered pixels into, widest first.
WORD_SIZES = (8, 4, 2)

WordPlan = tuple[tuple[int, Index], ...]


def pack_words(scatter: Index, sizes: Sequence[int] = WORD_SIZES) -> WordPlan:
    """Regroup flat byte indices into aligned words: ``((size, word indices), ...)``.

    For each size (widest first), every aligned block of ``size`` bytes whose bytes are all in
    ``scatter`` becomes one word index (byte offset / size); the bytes left over go on to the next
    size, and the last entry, of size 1, holds the bytes no word covers. Written through views
    of the buffer as unsigned words holding the byte value in every byte, the plan writes
    exactly the bytes of ``scatter``, with up to eight times fewer fancy-index elements: each
    costs about as much as a byte does, and the index array (8 bytes per element) is itself
    read from memory on every frame.
    """
    left = np.asarray(scatter, dtype=np.intp).reshape(-1)
    # Plans hand over sorted, distinct indices; anything else is sorted and made so first.
    if left.size > 1 and not bool(np.all(left[1:] > left[:-1])):
        left = np.unique(left)
    out: list[tuple[int, Index]] = []
    for size in sizes:
        if left.size < size:
            continue
        # Sorted bytes, so the bytes of each aligned word are adjacent: runs of equal word
        # numbers, a word whole when its run holds ``size`` bytes.
        block = left // size
        starts = np.flatnonzero(np.concatenate(([True], block[1:] != block[:-1])))
        counts = np.diff(np.concatenate((starts, [block.size])))
        whole = counts == size
        if whole.any():
            out.append((size, block[starts[whole]].astype(np.intp)))
            left = left[~np.repeat(whole, counts)]
    out.append((1, left))
    return tuple(out)


def word_mask(plan: WordPlan, size: int) -> npt.NDArray[np.bool_]:
    """Flat mask of the bytes a word plan writes into a buffer of ``size`` bytes (for tests)."""
    out = np.zeros(size, dtype=np.bool_)
    for word, idx in plan:
        for k in range(word):
            out[idx * word + k] = True
    return out


def plan_mask(plan: FillPlan, height: int, width: int) -> BoolPlane:
    """The mask a plan writes (tests check it equals the mask it was made from)."""
    out = np.zeros((height, width), dtype=np.bool_)
    for r0, r1, c0, c1 in plan.rects:
        out[r0:r1, c0:c1] = True
    out.reshape(-1)[plan.scatter] = True
    return out
