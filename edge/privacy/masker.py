"""Irreversible privacy masking of I420 frames, in place.

:class:`PrivacyMasker` rasterises a camera's polygons once for its resolution (see
:mod:`edge.privacy.rasterize` for the conservative rules) and then overwrites the masked pixels of
every frame in place, luma and chroma, before anything else sees the frame. It is immutable after
construction: on SIGHUP the pipeline builds a new one and swaps the reference, so a masker is
never changed while the capture thread applies it.

Fills:

- ``solid`` (default): luma :data:`MASK_LUMA` (a neutral dark grey), chroma 128 (no colour). Every
  masked frame shows exactly the same pixels there, whatever the scene: nothing to recover.
- ``pixelate``: the frame-aligned tiles of ``pixel_size`` (rounded up to even, so chroma tiles are
  whole) that the polygon touches are each replaced by their mean. Tiles are masked whole, so no
  detail finer than a tile survives; the mean of each tile does (coarse colour and motion), which
  is why solid is the default for the inside of buildings.

Where masks overlap, each pixel belongs to exactly one fill: solid first, then pixelations from
the largest tile down, each ignoring pixels an earlier one owns. That keeps :meth:`apply`
idempotent (masking a masked frame changes nothing) even for overlapping masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import MaskFill, PrivacyMaskConfig
from ..errors import MaskError
from ..frames import Frame, Plane
from . import rasterize
from .rasterize import BoolPlane, Index

log = logging.getLogger(__name__)

#: Luma of a solid mask: a neutral dark grey (limited range: 16 is black, 235 white). Not black,
#: so an installer can tell a mask from a dark scene.
MASK_LUMA = 40
#: Chroma of a solid mask: no colour.
MASK_CHROMA = 128


@dataclass(frozen=True, slots=True)
class _TileRect:
    """A rectangle of ``ny × nx`` equal tiles (``th × tw`` pixels) of one plane, each replaced by
    the mean of the pixels it owns (all of them unless ``keep`` says otherwise)."""

    rows: slice
    cols: slice
    ny: int
    th: int
    nx: int
    tw: int
    keep: npt.NDArray[np.bool_] | None  # (ny, th, nx * tw); None: the whole rectangle is ours
    counts: npt.NDArray[np.uint32]  # (ny, nx) pixels owned per tile, at least 1

    def apply(self, plane: Plane) -> None:
        # (tile row, pixel row, pixel column): whole pixel rows stay contiguous, which is what
        # makes the sums and the write fast.
        rows = plane[self.rows, self.cols].reshape(self.ny, self.th, self.nx * self.tw)
        src = rows if self.keep is None else np.where(self.keep, rows, 0)
        # Sum the pixel rows of each tile row first (th <= 256 rows of uint8 fit in uint16),
        # then the columns of each tile.
        sums = (
            src.sum(axis=1, dtype=np.uint16)
            .reshape(self.ny, self.nx, self.tw)
            .sum(axis=2, dtype=np.uint32)
        )
        means = ((sums + self.counts // 2) // self.counts).astype(np.uint8)
        wide = np.repeat(means, self.tw, axis=1)[:, None, :]
        if self.keep is None:
            rows[...] = wide
        else:
            np.copyto(rows, wide, where=self.keep)


def _spans(start: int, stop: int, block: int) -> list[tuple[int, int, int]]:
    """``[start, stop)`` split into a run of whole tiles and a partial one: (start, count, size)."""
    whole = (stop - start) // block
    out = [(start, whole, block)] if whole else []
    rest = stop - start - whole * block
    if rest:
        out.append((start + whole * block, 1, rest))
    return out


def _tile_rects(grid: BoolPlane, block: int, region: BoolPlane) -> list[_TileRect]:
    """Tile rectangles covering ``grid`` (tiles of ``block`` pixels) of a plane; ``region`` is
    the set of pixels of that plane the pixelation owns. Tiles cut by the frame border get
    rectangles of their own, so every rectangle holds equal tiles."""
    height, width = region.shape
    out: list[_TileRect] = []
    for by0, by1, bx0, bx1 in rasterize.rectangles(grid):
        row_spans = _spans(by0 * block, min(by1 * block, height), block)
        col_spans = _spans(bx0 * block, min(bx1 * block, width), block)
        for y0, ny, th in row_spans:
            for x0, nx, tw in col_spans:
                rows, cols = slice(y0, y0 + ny * th), slice(x0, x0 + nx * tw)
                own = region[rows, cols].reshape(ny, th, nx * tw)
                counts = own.sum(axis=1, dtype=np.uint32).reshape(ny, nx, tw).sum(axis=2)
                # A tile owning no pixel writes none; 1 only keeps its division defined.
                counts = np.maximum(counts, 1).astype(np.uint32)
                keep = None if own.all() else np.ascontiguousarray(own)
                out.append(_TileRect(rows, cols, ny, th, nx, tw, keep, counts))
    return out


#: Unsigned integer type of each word size of :func:`rasterize.pack_words`.
_WORD_TYPES: dict[int, type[np.unsignedinteger[Any]]] = {
    8: np.uint64,
    4: np.uint32,
    2: np.uint16,
    1: np.uint8,
}


def _write_words(data: npt.NDArray[np.uint8], plan: rasterize.WordPlan, value: int) -> None:
    """Write ``value`` into every byte a word plan names (one fancy assignment per word size)."""
    for size, idx in plan:
        if idx.size:
            # The word repeating the byte value; a view of the whole words of the buffer.
            word = _WORD_TYPES[size](int.from_bytes(bytes([value]) * size, "little"))
            data[: data.size // size * size].view(_WORD_TYPES[size])[idx] = word


def effective_tile(mask: PrivacyMaskConfig) -> int:
    """Pixelation tile size actually used: ``pixel_size`` rounded up to even."""
    return mask.pixel_size + (mask.pixel_size % 2)


def mask_pixels(mask: PrivacyMaskConfig, width: int, height: int) -> BoolPlane:
    """The luma pixels one mask hides on its own (tiles included when it pixelates)."""
    luma = rasterize.union_mask([mask.points], width, height)
    if mask.fill == MaskFill.PIXELATE:
        tile = effective_tile(mask)
        luma = rasterize.expand_blocks(rasterize.block_grid(luma, tile), tile, height, width)
    return luma


class PrivacyMasker:
    """The privacy masks of one camera, rasterised for one resolution.

    Thread safety: immutable after ``__init__``; :meth:`apply` only writes into the frame it is
    given, so one masker may serve any thread, and frames must not be shared while masked.
    """

    def __init__(self, masks: Sequence[PrivacyMaskConfig], width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise MaskError(f"cannot mask {width}x{height} frames: sizes must be positive and even")
        self.masks: tuple[PrivacyMaskConfig, ...] = tuple(masks)
        self.width = width
        self.height = height
        solid = rasterize.union_mask(
            [m.points for m in self.masks if m.fill == MaskFill.SOLID], width, height
        )
        claimed_luma = solid.copy()
        claimed_chroma = rasterize.chroma_of(solid)
        cost = rasterize.PACKED_SLICE_COST_PX
        self._luma_plan = rasterize.plan_fill(solid, slice_cost=cost)
        self._chroma_plan = rasterize.plan_fill(claimed_chroma, slice_cost=cost)
        self._luma_slices = [(slice(a, b), slice(c, d)) for a, b, c, d in self._luma_plan.rects]
        self._uv_slices = [
            (slice(None), slice(a, b), slice(c, d)) for a, b, c, d in self._chroma_plan.rects
        ]
        # Flat indices into the whole I420 buffer, so one fancy assignment per value does it:
        # U and V share the chroma plan and the chroma value.
        luma_size = width * height
        chroma_size = luma_size // 4
        self._luma_scatter: Index = self._luma_plan.scatter
        self._chroma_scatter: Index = np.concatenate(
            (
                self._chroma_plan.scatter + luma_size,
                self._chroma_plan.scatter + luma_size + chroma_size,
            )
        )
        # The scatter as aligned words where whole words are masked (see pack_words).
        self._luma_words = rasterize.pack_words(self._luma_scatter)
        self._chroma_words = rasterize.pack_words(self._chroma_scatter)
        self._luma_tiles: list[_TileRect] = []
        self._chroma_tiles: list[_TileRect] = []
        tiles = sorted({effective_tile(m) for m in self.masks if m.fill == MaskFill.PIXELATE})
        for tile in reversed(tiles):
            group = rasterize.union_mask(
                [
                    m.points
                    for m in self.masks
                    if m.fill == MaskFill.PIXELATE and effective_tile(m) == tile
                ],
                width,
                height,
            )
            grid = rasterize.block_grid(group, tile)
            region = rasterize.expand_blocks(grid, tile, height, width) & ~claimed_luma
            grid = rasterize.block_grid(region, tile)
            half = tile // 2
            chroma_region = (
                rasterize.expand_blocks(grid, half, height // 2, width // 2) & ~claimed_chroma
            )
            self._luma_tiles += _tile_rects(grid, tile, region)
            self._chroma_tiles += _tile_rects(grid, half, chroma_region)
            claimed_luma |= region
            claimed_chroma |= chroma_region
        self._luma_mask = claimed_luma
        self._chroma_mask = claimed_chroma
        self._coverage = float(np.count_nonzero(claimed_luma)) / luma_size
        log.debug(
            "%d mask(s) at %dx%d: %.2f %% of the frame, %d+%d rectangles, %d+%d scattered "
            "pixels, %d tile rectangles",
            len(self.masks),
            width,
            height,
            100.0 * self._coverage,
            len(self._luma_slices),
            len(self._uv_slices),
            self._luma_scatter.size,
            self._chroma_scatter.size,
            len(self._luma_tiles),
        )

    @property
    def coverage(self) -> float:
        """Fraction of the luma pixels that are masked (0..1)."""
        return self._coverage

    @property
    def operations(self) -> int:
        """Numpy operations one :meth:`apply` performs (a measure of its fixed overhead)."""
        words = sum(1 for plan in (self._luma_words, self._chroma_words) for _, i in plan if i.size)
        return (
            len(self._luma_slices)
            + len(self._uv_slices)
            + words
            + len(self._luma_tiles)
            + 2 * len(self._chroma_tiles)
        )

    def luma_mask(self) -> BoolPlane:
        """Which luma pixels :meth:`apply` overwrites (a copy, ``height × width``)."""
        return self._luma_mask.copy()

    def chroma_mask(self) -> BoolPlane:
        """Which chroma samples (of U and of V) :meth:`apply` overwrites (``h/2 × w/2``)."""
        return self._chroma_mask.copy()

    def apply(self, frame: Frame) -> None:
        """Mask ``frame`` in place (its one buffer, so every view of it sees the result)."""
        if frame.width != self.width or frame.height != self.height:
            raise MaskError(
                f"frame is {frame.width}x{frame.height} but the privacy masks were prepared "
                f"for {self.width}x{self.height}"
            )
        data = frame.data
        luma = frame.y
        uv = data[self.width * self.height :].reshape(2, self.height // 2, self.width // 2)
        # Per plane, the scattered pixels first, then the rectangles: they share cache lines at
        # the rectangles' edges, and this order measured as fast or a little faster than the
        # other. ``view.fill`` costs less interpreter time than ``view[...] = value``. The words
        # need no alignment of the buffer: numpy writes unaligned words correctly.
        _write_words(data, self._luma_words, MASK_LUMA)
        for sl in self._luma_slices:
            luma[sl].fill(MASK_LUMA)
        _write_words(data, self._chroma_words, MASK_CHROMA)
        for uv_sl in self._uv_slices:
            uv[uv_sl].fill(MASK_CHROMA)
        for tile in self._luma_tiles:
            tile.apply(luma)
        for tile in self._chroma_tiles:
            tile.apply(frame.u)
            tile.apply(frame.v)
