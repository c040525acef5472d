"""The playback timeline (pure): recorded spans never close a gap, gaps fill the rest."""

from __future__ import annotations

from edge.csu.console.playback import Span, gaps_of, spans_of, timeline_svg
from edge.csu.receiver.archive import StoredSegment

SEC = 1_000_000_000


def seg(
    sequence: int, start_s: float, frames: int = 10, first_frame: int | None = None
) -> StoredSegment:
    return StoredSegment(
        sequence=sequence, hash="h", prev_hash="p", start_wall_ns=int(start_s * SEC),
        end_wall_ns=int((start_s + 1) * SEC), frame_count=frames,
        first_frame_index=sequence * 10 if first_frame is None else first_frame, epoch_id="e",
        size=1, received_ns=0,
    )  # fmt: skip


def test_a_time_gap_or_a_lost_sequence_starts_a_new_span() -> None:
    segments = [seg(3, 103), seg(0, 100), seg(1, 101), seg(2, 102), seg(5, 110), seg(6, 111)]
    segments.append(seg(7, 112, first_frame=999))  # a restart of the camera: frames jump
    assert spans_of(segments) == [
        Span(100 * SEC, 104 * SEC, 0, 3),
        Span(110 * SEC, 112 * SEC, 5, 6),
        Span(112 * SEC, 113 * SEC, 7, 7),
    ]


def test_gaps_are_what_no_span_covers_within_the_range() -> None:
    spans = [Span(100 * SEC, 104 * SEC, 0, 3), Span(110 * SEC, 112 * SEC, 5, 6)]
    assert gaps_of(spans, 95 * SEC, 115 * SEC) == [
        (95 * SEC, 100 * SEC),
        (104 * SEC, 110 * SEC),
        (112 * SEC, 115 * SEC),
    ]
    assert gaps_of(spans, 101 * SEC, 103 * SEC) == []
    assert gaps_of([], 0, SEC) == [(0, SEC)]
    svg = timeline_svg(spans, gaps_of(spans, 95 * SEC, 115 * SEC), [], 95 * SEC, 115 * SEC)
    assert svg.count('class="gap"') == 3 and svg.count('class="span"') == 2
    assert 'x="250.0"' in svg  # 100 s is a quarter of the way through 95..115
