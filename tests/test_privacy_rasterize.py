"""Privacy polygons → pixels: judged against Pillow's rasteriser and exact edge cases.

Two independent oracles decide which pixels a polygon covers:

- Pillow's ``ImageDraw.polygon`` at 8× supersampling (even-odd rule, which the non-zero rule we
  use always contains). Pillow samples a pixel at its integer coordinate and rounds its edges by up
  to one sample, so its supersampled fill is eroded by one sample before it is used as a
  requirement; what that leaves out (a layer 1/8 pixel thick) the second oracle covers.
- Point sampling written here: a non-zero winding number at 8×8 points per pixel, plus points
  every 1/64 pixel along each edge (an edge point strictly inside a pixel square means the
  polygon touches that pixel; points exactly on grid lines decide nothing and are skipped).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from edge.privacy.rasterize import (
    chroma_of,
    column_groups,
    pack_words,
    plan_fill,
    plan_mask,
    polygon_mask,
    to_pixels,
    union_mask,
    word_mask,
)

Bool = npt.NDArray[np.bool_]
Points = list[tuple[float, float]]
SUPER = 8


def pillow_required(points: Points, width: int, height: int) -> Bool:
    """Pixels holding a sample Pillow fills (eroded by one sample against its rounding)."""
    img = Image.new("1", (width * SUPER, height * SUPER), 0)
    scaled = [(x * width * SUPER - 0.5, y * height * SUPER - 0.5) for x, y in points]
    ImageDraw.Draw(img).polygon(scaled, fill=1)
    sup = np.array(img, dtype=np.bool_)
    padded = np.pad(sup, 1)
    eroded = sup.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            eroded &= padded[1 + dy : 1 + dy + sup.shape[0], 1 + dx : 1 + dx + sup.shape[1]]
    return np.asarray(eroded.reshape(height, SUPER, width, SUPER).any(axis=(1, 3)), dtype=np.bool_)


def winding(
    px: npt.NDArray[np.float64], qx: npt.NDArray[np.float64], qy: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Non-zero winding number of the closed polygon ``px`` (pixel units) around points."""
    x0, y0 = px[:, 0], px[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    wn = np.zeros(qx.shape, dtype=np.int64)
    for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
        cross = (c - a) * (qy - b) - (qx - a) * (d - b)
        up = (b <= qy) & (d > qy) & (cross > 0)
        down = (b > qy) & (d <= qy) & (cross < 0)
        wn += up.astype(np.int64) - down.astype(np.int64)
    return wn


def sampled_required(points: Points, width: int, height: int) -> Bool:
    """Pixels that contain an inside sample point or a point of the outline (see module doc)."""
    px = to_pixels(points, width, height)
    out = np.zeros((height, width), dtype=np.bool_)
    offsets = (np.arange(SUPER) + 0.5) / SUPER
    gx = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    gy = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    qx, qy = np.meshgrid(gx, gy)
    inside = winding(px, qx, qy) != 0
    out |= inside.reshape(height, SUPER, width, SUPER).any(axis=(1, 3))
    t = np.linspace(0.0, 1.0, 64 * int(np.ceil(np.abs(px).max() + 2)) + 1)
    for (ax, ay), (bx, by) in zip(px, np.roll(px, -1, axis=0), strict=True):
        ex = ax + (bx - ax) * t
        ey = ay + (by - ay) * t
        ok = (ex != np.floor(ex)) & (ey != np.floor(ey))
        ok &= (ex > 0) & (ex < width) & (ey > 0) & (ey < height)
        out[np.floor(ey[ok]).astype(int), np.floor(ex[ok]).astype(int)] = True
    return out


def dilate(mask: Bool) -> Bool:
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
    return out


# Configured coordinates are decimals; six places (a micro-pixel at 4K) keep hypothesis away
# from 1e-300-sized values, where rounding may legitimately add a pixel a polygon misses by 1e-235.
coord = st.floats(min_value=-0.3, max_value=1.3, allow_nan=False).map(lambda v: round(v, 6))
polygons = st.lists(st.tuples(coord, coord), min_size=3, max_size=9)
sizes = st.tuples(st.integers(1, 24).map(lambda n: 2 * n), st.integers(1, 24).map(lambda n: 2 * n))


@st.composite
def small_polygons(draw: st.DrawFn) -> Points:
    """Polygons a fraction of a pixel to a few pixels wide, anywhere."""
    cx = draw(st.floats(0.0, 1.0))
    cy = draw(st.floats(0.0, 1.0))
    r = draw(st.floats(0.001, 0.08))
    n = draw(st.integers(3, 6))
    return [
        (
            round(cx + r * draw(st.floats(-1.0, 1.0)), 6),
            round(cy + r * draw(st.floats(-1.0, 1.0)), 6),
        )
        for _ in range(n)
    ]


def check_against_oracles(points: Points, width: int, height: int) -> None:
    ours = polygon_mask(to_pixels(points, width, height), width, height)
    need_pillow = pillow_required(points, width, height)
    need_points = sampled_required(points, width, height)
    assert not (need_pillow & ~ours).any(), "under-masked against Pillow"
    assert not (need_points & ~ours).any(), "under-masked against point sampling"
    # Over-masking is bounded: every masked pixel lies next to one the polygon visibly reaches.
    vertex = np.zeros_like(ours)
    for x, y in to_pixels(points, width, height):
        if 0 <= x < width and 0 <= y < height:
            vertex[int(y), int(x)] = True
    assert not (ours & ~dilate(need_points | need_pillow | vertex)).any(), "over-masked"


@settings(max_examples=150, deadline=None)
@given(points=polygons, size=sizes)
def test_random_polygons_match_independent_rasterisers(
    points: Points, size: tuple[int, int]
) -> None:
    check_against_oracles(points, *size)


@settings(max_examples=100, deadline=None)
@given(points=small_polygons(), size=sizes)
def test_small_and_subpixel_polygons_match_independent_rasterisers(
    points: Points, size: tuple[int, int]
) -> None:
    check_against_oracles(points, *size)


def test_random_polygons_at_video_resolution() -> None:
    rng = np.random.default_rng(7)
    for width, height in ((320, 240), (426, 240)):
        for _ in range(3):
            pts = [(float(x), float(y)) for x, y in rng.uniform(-0.2, 1.2, size=(7, 2))]
            check_against_oracles(pts, width, height)


def test_spiky_stars_match_independent_rasterisers() -> None:
    """Many crossings per scan line, sorted and wound per row all at once."""
    rng = np.random.default_rng(11)
    for width, height in ((64, 48), (96, 96)):
        for vertices in (24, 64, 256):
            cx, cy = rng.uniform(0.3, 0.7, 2)
            angles = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
            radii = np.where(np.arange(vertices) % 2 == 1, 0.45, rng.uniform(0.02, 0.2))
            pts = [
                (round(float(cx + r * np.cos(a)), 6), round(float(cy + r * np.sin(a)), 6))
                for r, a in zip(radii, angles, strict=True)
            ]
            check_against_oracles(pts, width, height)


def mask_of(points: Points, width: int = 8, height: int = 8) -> Bool:
    return polygon_mask(to_pixels(points, width, height), width, height)


def cells(mask: Bool) -> set[tuple[int, int]]:
    """Masked pixels as (row, column) pairs."""
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask), strict=True)}


def test_grid_aligned_rectangle_masks_exactly_its_pixels() -> None:
    mask = mask_of([(0.25, 0.25), (0.5, 0.25), (0.5, 0.5), (0.25, 0.5)])
    assert cells(mask) == {(2, 2), (2, 3), (3, 2), (3, 3)}


def test_a_sliver_past_the_grid_line_masks_the_next_column() -> None:
    mask = mask_of([(0.25, 0.25), (0.5 + 1e-6, 0.25), (0.5 + 1e-6, 0.5), (0.25, 0.5)])
    assert cells(mask) == {(2, 2), (2, 3), (3, 2), (3, 3), (2, 4), (3, 4)}


def test_concave_polygon_leaves_its_notch_unmasked() -> None:
    # A "U": two arms joined at the bottom; the notch between the arms stays visible.
    u_shape = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.75), (0.75, 0.75), (0.75, 0.0), (1.0, 0.0),
               (1.0, 1.0), (0.0, 1.0)]  # fmt: skip
    mask = mask_of(u_shape, 16, 16)
    assert mask[:, :4].all() and mask[:, 12:].all() and mask[12:].all()
    assert not mask[:12, 4:12].any()


def test_self_intersecting_polygons_mask_every_wound_area() -> None:
    bow_tie = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    mask = mask_of(bow_tie, 16, 16)
    assert mask[8, 1] and mask[8, 14], "both lobes are masked"
    assert not mask[1, 8] and not mask[14, 8], "the open wedges between them are not"
    # A pentagram: its centre has winding number 2, empty under even-odd, masked here.
    star = [(0.5, 0.0), (0.8, 0.95), (0.0, 0.35), (1.0, 0.35), (0.2, 0.95)]
    img = Image.new("1", (32, 32), 0)
    ImageDraw.Draw(img).polygon([(x * 32 - 0.5, y * 32 - 0.5) for x, y in star], fill=1)
    assert not np.array(img)[16, 16], "Pillow (even-odd) leaves the centre empty"
    assert mask_of(star, 32, 32)[16, 16]


def test_polygons_crossing_or_touching_the_border() -> None:
    assert mask_of([(-0.5, -0.5), (1.5, -0.5), (1.5, 1.5), (-0.5, 1.5)]).all()
    assert mask_of([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]).all()
    half_out = mask_of([(0.75, -0.2), (1.4, -0.2), (1.4, 0.3), (0.75, 0.3)])
    assert cells(half_out) == {(r, c) for r in range(3) for c in (6, 7)}


def test_polygons_outside_the_frame_mask_nothing() -> None:
    assert not mask_of([(1.2, 0.2), (1.8, 0.2), (1.5, 0.8)]).any()
    assert not mask_of([(-0.9, -0.9), (-0.1, -0.9), (-0.5, -0.1)]).any()
    # Touching the frame's edge from outside covers no pixel area.
    assert not mask_of([(1.0, 0.2), (1.5, 0.2), (1.5, 0.8), (1.0, 0.8)]).any()


def test_subpixel_polygons_mask_the_pixels_they_touch() -> None:
    inside_one = [(0.33, 0.33), (0.36, 0.33), (0.36, 0.36)]  # within pixel (2, 2) of 8×8
    assert cells(mask_of(inside_one)) == {(2, 2)}
    on_a_corner = [(0.37, 0.37), (0.38, 0.37), (0.38, 0.38), (0.37, 0.38)]  # around (3, 3)
    assert cells(mask_of(on_a_corner)) == {(2, 2), (2, 3), (3, 2), (3, 3)}
    # All vertices on one line: no area, but the pixels its outline crosses are still masked.
    line = [(0.1, 0.1), (0.3, 0.3), (0.2, 0.2)]
    assert {(0, 0), (1, 1), (2, 2)} <= cells(mask_of(line))


def test_chroma_sample_masked_when_any_of_its_luma_block_is() -> None:
    luma = np.zeros((8, 8), dtype=np.bool_)
    luma[3, 5] = True  # odd row, odd column: chroma (1, 2)
    assert cells(chroma_of(luma)) == {(1, 2)}
    # A mask from luma column 3 to 4 straddles chroma columns 1 and 2.
    strip = mask_of([(3 / 8, 0.0), (5 / 8, 0.0), (5 / 8, 0.25), (3 / 8, 0.25)])
    assert cells(strip) == {(r, c) for r in (0, 1) for c in (3, 4)}
    assert cells(chroma_of(strip)) == {(0, 1), (0, 2)}


def test_union_of_several_polygons() -> None:
    a = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.25), (0.0, 0.25)]
    b = [(0.75, 0.75), (1.0, 0.75), (1.0, 1.0), (0.75, 1.0)]
    union = union_mask([a, b], 8, 8)
    assert cells(union) == cells(mask_of(a)) | cells(mask_of(b))
    assert not union_mask([], 8, 8).any()


@settings(max_examples=60, deadline=None)
@given(
    size=sizes,
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    shapes=st.lists(polygons, max_size=3),
)
def test_fill_plan_covers_the_mask_exactly(
    size: tuple[int, int], density: float, seed: int, shapes: list[Points]
) -> None:
    width, height = size
    noise = np.random.default_rng(seed).random((height, width)) < density * 0.2
    mask = union_mask(shapes, width, height) | noise
    plan = plan_fill(mask)
    assert (plan_mask(plan, height, width) == mask).all()
    covered = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in plan.rects) + plan.scatter.size
    assert covered == plan.pixels == mask.sum(), "rectangles and scatter overlap"


def test_fill_plan_is_compact_for_slanted_4k_masks() -> None:
    facade = [(0.03, 0.08), (0.29, 0.13), (0.28, 0.60), (0.04, 0.64)]
    mask = union_mask([facade], 3840, 2160)
    plan = plan_fill(mask)
    assert (plan_mask(plan, 2160, 3840) == mask).all()
    # One operation per row (the naive plan) would be ~1200; banding needs far fewer.
    assert plan.operations < 150
    assert plan.scatter.size < 0.01 * plan.pixels


@pytest.mark.parametrize("width,height", [(2, 2), (64, 64), (1280, 720)])
def test_empty_and_full_masks(width: int, height: int) -> None:
    empty = plan_fill(np.zeros((height, width), dtype=np.bool_))
    assert empty.operations == 0 and empty.pixels == 0
    full = plan_fill(np.ones((height, width), dtype=np.bool_))
    assert full.rects == ((0, height, 0, width),) and full.scatter.size == 0


def test_vertical_edges_give_identical_rows() -> None:
    # 0.65 × 3840 is 2496.0000000000005 in floating point: every row must still agree on it.
    rect = [(0.1, 0.1), (0.65, 0.1), (0.65, 0.7), (0.1, 0.7)]
    mask = union_mask([rect], 3840, 2160)
    plan = plan_fill(mask)
    assert len(plan.rects) == 1 and plan.scatter.size == 0
    assert len(plan_fill(chroma_of(mask)).rects) == 1


def test_column_groups_split_at_unmasked_columns_and_merge_the_narrowest_gaps() -> None:
    mask = np.zeros((4, 20), dtype=np.bool_)
    mask[1, 0:2] = mask[2, 5:9] = mask[0, 10:11] = mask[3, 17:20] = True
    assert column_groups(mask) == [(0, 2), (5, 9), (10, 11), (17, 20)]
    # Gaps are 3, 1 and 6 columns: the 1-column gap goes first, then the 3-column one.
    assert column_groups(mask, max_groups=3) == [(0, 2), (5, 11), (17, 20)]
    assert column_groups(mask, max_groups=2) == [(0, 11), (17, 20)]
    assert column_groups(mask, max_groups=1) == [(0, 20)]
    assert column_groups(np.zeros((3, 5), dtype=np.bool_)) == []


def test_side_by_side_masks_are_banded_independently() -> None:
    # Slanted quadrilaterals in separate columns step at different rows; planned together,
    # each band would be cut wherever either steps. Planned apart, the union's plan is the
    # plans of the parts put together.
    left = union_mask([[(0.04, 0.10), (0.28, 0.14), (0.27, 0.60), (0.05, 0.63)]], 1920, 1080)
    right = union_mask([[(0.69, 0.24), (0.96, 0.14), (0.97, 0.72), (0.70, 0.67)]], 1920, 1080)
    both = plan_fill(left | right)
    a, b = plan_fill(left), plan_fill(right)
    assert sorted(both.rects) == sorted(a.rects + b.rects)
    assert (both.scatter == np.sort(np.concatenate((a.scatter, b.scatter)))).all()
    assert (plan_mask(both, 1080, 1920) == (left | right)).all()


@settings(max_examples=40, deadline=None)
@given(size=sizes, shapes=st.lists(polygons, min_size=1, max_size=4), groups=st.integers(1, 4))
def test_fill_plan_is_exact_whatever_the_column_grouping(
    size: tuple[int, int], shapes: list[Points], groups: int
) -> None:
    width, height = size
    mask = union_mask(shapes, width, height)
    plan = plan_fill(mask, max_groups=groups)
    assert (plan_mask(plan, height, width) == mask).all()
    covered = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in plan.rects) + plan.scatter.size
    assert covered == plan.pixels == mask.sum(), "rectangles and scatter overlap"


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 200),
    density=st.floats(0.0, 1.0),
    runs_of=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_word_plan_writes_exactly_the_scattered_bytes(
    size: int, density: float, runs_of: int, seed: int
) -> None:
    # Runs of random length at random places, as ragged edges give, plus isolated bytes.
    rng = np.random.default_rng(seed)
    flat = np.repeat(rng.random(-(-size // runs_of)) < density, runs_of)[:size]
    flat |= rng.random(size) < density * 0.1
    scatter = np.flatnonzero(flat).astype(np.intp)
    plan = pack_words(scatter)
    assert (word_mask(plan, size) == flat).all()
    for word, idx in plan:
        assert ((idx + 1) * word <= size).all(), "every word lies inside the buffer"
    written = sum(word * idx.size for word, idx in plan)
    assert written == scatter.size, "no byte is written twice"


def test_word_plan_packs_runs_into_wide_words() -> None:
    scatter = np.arange(5, 37, dtype=np.intp)  # bytes 5..36: 8-byte words 1..3, then the ends
    plan = dict(pack_words(scatter))
    assert plan[8].tolist() == [1, 2, 3]
    assert plan[4].tolist() == [8]  # bytes 32..35
    assert plan[2].tolist() == [3]  # bytes 6..7
    assert plan[1].tolist() == [5, 36]
    assert pack_words(np.zeros(0, dtype=np.intp))[-1][1].size == 0
