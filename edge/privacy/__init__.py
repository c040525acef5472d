"""Privacy masking: polygons hidden irreversibly, in place, before any other stage sees a frame.

:mod:`.rasterize` turns normalised polygons into conservative pixel masks and a cheap fill plan;
:mod:`.masker` (:class:`~edge.privacy.masker.PrivacyMasker`) applies them to I420 frames, luma and
chroma, solid or pixelated; :mod:`.preview` renders the masked view with outlines for installers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.privacy.faceblur import FaceBlurrer as FaceBlurrer
    from edge.privacy.masker import PrivacyMasker as PrivacyMasker
    from edge.privacy.native import NativeMasker as NativeMasker
    from edge.privacy.preview import render_preview as render_preview
    from edge.privacy.rasterize import plan_fill as plan_fill
    from edge.privacy.rasterize import polygon_mask as polygon_mask

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "FaceBlurrer": "faceblur",
    "NativeMasker": "native",
    "PrivacyMasker": "masker",
    "plan_fill": "rasterize",
    "polygon_mask": "rasterize",
    "render_preview": "preview",
}
__all__ = [
    "FaceBlurrer",
    "NativeMasker",
    "PrivacyMasker",
    "plan_fill",
    "polygon_mask",
    "render_preview",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
