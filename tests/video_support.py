"""Helpers shared by the video tests: synthetic frames and independent judges (ffprobe, PyAV)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from edge.frames import Frame

from .conftest import tool

WALL0 = 1_785_000_000_000_000_000  # 2026-07-25 UTC, a fixed wall clock for reproducible paths


def moving_frames(
    width: int,
    height: int,
    count: int,
    fps: float,
    *,
    first_index: int = 0,
    skip: frozenset[int] = frozenset(),
) -> Iterator[Frame]:
    """Frames with a moving gradient and a square (content the encoder must really code).

    Frame ``i`` has index ``first_index + i`` and capture times ``i / fps``; indices in ``skip``
    are left out, as if the recording queue had dropped them.
    """
    period_ns = 1e9 / fps
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        if i in skip:
            continue
        t_ns = round(i * period_ns)
        frame = Frame.blank(
            width, height, index=first_index + i, mono_ns=5_000 + t_ns, wall_ns=WALL0 + t_ns
        )
        frame.y[...] = ((xx + yy + 3 * i) % 256).astype(np.uint8)
        s = max(8, width // 8)
        x0 = (5 * i) % max(1, width - s)
        frame.y[height // 4 : height // 4 + s, x0 : x0 + s] = 235
        frame.u[...] = np.uint8((64 + 2 * i) % 256)
        yield frame


def ffprobe_json(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def probe_stream(path: Path) -> dict[str, Any]:
    """Codec, size, frame rate and decoded frame count of the only video stream (ffprobe)."""
    info = ffprobe_json(
        path,
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
    )
    streams: list[dict[str, Any]] = info["streams"]
    assert len(streams) == 1
    return streams[0]


def probe_packets(path: Path) -> list[dict[str, Any]]:
    """Packets in file order with ``pts_time`` and ``flags`` (``K`` = keyframe), by ffprobe."""
    info = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
    packets: list[dict[str, Any]] = info["packets"]
    return packets


def nal_types(packet: bytes) -> list[int]:
    """NAL unit types of one length-prefixed (AVCC, as in MP4) H.264 access unit."""
    types = []
    pos = 0
    while pos + 4 <= len(packet):
        size = int.from_bytes(packet[pos : pos + 4], "big")
        types.append(packet[pos + 4] & 0x1F)
        pos += 4 + size
    assert pos == len(packet), "malformed AVCC access unit"
    return types


def first_packet_nal_types(path: Path) -> list[int]:
    """NAL types of the first video packet of an MP4 file, demuxed by PyAV."""
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                return nal_types(bytes(packet))
    raise AssertionError(f"{path}: no video packet")


def rate(text: str) -> Fraction:
    return Fraction(text)
