"""``edge-csu open --overlay-masks``: a review copy with the privacy masks in force drawn on it.

The evidence clip itself is never touched (it is remuxed bit for bit and keeps its Media
Signing); the overlay is a second, re-encoded file, ``<clip>.masks.mp4``, for the reviewing
officer: each frame shows the outlines and names of the masks its segment committed to at
that instant (from the signed commitments and the signed mask-set records of the bundle), or
a caption saying why none can be shown. Clip time 0 is the first exported segment's signed
start (how :func:`edge.vault.remux.remux` lays the clip out).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import ImageDraw

from ..config import PrivacyMaskConfig
from ..errors import from_av
from ..frames import Frame
from ..privacy.commitment import MaskSet
from ..privacy.preview import LABEL_RGB, render_preview
from ..vault.maskhistory import MaskSpan


def overlay_path(clip: Path) -> Path:
    return clip.with_name(clip.stem + ".masks" + clip.suffix)


def _configs(mask_set: MaskSet) -> list[PrivacyMaskConfig]:
    return [PrivacyMaskConfig.model_validate(dict(m)) for m in mask_set.masks]


def _span_at(spans: Sequence[MaskSpan], wall_ns: int) -> MaskSpan | None:
    found = None
    for span in spans:
        if span.from_ns <= wall_ns:
            found = span
        if span.from_ns <= wall_ns < span.to_ns:
            return span
    return found


def write_overlay(
    clip: Path, spans: Sequence[MaskSpan], origin_ns: int, out: Path | None = None
) -> tuple[Path, int]:
    """Write the review copy of ``clip``; returns its path and number of frames."""
    target = out or overlay_path(clip)
    tmp = target.with_name(f".{target.name}.partial.mp4")
    count = 0
    try:
        with av.open(str(clip)) as src, av.open(str(tmp), "w", format="mp4") as dst:
            ins = src.streams.video[0]
            ost = dst.add_stream("libx264", rate=ins.average_rate or 25)
            ost.width, ost.height = ins.codec_context.width, ins.codec_context.height
            ost.pix_fmt = "yuv420p"
            if ins.time_base is not None:  # the copy keeps the clip's timeline, gaps included
                ost.time_base = ins.time_base
                ost.codec_context.time_base = ins.time_base
            ost.options = {"preset": "veryfast", "crf": "20"}
            for decoded in src.decode(ins):
                at = origin_ns + round(float(decoded.time or 0.0) * 1e9)
                span = _span_at(spans, at)
                planes = decoded.to_ndarray(format="yuv420p")
                frame = Frame(
                    np.ascontiguousarray(planes, dtype=np.uint8).reshape(-1),
                    decoded.width,
                    decoded.height,
                    count,
                    0,
                    at,
                )
                masks = _configs(span.mask_set) if span and span.mask_set else []
                image = render_preview(frame, masks)
                caption = span.describe() if span else "no mask commitment covers this frame"
                draw = ImageDraw.Draw(image)
                draw.rectangle((0, 0, image.width, 14), fill=(0, 0, 0))
                draw.text((2, 1), caption[:160], fill=LABEL_RGB)
                rgb = np.asarray(image, dtype=np.uint8)
                out_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    format="yuv420p"
                )
                out_frame.pts = decoded.pts
                out_frame.time_base = decoded.time_base
                for packet in ost.encode(out_frame):
                    dst.mux(packet)
                count += 1
            for packet in ost.encode(None):
                dst.mux(packet)
        tmp.replace(target)
    except Exception as exc:  # every FFmpeg failure is translated
        raise from_av(exc, f"writing the mask overlay of {clip}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target, count
