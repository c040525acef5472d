"""Helpers for the vault tests: keys, a vault in a temporary directory, segments to store."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge.config import EncoderConfig, RecipientKem
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.vault import layout
from edge.vault.recipient_keys import RecipientPrivate, load_private, load_public, write_keypair
from edge.vault.retention import RetentionPolicy
from edge.vault.store import Vault
from edge.video.base import MediaSegment
from edge.video.encoder import SegmentEncoder

from .video_support import WALL0, moving_frames

SEG_NS = 2_000_000_000


@dataclass
class Csu:
    """A CSU recipient key pair kept outside the unit's data directory."""

    pub: Path
    key: Path

    def private(self) -> RecipientPrivate:
        return load_private(self.key)


def make_csu(where: Path, kem: RecipientKem = RecipientKem.X25519, name: str = "csu") -> Csu:
    pub, key = write_keypair(where, kem, name)
    return Csu(pub, key)


def open_vault(
    data_dir: Path,
    csu: Csu,
    *,
    device_id: str = "unit-1",
    retention_days: int = 30,
    max_bytes: int = 0,
    min_free_percent: float = 0.0,
    epoch_seconds: float = 600.0,
    clock: Callable[[], int] | None = None,
    disk_usage: Callable[[], tuple[int, int]] | None = None,
    extra: list[Csu] | None = None,
) -> Vault:
    recipients = [load_public(csu.pub)] + [load_public(c.pub) for c in extra or []]
    return Vault(
        layout.vault_dir(data_dir),
        device_id=device_id,
        signing_key=load_or_create_signing_key(keys_dir_of(data_dir)),
        recipients=recipients,
        policy=RetentionPolicy(retention_days, max_bytes, min_free_percent),
        epoch_seconds=epoch_seconds,
        clock=clock or (lambda: WALL0 + 3600 * 10**9),
        disk_usage=disk_usage,
    )


def fake_segment(camera: str, n: int, *, size: int = 2000, t0: int = WALL0) -> MediaSegment:
    """A segment with random payload: the vault does not look inside."""
    return MediaSegment(
        camera_id=camera,
        sequence=n,
        init=b"ftyp-moov" * 4,
        media=os.urandom(size),
        start_wall_ns=t0 + n * SEG_NS,
        end_wall_ns=t0 + (n + 1) * SEG_NS,
        frame_count=50,
        first_frame_index=50 * n,
    )


def encoded_segments(
    camera: str = "cam1", *, seconds: float = 4.0, width: int = 320, height: int = 240
) -> list[MediaSegment]:
    """Real H.264 CMAF segments from the project's encoder (1 s segments, 10 fps)."""
    fps = 10.0
    enc = SegmentEncoder(
        camera, width, height, fps, EncoderConfig(segment_seconds=1.0, preset="ultrafast")
    )
    out: list[MediaSegment] = []
    for frame in moving_frames(width, height, int(seconds * fps), fps):
        out.extend(enc.encode(frame))
    out.extend(enc.flush())
    return out


def decode_frames(data: bytes) -> list[np.typing.NDArray[np.uint8]]:
    """Every decoded picture of an MP4 held in memory, as I420 arrays (PyAV as the judge)."""
    frames: list[np.typing.NDArray[np.uint8]] = []
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        for frame in container.decode(video=0):
            frames.append(np.asarray(frame.to_ndarray(format="yuv420p"), dtype=np.uint8))
    return frames
