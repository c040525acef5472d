"""Masking a decoded picture in the source's own geometry and pixel format, before conversion.

A camera or file rarely sends exactly the configured frame (I420 at the configured size): a
1080p camera recorded at 720p, a 4:2:2 webcam, an RGB or grey file. Converting first and masking
after leaks: the scaler's filter reaches a few pixels across the mask's edge, so unmasked output
pixels next to a mask are computed partly from the private pixels behind it (measured: up to
12–18 of 219 luma levels). The rule is that no output pixel outside a mask may depend on an
input pixel inside it, so :class:`NativeMasker` overwrites the masked area of the *decoded*
picture, in its own layout, with one constant, before any scaling or conversion; the converted
frame is then masked again at the configured size by :class:`~edge.privacy.masker.PrivacyMasker`
as every frame is.

The masked area in source geometry is the conservative polygon mask at the source's size (see
:mod:`edge.privacy.rasterize`); a sample of a subsampled or packed plane (a chroma sample of
4:2:0 or 4:2:2, a YUYV pair, an NV12 UV pair) is overwritten whole when any pixel it covers is
masked, which is the chroma rule of the I420 masker applied to each layout.

The fill is the solid mask's grey converted into the source's format by FFmpeg itself, so the
grey looks the same after conversion; what matters for privacy is only that it is a constant.
Pixelated masks are filled solid here: a pixelation computed before scaling would be scaled
across the edge too. Formats whose samples are not whole bytes per pixel group (palettes, bit
streams, Bayer mosaics, hardware frames) are refused: their masked area cannot be written
without knowing their layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import MaskError
from . import rasterize
from .masker import MASK_CHROMA, MASK_LUMA

if TYPE_CHECKING:
    import av.video.frame

    from ..config import PrivacyMaskConfig

#: FFmpeg's AVCOL_RANGE_MPEG (limited) and AVCOL_RANGE_JPEG (full).
_LIMITED_RANGE = 1


def _block_any(mask: npt.NDArray[np.bool_], by: int, bx: int) -> npt.NDArray[np.bool_]:
    """``mask`` reduced to blocks of ``by × bx`` pixels (cut blocks at the border included)."""
    h, w = mask.shape
    if by == 1 and bx == 1:
        return mask
    nby, nbx = -(-h // by), -(-w // bx)
    padded = np.zeros((nby * by, nbx * bx), dtype=np.bool_)
    padded[:h, :w] = mask
    return np.asarray(padded.reshape(nby, by, nbx, bx).any(axis=(1, 3)), dtype=np.bool_)


class _PlaneFill:
    """Where one plane of a picture is overwritten: flat byte offsets into the plane's rows
    (``line_size`` bytes apart, set per picture) and the byte each gets."""

    def __init__(
        self,
        plane: int,
        groups: npt.NDArray[np.bool_],
        pattern: bytes,
    ) -> None:
        self.plane = plane
        self.rows, self.cols = np.nonzero(groups)  # masked sample groups
        self.group_bytes = len(pattern)
        self.row_bytes = groups.shape[1] * len(pattern)
        self.pattern = np.frombuffer(pattern, dtype=np.uint8)
        self._offsets: dict[int, npt.NDArray[np.intp]] = {}
        self._values = np.tile(self.pattern, self.rows.size)

    def offsets(self, line_size: int) -> npt.NDArray[np.intp]:
        cached = self._offsets.get(line_size)
        if cached is None:
            starts = self.rows.astype(np.intp) * line_size + self.cols * self.group_bytes
            cached = (starts[:, None] + np.arange(self.group_bytes, dtype=np.intp)).reshape(-1)
            self._offsets = {line_size: cached}  # frames of one stream share one line size
        return cached

    def apply(self, data: npt.NDArray[np.uint8], line_size: int) -> None:
        if self.rows.size:
            data[self.offsets(line_size)] = self._values


class NativeMasker:
    """The masks of one camera for pictures of one pixel format and size, as decoded.

    Immutable after ``__init__`` apart from a cache of byte offsets; used by the capture thread
    only. :meth:`masked_copy` never writes into the decoded picture (the decoder may still
    reference its buffers), it returns a masked copy.
    """

    def __init__(
        self, masks: Sequence[PrivacyMaskConfig], pixel_format: str, width: int, height: int
    ) -> None:
        import av

        self.pixel_format = pixel_format
        self.width = width
        self.height = height
        try:
            fmt = av.VideoFormat(pixel_format, width, height)
        except (ValueError, av.FFmpegError) as exc:
            raise MaskError(f"unknown pixel format {pixel_format!r}: {exc}") from None
        if fmt.has_palette or fmt.is_bit_stream or fmt.is_bayer or not fmt.components:
            raise MaskError(
                f"pixel format {pixel_format} cannot be masked before conversion "
                "(palette, bit stream, Bayer or hardware frames): configure the camera for a "
                "YUV or RGB format"
            )
        luma = rasterize.union_mask([m.points for m in masks], width, height)
        self.coverage = float(np.count_nonzero(luma)) / (width * height)
        grey = self._grey(pixel_format, width, height)
        self._fills: list[_PlaneFill] = []
        planes = sorted({c.plane for c in fmt.components})
        for plane in planes:
            comps = [c for c in fmt.components if c.plane == plane]
            gw = min(c.width for c in comps)
            gh = min(c.height for c in comps)
            bx, by = -(-width // gw), -(-height // gh)
            if len(planes) == 1:
                # Packed: every byte of a pixel group (an RGB pixel, a YUYV pair) on one plane.
                row_bytes = width * fmt.padded_bits_per_pixel // 8
            else:
                if any((c.width, c.height) != (gw, gh) for c in comps):
                    raise MaskError(f"pixel format {pixel_format}: unexpected plane layout")
                row_bytes = gw * sum(-(-c.bits // 8) for c in comps)
            if row_bytes % gw or row_bytes == 0:
                raise MaskError(f"pixel format {pixel_format}: samples are not whole bytes")
            group_bytes = row_bytes // gw
            pattern = grey[plane][:group_bytes]
            groups = _block_any(luma, by, bx)[:gh, :gw]
            self._fills.append(_PlaneFill(plane, groups, pattern))

    @staticmethod
    def _grey(pixel_format: str, width: int, height: int) -> list[bytes]:
        """The first row of each plane of a picture of the solid mask's grey in the format."""
        import av

        w, h = min(width, 16), min(height, 16)
        w, h = w + w % 2, h + h % 2
        data = np.full((h * 3 // 2, w), MASK_CHROMA, dtype=np.uint8)
        data[:h] = MASK_LUMA
        picture = av.VideoFrame.from_ndarray(data, format="yuv420p")
        picture.color_range = _LIMITED_RANGE
        try:
            grey = picture.reformat(format=pixel_format, interpolation="POINT")
        except (ValueError, av.FFmpegError) as exc:
            raise MaskError(f"pixel format {pixel_format} cannot be written: {exc}") from None
        return [bytes(plane)[: plane.line_size] for plane in grey.planes]

    def masked_copy(self, picture: av.video.frame.VideoFrame) -> av.video.frame.VideoFrame:
        """A copy of ``picture`` (this masker's format and size) with the masked area filled."""
        import av

        if (picture.format.name, picture.width, picture.height) != (
            self.pixel_format,
            self.width,
            self.height,
        ):
            raise MaskError(
                f"picture is {picture.format.name} {picture.width}x{picture.height} but the "
                f"masks were prepared for {self.pixel_format} {self.width}x{self.height}"
            )
        out = av.VideoFrame(picture.width, picture.height, picture.format.name)
        for fill in self._fills:
            src_plane, dst_plane = picture.planes[fill.plane], out.planes[fill.plane]
            rows = src_plane.height
            src = np.frombuffer(memoryview(src_plane), dtype=np.uint8)
            dst = np.frombuffer(memoryview(dst_plane), dtype=np.uint8)
            src_rows = src[: rows * src_plane.line_size].reshape(rows, src_plane.line_size)
            dst_rows = dst[: rows * dst_plane.line_size].reshape(rows, dst_plane.line_size)
            dst_rows[:, : fill.row_bytes] = src_rows[:, : fill.row_bytes]
            fill.apply(dst, dst_plane.line_size)
        # What the conversion reads to interpret the samples (the caller keeps the timing).
        out.color_range = picture.color_range
        out.colorspace = picture.colorspace
        return out
