"""No output pixel outside a mask depends on an input pixel inside it, whatever the source sends.

Differential tests through the real conversion path: for every pixel format and size change the
capture path handles, two lossless files are written (raw video in NUT, so the decoder hands back
exactly the bytes written, in the source's own format) that differ *only* in the samples the
masks cover in the source's geometry (a chroma sample or a YUYV/NV12 pair counts as inside when
any pixel it covers is). Each is read through :class:`~edge.capture.pyav.PyAVSource` (FFmpeg's
scaler, as the daemon does) and masked by :class:`~edge.privacy.masker.PrivacyMasker` as the
pipeline does: outside the masks, the two frames must be bit-identical. The same holds for the
frame analytics receives (decimated from the masked frame into shared memory).

Every case also checks that the inputs really differ inside the masks, and one case checks that
the comparison sees the leak when the source does not mask before converting.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from edge.analytics.shm import FrameRing
from edge.capture.pyav import PyAVSource
from edge.config import MaskFill, PrivacyMaskConfig
from edge.frames import Frame
from edge.privacy import rasterize
from edge.privacy.masker import PrivacyMasker

FPS = 5
FULL_RANGE = 2  # FFmpeg's AVCOL_RANGE_JPEG
MASKS = [
    # A slanted façade and a small window: edges at every angle, off the pixel grid.
    PrivacyMaskConfig(
        name="facade", points=[(0.52, 0.13), (0.91, 0.07), (0.95, 0.61), (0.57, 0.55)]
    ),
    PrivacyMaskConfig(name="window", points=[(0.137, 0.71), (0.291, 0.693), (0.27, 0.883)]),
    PrivacyMaskConfig(
        name="shop",
        points=[(0.05, 0.05), (0.33, 0.08), (0.31, 0.41), (0.06, 0.39)],
        fill=MaskFill.PIXELATE,
        pixel_size=8,
    ),
]

#: Layout of each plane: (plane, horizontal and vertical pixels per sample group, bytes per
#: group). Written from the formats' definitions, independently of the code under test.
LAYOUTS: dict[str, list[tuple[int, int, int, int]]] = {
    "yuv420p": [(0, 1, 1, 1), (1, 2, 2, 1), (2, 2, 2, 1)],
    "yuvj420p": [(0, 1, 1, 1), (1, 2, 2, 1), (2, 2, 2, 1)],
    "yuv422p": [(0, 1, 1, 1), (1, 2, 1, 1), (2, 2, 1, 1)],
    "yuvj422p": [(0, 1, 1, 1), (1, 2, 1, 1), (2, 2, 1, 1)],
    "yuv444p": [(0, 1, 1, 1), (1, 1, 1, 1), (2, 1, 1, 1)],
    "yuvj444p": [(0, 1, 1, 1), (1, 1, 1, 1), (2, 1, 1, 1)],
    "yuv420p10le": [(0, 1, 1, 2), (1, 2, 2, 2), (2, 2, 2, 2)],
    "nv12": [(0, 1, 1, 1), (1, 2, 2, 2)],
    "yuyv422": [(0, 2, 1, 4)],
    "uyvy422": [(0, 2, 1, 4)],
    "rgb24": [(0, 1, 1, 3)],
    "bgr24": [(0, 1, 1, 3)],
    "bgra": [(0, 1, 1, 4)],
    "gbrp": [(0, 1, 1, 1), (1, 1, 1, 1), (2, 1, 1, 1)],
    "gray": [(0, 1, 1, 1)],
}

#: (pixel format, source size, configured size): every conversion the capture path meets.
#: "+full" marks a full-range source (FFmpeg's yuv420p with the JPEG range flag).
CASES = [
    ("yuv420p", (192, 144), (128, 96)),  # 1080p camera recorded at 720p (2/3)
    ("yuv420p", (96, 72), (128, 96)),  # upscaled
    ("yuv420p", (128, 96), (128, 96)),  # the configured frame itself: no conversion at all
    ("yuv420p", (191, 143), (128, 96)),  # odd sizes: chroma samples cut by the border
    ("yuv420p+full", (128, 96), (128, 96)),  # full range, same size
    ("yuv420p+full", (192, 144), (128, 96)),
    ("yuv422p", (128, 96), (128, 96)),  # 4:2:2 camera
    ("yuv422p+full", (192, 144), (128, 96)),
    ("yuv444p", (128, 96), (128, 96)),
    ("yuv420p10le", (128, 96), (128, 96)),  # 10-bit H.265 cameras
    ("nv12", (128, 96), (128, 96)),  # hardware decoders
    ("nv12", (192, 144), (128, 96)),
    ("yuyv422", (128, 96), (128, 96)),  # raw V4L2 webcams
    ("uyvy422", (192, 144), (128, 96)),
    ("rgb24", (128, 96), (128, 96)),
    ("bgr24", (192, 144), (128, 96)),
    ("bgra", (128, 96), (128, 96)),
    ("gbrp", (128, 96), (128, 96)),  # FFV1/PNG RGB
    ("gray", (128, 96), (128, 96)),
    ("gray", (192, 144), (128, 96)),
]

U8 = npt.NDArray[np.uint8]


def inside_groups(
    masks: list[PrivacyMaskConfig], width: int, height: int, gx: int, gy: int
) -> npt.NDArray[np.bool_]:
    """Sample groups (``gx × gy`` pixels each) that cover a pixel the masks touch."""
    luma = rasterize.union_mask([m.points for m in masks], width, height)
    rows, cols = -(-height // gy), -(-width // gx)
    padded = np.zeros((rows * gy, cols * gx), dtype=np.bool_)
    padded[:height, :width] = luma
    return np.asarray(padded.reshape(rows, gy, cols, gx).any(axis=(1, 3)), dtype=np.bool_)


def planes_pair(
    fmt: str, width: int, height: int, seed: int, masks: list[PrivacyMaskConfig] = MASKS
) -> tuple[list[U8], list[U8]]:
    """Random planes of a picture, and the same with other random bytes inside the masks."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for _plane, gx, gy, nbytes in LAYOUTS[fmt]:
        groups = (-(-height // gy), -(-width // gx))
        a = rng.integers(0, 256, (*groups, nbytes), dtype=np.uint8)
        if fmt.endswith("10le"):
            a[..., 1::2] &= 0x03  # 10 significant bits, little-endian
        b = a.copy()
        inside = inside_groups(masks, width, height, gx, gy)
        b[inside] ^= rng.integers(1, 256, (int(inside.sum()), nbytes), dtype=np.uint8)
        if fmt.endswith("10le"):
            b[..., 1::2] &= 0x03
        first.append(a.reshape(groups[0], -1))
        second.append(b.reshape(groups[0], -1))
    return first, second


def picture_of(fmt: str, width: int, height: int, planes: list[U8]) -> av.VideoFrame:
    """A PyAV picture holding exactly ``planes`` in ``fmt``'s own layout."""
    picture = av.VideoFrame(width, height, fmt)
    for (plane, *_), data in zip(LAYOUTS[fmt], planes, strict=True):
        dst = picture.planes[plane]
        rows = np.frombuffer(memoryview(dst), dtype=np.uint8)
        rows = rows[: dst.height * dst.line_size].reshape(dst.height, dst.line_size)
        rows[:, : data.shape[1]] = data
    return picture


def write_raw(
    path: Path, fmt: str, width: int, height: int, planes: list[U8], *, full_range: bool
) -> None:
    """Two frames of raw ``fmt`` video (Matroska keeps the range flag, NUT does not need it):
    the decoder returns these very bytes."""
    with av.open(str(path), "w", format="matroska" if full_range else "nut") as container:
        stream = container.add_stream("rawvideo", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, fmt
        if full_range:
            stream.codec_context.color_range = FULL_RANGE
        for _ in range(2):
            picture = picture_of(fmt, width, height, planes)
            if full_range:
                picture.color_range = FULL_RANGE
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decoded_format(path: Path) -> tuple[str, bool]:
    with av.open(str(path)) as container:
        for picture in container.decode(video=0):
            return str(picture.format.name), picture.color_range == FULL_RANGE
    raise AssertionError(f"{path}: no picture")


def read_masked(path: Path, width: int, height: int, *, native: bool = True) -> Frame:
    """The frame the pipeline would hand on: PyAVSource's conversion, then the masker."""
    source = PyAVSource(
        f"file:{path}", width, height, FPS, realtime=False, privacy_masks=MASKS if native else ()
    )
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None
    PrivacyMasker(MASKS, width, height).apply(frame)
    return frame


def outside_differences(a: Frame, b: Frame) -> int:
    """Samples outside the masks (luma, then U and V) that differ between two frames."""
    masker = PrivacyMasker(MASKS, a.width, a.height)
    luma, chroma = ~masker.luma_mask(), ~masker.chroma_mask()
    return int(
        np.count_nonzero(a.y[luma] != b.y[luma])
        + np.count_nonzero(a.u[chroma] != b.u[chroma])
        + np.count_nonzero(a.v[chroma] != b.v[chroma])
    )


def source_pair(tmp: Path, case: str, size: tuple[int, int]) -> tuple[Path, Path]:
    fmt, _, full = case.partition("+")
    first, second = planes_pair(fmt, *size, seed=len(case) * 1000 + size[0])
    assert any(not np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    paths = (tmp / f"a-{fmt}.mkv", tmp / f"b-{fmt}.mkv")
    for path, planes in zip(paths, (first, second), strict=True):
        write_raw(path, fmt, *size, planes, full_range=bool(full))
        # The source's own format and range, not a conversion made while writing the file.
        assert decoded_format(path) == (fmt, bool(full))
    return paths


@pytest.mark.parametrize(("fmt", "size", "configured"), CASES, ids=lambda v: str(v))
def test_private_pixels_do_not_reach_unmasked_output(
    tmp_path: Path, fmt: str, size: tuple[int, int], configured: tuple[int, int]
) -> None:
    path_a, path_b = source_pair(tmp_path, fmt, size)
    a = read_masked(path_a, *configured)
    b = read_masked(path_b, *configured)
    assert outside_differences(a, b) == 0
    # Inside the masks, the solid ones are one constant whatever the input.
    masker = PrivacyMasker([m for m in MASKS if m.fill == MaskFill.SOLID], *configured)
    assert np.array_equal(a.y[masker.luma_mask()], b.y[masker.luma_mask()])


@pytest.mark.parametrize("fmt", ["yuvj420p", "yuvj422p", "yuvj444p"])
def test_mjpeg_formats_are_masked_before_conversion(fmt: str) -> None:
    """MJPEG webcams decode to FFmpeg's yuvj formats, which a raw file cannot carry: the
    decoded pictures are built in memory and go through the source's own conversion."""
    width, height = 192, 144
    first, second = planes_pair(fmt, width, height, seed=7)
    frames = []
    for planes in (first, second):
        source = PyAVSource("file:/nonexistent", 128, 96, FPS, privacy_masks=MASKS)
        frame = source._convert(picture_of(fmt, width, height, planes), 0)
        PrivacyMasker(MASKS, 128, 96).apply(frame)
        frames.append(frame)
    assert outside_differences(*frames) == 0


def test_the_comparison_sees_a_leak(tmp_path: Path) -> None:
    """Masking only after the conversion (as before) leaks across the edge: the check sees it."""
    path_a, path_b = source_pair(tmp_path, "yuv422p", (192, 144))
    a = read_masked(path_a, 128, 96, native=False)
    b = read_masked(path_b, 128, 96, native=False)
    assert outside_differences(a, b) > 0


def test_masks_reloaded_on_the_source_apply_before_conversion(tmp_path: Path) -> None:
    """SIGHUP hands the new masks to the source too (``set_privacy_masks``)."""
    path_a, path_b = source_pair(tmp_path, "rgb24", (192, 144))
    frames = []
    for path in (path_a, path_b):
        source = PyAVSource(f"file:{path}", 128, 96, FPS, realtime=False)
        source.set_privacy_masks(MASKS)
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
        assert frame is not None
        PrivacyMasker(MASKS, 128, 96).apply(frame)
        frames.append(frame)
    assert outside_differences(*frames) == 0


@pytest.mark.parametrize("step", [2, 3, 4])
def test_analytics_downscale_depends_on_no_private_pixel(step: int) -> None:
    """The analytics frame is decimated from the masked frame: two frames that differ only
    inside the (solid) masks give the same analytics frame, every pixel of it."""
    width, height = 192, 144
    solid = [m for m in MASKS if m.fill == MaskFill.SOLID]
    first, second = planes_pair("yuv420p", width, height, seed=step, masks=solid)
    frames = []
    for planes in (first, second):
        frame = Frame.from_planes(planes[0], planes[1], planes[2], index=0, mono_ns=0, wall_ns=0)
        PrivacyMasker(solid, width, height).apply(frame)
        frames.append(frame)
    out = []
    ring = FrameRing.create(1, width // step // 2 * 2, height // step // 2 * 2)
    try:
        for frame in frames:
            ring.write_decimated(0, frame.y, frame.u, frame.v, step, index=0, mono_ns=0, wall_ns=0)
            out.append([p.copy() for p in ring.planes(0)])
    finally:
        ring.close()
    assert all(np.array_equal(x, y) for x, y in zip(*out, strict=True))
