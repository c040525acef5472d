"""Pure parts of the segmenter: box splitting, frame rates, the segment plan."""

from __future__ import annotations

from fractions import Fraction

import pytest

from edge.errors import EncodeError
from edge.video.cmaf import SegmentPlan, box_types, frame_rate, iter_boxes, media_timescale


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def test_iter_boxes_leaves_an_incomplete_box_out() -> None:
    data = box(b"moof", b"x" * 10) + box(b"mdat", b"y" * 100)
    boxes, end = iter_boxes(data[:-1])
    assert [b.type for b in boxes] == ["moof"]
    assert end == 18
    boxes, end = iter_boxes(data)
    assert [(b.type, b.offset, b.size) for b in boxes] == [("moof", 0, 18), ("mdat", 18, 108)]
    assert end == len(data)
    assert box_types(data[:5]) == []


def test_iter_boxes_reads_64_bit_sizes() -> None:
    large = (1).to_bytes(4, "big") + b"mdat" + (20).to_bytes(8, "big") + b"abcd"
    assert [(b.type, b.size) for b in iter_boxes(large)[0]] == [("mdat", 20)]


@pytest.mark.parametrize("size", [0, 4, 7])
def test_iter_boxes_rejects_impossible_sizes(size: int) -> None:
    with pytest.raises(EncodeError, match="invalid size"):
        iter_boxes(size.to_bytes(4, "big") + b"moof" + b"\0" * 16)


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(25, Fraction(25)), (12.5, Fraction(25, 2)), (29.97, Fraction(30000, 1001)), (30, 30)],
)
def test_frame_rate_is_exact(fps: float, expected: Fraction) -> None:
    rate = frame_rate(fps)
    assert rate == expected
    ticks = media_timescale(rate) / rate
    assert ticks.denominator == 1, "each frame lasts a whole number of ticks"


def test_frame_rate_refuses_nonsense_and_approximates_odd_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        frame_rate(0)
    odd = frame_rate(23.456789)
    assert odd.denominator <= 1001
    assert abs(float(odd) - 23.456789) < 1e-5


def starts(plan: SegmentPlan, pts_values: list[int]) -> list[int]:
    return [p for p in pts_values if plan.starts_segment(p)]


def test_plan_cuts_every_segment_seconds() -> None:
    assert starts(SegmentPlan(2.0, Fraction(25)), list(range(160))) == [0, 50, 100, 150]
    assert starts(SegmentPlan(1.0, Fraction(25)), list(range(60))) == [0, 25, 50]


def test_plan_on_a_fractional_grid_does_not_drift() -> None:
    # 12.5 fps, 1 s: 12.5 frames per segment, so 12/13 alternate and every 25 frames = 2 s.
    got = starts(SegmentPlan(1.0, Fraction(25, 2)), list(range(126)))
    assert got == [0, 12, 25, 37, 50, 62, 75, 87, 100, 112, 125]
    # 29.97 fps, 2 s: boundaries stay within half a frame of the grid after an hour.
    rate = Fraction(30000, 1001)
    plan = SegmentPlan(2.0, rate)
    cuts = starts(plan, list(range(0, 108_000)))
    assert len(cuts) == 1802
    for k, pts in enumerate(cuts):
        assert abs(pts / rate - 2 * k) <= 1 / (2 * rate)


def test_plan_counts_from_the_first_timestamp() -> None:
    assert starts(SegmentPlan(1.0, Fraction(10)), list(range(500, 530))) == [500, 510, 520]


def test_plan_skips_grid_lines_inside_a_gap() -> None:
    pts = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 45, 46, 50, 55, 60]
    assert starts(SegmentPlan(1.0, Fraction(10)), pts) == [0, 45, 50, 60]


def test_plan_accepts_a_timestamp_half_a_frame_early() -> None:
    plan = SegmentPlan(0.5, Fraction(3))  # 1.5 frames per segment
    assert starts(plan, [0, 1, 2, 3, 4, 5, 6]) == [0, 1, 3, 4, 6]
