"""The masked preview installers use to aim the camera and draw the privacy masks.

:func:`render_preview` masks a *copy* of the frame itself before drawing, so a preview can never
show what a mask hides, even when handed a raw frame. Outlines are drawn in
:data:`OUTLINE_RGB` (a colour no solid mask has) with the mask's name beside its first vertex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ..config import PrivacyMaskConfig
from ..frames import Frame
from .masker import PrivacyMasker
from .rasterize import to_pixels

#: Colour of the polygon outlines in a preview (magenta: never a natural scene colour).
OUTLINE_RGB = (255, 0, 255)
#: Colour of the mask names, drawn on a black box.
LABEL_RGB = (255, 255, 255)


def i420_to_rgb(frame: Frame) -> npt.NDArray[np.uint8]:
    """BT.601 limited-range I420 → RGB (``height × width × 3``), chroma upsampled by repetition."""
    y = frame.y.astype(np.float32) - 16.0
    u = np.repeat(np.repeat(frame.u, 2, axis=0), 2, axis=1).astype(np.float32) - 128.0
    v = np.repeat(np.repeat(frame.v, 2, axis=0), 2, axis=1).astype(np.float32) - 128.0
    rgb = np.empty((frame.height, frame.width, 3), dtype=np.float32)
    rgb[..., 0] = 1.164 * y + 1.596 * v
    rgb[..., 1] = 1.164 * y - 0.392 * u - 0.813 * v
    rgb[..., 2] = 1.164 * y + 2.017 * u
    out: npt.NDArray[np.uint8] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out


def render_preview(frame: Frame, masks: Sequence[PrivacyMaskConfig]) -> Image.Image:
    """The frame, masked, as an RGB image with each mask's outline and name drawn on it."""
    masked = frame.copy()
    PrivacyMasker(masks, frame.width, frame.height).apply(masked)
    image = Image.fromarray(i420_to_rgb(masked), mode="RGB")
    draw = ImageDraw.Draw(image)
    line = max(2, frame.width // 640)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(
            size=max(12, frame.height // 40)
        )
    except (OSError, TypeError):  # Pillow built without FreeType: the bitmap font
        font = ImageFont.load_default()
    for mask in masks:
        pts = [(float(x), float(y)) for x, y in to_pixels(mask.points, frame.width, frame.height)]
        draw.line([*pts, pts[0]], fill=OUTLINE_RGB, width=line, joint="curve")
        # The name sits inside the frame next to the first vertex, on a box so it stays readable.
        x = min(max(pts[0][0] + line, 0.0), frame.width - 1.0)
        y = min(max(pts[0][1] + line, 0.0), frame.height - 1.0)
        box = draw.textbbox((x, y), mask.name, font=font)
        dx = min(0.0, frame.width - 1.0 - box[2])
        dy = min(0.0, frame.height - 1.0 - box[3])
        box = (box[0] + dx - 2, box[1] + dy - 2, box[2] + dx + 2, box[3] + dy + 2)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x + dx, y + dy), mask.name, fill=LABEL_RGB, font=font)
    return image
