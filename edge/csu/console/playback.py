"""Playback: the timeline of a camera over a time range (recorded spans, gaps, alerts) and its
page. The timeline is pure (plain data in, plain data out); the video itself is the receiver's
recorded HLS playlist, played by console.js, and every viewing is audited there.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from dataclasses import dataclass

from ..receiver.archive import StoredSegment
from . import i18n
from .alerts import Alert

PREFIX = "/console"
#: Longest range one page plays (the player buffers all of it): an hour of 2 s segments.
MAX_RANGE_S = 3600
DEFAULT_RANGE_S = 600


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch recorded without interruption, in wall-clock nanoseconds."""

    start_ns: int
    end_ns: int
    first: int
    last: int


def spans_of(segments: Iterable[StoredSegment]) -> list[Span]:
    """Recorded spans of ``segments`` (any order); a gap in sequence, frames or time starts a
    new span, so a gap always shows as a gap (evidence is never closed up)."""
    from ..receiver.hls import continues  # here: hls imports the console for its routes

    out: list[Span] = []
    prev: StoredSegment | None = None
    for seg in sorted(segments, key=lambda s: s.sequence):
        if prev is not None and continues(prev, seg):
            out[-1] = Span(out[-1].start_ns, seg.end_wall_ns, out[-1].first, seg.sequence)
        else:
            out.append(Span(seg.start_wall_ns, seg.end_wall_ns, seg.sequence, seg.sequence))
        prev = seg
    return out


def gaps_of(spans: list[Span], from_ns: int, to_ns: int) -> list[tuple[int, int]]:
    """The parts of [from_ns, to_ns) no span covers."""
    out = []
    cursor = from_ns
    for span in spans:
        if span.start_ns > cursor:
            out.append((cursor, min(span.start_ns, to_ns)))
        cursor = max(cursor, span.end_ns)
    if cursor < to_ns:
        out.append((cursor, to_ns))
    return [(a, b) for a, b in out if b > a]


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def timeline_svg(
    spans: list[Span], gaps: list[tuple[int, int]], alerts: list[Alert], from_ns: int, to_ns: int
) -> str:
    """An SVG bar 1000 units wide: recorded spans, gaps, alert marks (titles for screen
    readers and hover). Attributes only: the CSP forbids style attributes."""
    width = max(1, to_ns - from_ns)

    def x(ns: int) -> float:
        return round(1000 * (min(max(ns, from_ns), to_ns) - from_ns) / width, 2)

    parts = []
    for a, b in gaps:
        parts.append(
            f'<rect class="gap" x="{x(a)}" y="0" width="{max(0.5, x(b) - x(a))}" height="30">'
            f"<title>{_utc(a)} – {_utc(b)}</title></rect>"
        )
    for s in spans:
        parts.append(
            f'<rect class="span" x="{x(s.start_ns)}" y="0" '
            f'width="{max(0.5, x(s.end_ns) - x(s.start_ns))}" height="30">'
            f"<title>#{s.first}–#{s.last}: {_utc(s.start_ns)} – {_utc(s.end_ns)}</title></rect>"
        )
    for al in alerts:
        parts.append(
            f'<rect class="alert" x="{x(al.wall_ns)}" y="0" width="3" height="30">'
            f"<title>{html.escape(al.rule)}: {html.escape(al.kind)} {_utc(al.wall_ns)}</title>"
            "</rect>"
        )
    return (
        f'<svg id="timeline" viewBox="0 0 1000 30" preserveAspectRatio="none" role="img" '
        f'data-from-ms="{from_ns // 1_000_000}" data-to-ms="{to_ns // 1_000_000}">'
        f"{''.join(parts)}</svg>"
    )


def playback_page(
    lang: str,
    cameras: list[tuple[str, str]],
    unit: str,
    camera: str,
    from_ns: int,
    to_ns: int,
    timeline: str,
    recorded: bool,
) -> str:
    t = i18n.text
    esc = html.escape
    options = "".join(
        f'<option value="{esc(u)}/{esc(c)}"{" selected" if (u, c) == (unit, camera) else ""}>'
        f"{esc(u)} / {esc(c)}</option>"
        for u, c in cameras
    )
    form = (
        f'<form method="get" action="{PREFIX}/playback" class="toolbar">'
        f'<label>{t("camera", lang)}<select name="cam">{options}</select></label>'
        f'<label>{t("from_utc", lang)}<input name="from" type="datetime-local" step="1" '
        f'value="{_utc(from_ns).replace(" ", "T")}"></label>'
        f'<label>{t("to_utc", lang)}<input name="to" type="datetime-local" step="1" '
        f'value="{_utc(to_ns).replace(" ", "T")}"></label>'
        f'<button type="submit">{t("show", lang)}</button></form>'
    )
    if not recorded:
        return f"<h2>{t('playback', lang)}</h2>{form}{timeline}<p>{t('nothing', lang)}</p>"
    controls = "".join(
        f'<button type="button" data-action="{a}">{t("pb_" + a, lang)}</button>'
        for a in ("play", "back", "forward", "step")
    )
    return (
        f"<h2>{t('playback', lang)}</h2>{form}{timeline}"
        f'<section id="playback" data-unit="{esc(unit)}" data-camera="{esc(camera)}" '
        f'data-from="{from_ns / 1e9:.3f}" data-to="{to_ns / 1e9:.3f}" '
        f'aria-label="{t("playback", lang)}">'
        f'<video muted playsinline></video><div class="toolbar" role="group">{controls}'
        f'<output id="playback-time" aria-live="off"></output></div>'
        f"<p>{t('pb_help', lang)}</p></section>"
        f'<script src="{PREFIX}/static/console.js"></script>'
    )
