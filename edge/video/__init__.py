"""Public API of :mod:`edge.video` (see ``__all__``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.video.base import MediaSegment as MediaSegment
    from edge.video.base import SegmentSink as SegmentSink
    from edge.video.cmaf import SegmentPlan as SegmentPlan
    from edge.video.dirsink import DirectorySink as DirectorySink
    from edge.video.encoder import SegmentEncoder as SegmentEncoder

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "DirectorySink": "dirsink",
    "MediaSegment": "base",
    "SegmentEncoder": "encoder",
    "SegmentPlan": "cmaf",
    "SegmentSink": "base",
}
__all__ = ["DirectorySink", "MediaSegment", "SegmentEncoder", "SegmentPlan", "SegmentSink"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
