"""Files, RTSP cameras and V4L2 devices through PyAV (FFmpeg).

Every decoded picture is converted to I420 at the configured size by FFmpeg's scaler
(``VideoFrame.reformat``) and copied into one contiguous :class:`~edge.frames.Frame` buffer.
When that conversion is not the identity (another size, pixel format or range), the privacy
masks are applied to the decoded picture first, in its own geometry and format
(:class:`~edge.privacy.native.NativeMasker`): the scaler's filter reaches across a mask's edge,
so masking only after it would let pixels next to a mask carry what the mask hides.

Files stand in for cameras: they are re-timed to the configured frame rate (frames are
repeated or skipped by presentation time, as a camera at that rate would have seen the scene),
paced in real time on the monotonic clock when ``realtime`` is set, and looped with ``loop``.
Live sources (RTSP, V4L2) are delivered as they arrive; their ``index`` is derived from the
presentation time at the configured rate, so frames the camera or the network lost show as
gaps. Their every failure is transient: a camera that reboots, a switch port that flaps or a
device unplugged for a moment must come back without a person touching the unit.

FFmpeg errors are translated by :func:`edge.errors.from_av` (the only translation point) and
raised without their cause attached, because FFmpeg's own message repeats the URL, which may
carry credentials: neither ``description``, nor an error, nor a log line ever shows them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import CaptureError, ConfigError, FrameBudgetError, MaskError, from_av
from ..frames import Frame, check_dimensions
from ..privacy.native import NativeMasker
from .base import FrameSource

if TYPE_CHECKING:
    from collections.abc import Iterator

    import av.container
    import av.video.frame
    import av.video.stream

    from ..config import PrivacyMaskConfig

log = logging.getLogger(__name__)

#: Seconds to wait for a live source to answer when opening, and for each read after that.
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
#: Seconds a back-off check waits for a camera's TCP port (it must not hold the loop up).
_ANSWER_TIMEOUT_S = 1.0
#: A file reader later than this re-anchors its clock instead of bursting to catch up.
_MAX_LATE_S = 1.0
#: FFmpeg's AVCOL_RANGE_MPEG: luma 16–235, what every frame of the firmware uses.
_LIMITED_RANGE = 1
#: FFmpeg's AVCOL_RANGE_JPEG: full range.
_FULL_RANGE = 2


def redact_url(url: str) -> str:
    """``url`` without user name, password, query or fragment (cameras put secrets in all)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _certificate_name(cert: x509.Certificate) -> str | None:
    """A name the certificate carries (first DNS name, else its common name), if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


class PyAVSource(FrameSource):
    """A ``file:PATH``, ``rtsp://…``/``rtsps://…`` or ``v4l2:/dev/videoN`` source."""

    def __init__(
        self,
        source: str,
        width: int,
        height: int,
        fps: float,
        *,
        loop: bool = False,
        realtime: bool = True,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        privacy_masks: Sequence[PrivacyMaskConfig] = (),
        tls_ca_file: Path | None = None,
        tls_fingerprint_sha256: str | None = None,
    ) -> None:
        check_dimensions(width, height)
        super().__init__(width, height, fps)
        # Replaced whole by set_privacy_masks (any thread); the capture thread reads the
        # reference once per picture and caches the NativeMasker built for it.
        self._privacy_masks: tuple[PrivacyMaskConfig, ...] = tuple(privacy_masks)
        self._native: (
            tuple[tuple[PrivacyMaskConfig, ...], str, tuple[int, int], NativeMasker] | None
        ) = None
        self.loop = loop
        self.realtime = realtime
        self._timeout = (open_timeout_s, read_timeout_s)
        self._format: str | None = None
        self._options: dict[str, str] = {}
        if source.startswith("file:"):
            self.kind = "file"
            self._url = source[len("file:") :]
            self.description = f"file {self._url}"
        elif source.startswith(("rtsp://", "rtsps://")):
            self.kind = "rtsp"
            self._url = source
            self.description = f"RTSP camera {redact_url(source)}"
            # TCP interleaving survives NAT and firewalls and loses no packets on a busy link;
            # "timeout" is FFmpeg's socket I/O timeout, in microseconds.
            self._options = {
                "rtsp_transport": "tcp",
                "timeout": str(round(read_timeout_s * 1e6)),
            }
            if source.startswith("rtsps://"):
                self._options |= self._tls_options(tls_ca_file, tls_fingerprint_sha256)
        elif source.startswith("v4l2:"):
            self.kind = "v4l2"
            self._url = source[len("v4l2:") :]
            self.description = f"V4L2 device {self._url}"
            self._format = "v4l2"
            self._options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
        else:
            raise ValueError(f"not a PyAV source: {redact_url(source)!r}")
        if self.kind != "rtsp" or not source.startswith("rtsps://"):
            tls_fingerprint_sha256 = None
        self._pin = (
            None
            if tls_fingerprint_sha256 is None
            else bytes.fromhex(tls_fingerprint_sha256.replace(":", ""))
        )
        self._pinned_dir: str | None = None  # holds the pinned certificate while open
        #: What the source actually sends ("h264 1920x1080 25 fps"), known once opened.
        self.input_description: str | None = None
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._frames: Iterator[av.video.frame.VideoFrame] | None = None
        self._converted: Frame | None = None
        self._reset_timeline()

    def _tls_options(self, ca_file: Path | None, fingerprint: str | None) -> dict[str, str]:
        """FFmpeg's TLS options for an rtsps camera: verification on, never off."""
        if (ca_file is None) == (fingerprint is None):
            raise ConfigError(
                f"{self.description}: the camera's certificate must be verified before its "
                "password is sent: give exactly one of tls_ca_file and tls_fingerprint_sha256"
            )
        # FFmpeg checks the chain and the host name of the URL; a pinned certificate is
        # fetched at each open and becomes the only trust anchor (see _pin_certificate).
        options = {"tls_verify": "1"}
        if ca_file is not None:
            options["ca_file"] = str(ca_file)
        return options

    @property
    def live(self) -> bool:
        return self.kind != "file"

    def _reset_timeline(self) -> None:
        self._slot = 0  # files: next output frame at the configured rate
        self._loop_offset_s = 0.0  # files: source time added by earlier passes of a loop
        self._pass_end_s = 0.0  # files: end of the latest decoded frame, in source time
        self._first_time: float | None = None
        self._current: tuple[float, av.video.frame.VideoFrame] | None = None
        self._ahead: tuple[float, av.video.frame.VideoFrame] | None = None
        self._forget_converted()  # files: untouched copy of a picture to repeat
        self._last_index = -1
        self._t0_ns: int | None = None

    def answers(self) -> bool | None:
        """RTSP: the camera accepts a TCP connection; V4L2: the device node exists."""
        if self.kind == "v4l2":
            return os.path.exists(self._url)
        if self.kind != "rtsp":
            return None
        parts = urlsplit(self._url)
        try:
            port = parts.port or (322 if parts.scheme == "rtsps" else 554)
        except ValueError:
            return None
        if not parts.hostname:
            return None
        try:
            with socket.create_connection((parts.hostname, port), timeout=_ANSWER_TIMEOUT_S):
                return True
        except OSError:
            return False

    # --- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str) -> CaptureError:
        import av

        context = f"{doing} {self.description}"
        if isinstance(exc, av.error.ExitError):
            # PyAV's timeout interrupts FFmpeg, which then only says "Immediate exit requested".
            limit = self._timeout[0] if doing == "opening" else self._timeout[1]
            context += f" (nothing received for {limit:g} s)"
        elif doing == "opening" and "ca_file" in self._options and getattr(exc, "errno", 0) == 5:
            # FFmpeg reports a refused certificate as a bare I/O error: say what it likely is.
            context += (
                " (TLS: the camera's certificate did not verify, "
                "or the URL's host is not a name in it)"
            )
        err = from_av(exc, context)
        message = str(err).replace(self._url, redact_url(self._url))
        if not isinstance(err, CaptureError):
            return CaptureError(message, transient=self.live)
        return CaptureError(message, transient=err.transient or self.live)

    # --- FrameSource -------------------------------------------------------------------------

    def open(self) -> None:
        import av  # imported here: edged with only synthetic or picamera2 cameras never loads it

        self.close()
        self._reset_timeline()
        if self.kind == "file":
            # A file that is not there (or not a file) stays so: a permanent error, not a
            # camera rebooting, so no retry (a probe said "retrying" five times before).
            path = Path(self._url)
            if not path.is_file():
                what = "Is a directory" if path.is_dir() else "No such file or directory"
                raise CaptureError(f"opening {self.description}: {what}", transient=False)
        if self._pin is not None:
            self._pin_certificate()
        try:
            container = av.open(
                self._url, format=self._format, options=self._options, timeout=self._timeout
            )
        except (av.FFmpegError, OSError) as exc:
            raise self._error(exc, "opening") from None
        if not container.streams.video:
            container.close()
            raise CaptureError(f"{self.description}: no video stream", transient=self.live)
        stream = container.streams.video[0]
        # Frame threads add latency, which a live camera must not have; files only gain.
        stream.thread_type = "AUTO" if self.kind == "file" else "SLICE"
        self._container, self._stream = container, stream
        self._frames = self._decode(container, stream)
        ctx = stream.codec_context
        rate = f" {float(stream.average_rate):g} fps" if stream.average_rate else ""
        self.input_description = f"{ctx.name} {ctx.width}x{ctx.height}{rate}"
        log.debug("%s: opened (%s)", self.description, self.input_description)

    def _pin_certificate(self) -> None:
        """Fetch the camera's certificate; when it is the pinned one, make it FFmpeg's only
        trust anchor.

        This first connection sends nothing but a TLS hello. The pin is not checked here
        alone: FFmpeg's own connection, which carries the password, must present a certificate
        that chains to exactly this one, so an impostor answering either connection fails.
        """
        assert self._pin is not None
        parts = urlsplit(self._url)
        host = parts.hostname or ""
        port = parts.port or 322
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only to read the certificate, compared below
        try:
            with (
                socket.create_connection((host, port), timeout=self._timeout[0]) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except OSError as exc:
            raise CaptureError(
                f"opening {self.description}: TLS connection failed: {exc}", transient=True
            ) from None
        if der is None or not hmac.compare_digest(hashlib.sha256(der).digest(), self._pin):
            seen = hashlib.sha256(der or b"").hexdigest()
            raise CaptureError(
                f"opening {self.description}: the camera's certificate (SHA-256 {seen}) is not "
                "the pinned one (tls_fingerprint_sha256); the password was not sent. A camera "
                "whose certificate was renewed needs the new fingerprint in the configuration",
                transient=True,
            )
        cert = x509.load_der_x509_certificate(der)
        self._pinned_dir = tempfile.mkdtemp(prefix="edge-camera-tls-")
        anchor = Path(self._pinned_dir) / "camera.pem"
        anchor.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._options["ca_file"] = str(anchor)
        name = _certificate_name(cert)
        if name is not None:  # the pin, not the URL's host, identifies the camera
            self._options["verifyhost"] = name

    @staticmethod
    def _decode(
        container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.video.frame.VideoFrame]:
        for packet in container.demux(stream):
            yield from packet.decode()

    def close(self) -> None:
        container, self._container = self._container, None
        self._frames = None
        self._stream = None
        self._current = self._ahead = None
        self._forget_converted()
        pinned, self._pinned_dir = self._pinned_dir, None
        if pinned is not None:
            shutil.rmtree(pinned, ignore_errors=True)
        if container is not None:
            try:
                container.close()
            except Exception as exc:  # noqa: BLE001 - closing must never raise
                log.debug("%s: error while closing: %s", self.description, exc)

    def _next_decoded(self) -> av.video.frame.VideoFrame | None:
        """The next decoded picture, None at the end of the stream."""
        import av

        if self._frames is None:
            raise CaptureError(f"{self.description}: read before open", transient=False)
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError) as exc:
            raise self._error(exc, "reading") from None

    def set_privacy_masks(self, masks: Sequence[PrivacyMaskConfig]) -> None:
        masks = tuple(masks)
        native = self._native
        if native is not None and masks:
            # Prepare for the pictures the source is sending now, here in the caller's thread
            # (the reload), so the capture thread's next picture needs no rasterising.
            # The capture thread only uses a masker built for the very masks it has read, so
            # a picture caught between these two assignments is masked right, if not as fast.
            fmt, size = native[1], native[2]
            with contextlib.suppress(MaskError):  # the capture thread reports it, with context
                self._native = (masks, fmt, size, NativeMasker(masks, fmt, *size))
        self._privacy_masks = masks

    def _mask_natively(self, picture: av.video.frame.VideoFrame) -> av.video.frame.VideoFrame:
        """``picture`` itself when converting it needs no scaling or conversion, else a copy
        with the privacy masks applied in its own geometry and format."""
        masks = self._privacy_masks
        fmt, width, height = picture.format.name, picture.width, picture.height
        if not masks or not self._needs_conversion(picture):
            return picture  # the conversion below is a copy: nothing crosses a mask's edge
        native = self._native
        if native is None or native[0] is not masks or native[1:3] != (fmt, (width, height)):
            try:
                masker = NativeMasker(masks, fmt, width, height)
            except MaskError as exc:
                raise CaptureError(f"{self.description}: {exc}", transient=False) from None
            native = self._native = (masks, fmt, (width, height), masker)
        return native[3].masked_copy(picture)

    def _convert(self, picture: av.video.frame.VideoFrame, index: int) -> Frame:
        """The picture as a frame of the configured size, in a buffer of the pool.

        The buffer is taken first, so a picture the budget refuses costs no conversion. A
        picture already I420 at the configured size in limited range (what cameras and files
        mostly send) is copied once, plane by plane, from the decoder's buffer into it; any
        other is converted once by FFmpeg's scaler, then copied. The decoder's own buffer is
        never masked in place: it is the reference the next pictures are decoded from.
        """
        import av

        frame = self.new_frame(index)
        try:
            if not self._needs_conversion(picture):
                _copy_planes(picture, frame)
                return frame
            picture = self._mask_natively(picture)
            # Frames are limited-range I420: full-range sources (MJPEG webcams, RGB, grey)
            # are converted, not relabelled. Bicubic, as the ffmpeg CLI scales by default.
            scaled = picture.reformat(
                width=self.width,
                height=self.height,
                format="yuv420p",
                interpolation="BICUBIC",
                src_color_range=picture.color_range or _LIMITED_RANGE,
                dst_color_range=_LIMITED_RANGE,
            )
            _copy_planes(scaled, frame)
        except (av.FFmpegError, ValueError) as exc:
            self._release(frame)
            raise self._error(exc, "converting a frame of") from None
        except BaseException:
            self._release(frame)
            raise
        return frame

    def _needs_conversion(self, picture: av.video.frame.VideoFrame) -> bool:
        return not (
            picture.format.name == "yuv420p"
            and (picture.width, picture.height) == (self.width, self.height)
            and picture.color_range != _FULL_RANGE
        )

    def _release(self, frame: Frame | None) -> None:
        if self.pool is not None:
            self.pool.release(frame)

    def read(self) -> Frame | None:
        return self._read_live() if self.live else self._read_file()

    def _read_live(self) -> Frame | None:
        picture = self._next_decoded()
        if picture is None:
            raise CaptureError(f"{self.description}: stream ended", transient=True)
        mono, wall = time.monotonic_ns(), time.time_ns()
        t: float | None = picture.time  # None when the stream carries no timestamps
        if t is None:
            index = self._last_index + 1
        else:
            if self._first_time is None:
                self._first_time = t
            index = max(self._last_index + 1, round((t - self._first_time) * self.fps))
        self._last_index = index
        frame = self._convert(picture, index)
        frame.mono_ns, frame.wall_ns = mono, wall
        return frame

    # --- files: re-timing, looping and pacing ------------------------------------------------

    def _file_picture(self) -> tuple[float, av.video.frame.VideoFrame] | None:
        """Next picture with its time in seconds since the start of the first pass."""
        picture = self._next_decoded()
        if picture is None and self.loop and self._pass_end_s > self._loop_offset_s:
            self._loop_offset_s = self._pass_end_s
            self._first_time = None
            self._restart()
            picture = self._next_decoded()
        if picture is None:
            return None
        t: float | None = picture.time  # None when the file carries no timestamps
        if self._first_time is None:
            self._first_time = t if t is not None else 0.0
        if t is None:  # no timestamps: the picture follows the previous one
            at = max(self._pass_end_s, self._loop_offset_s)
        else:
            at = self._loop_offset_s + t - self._first_time
        self._pass_end_s = max(self._pass_end_s, at + self._frame_duration(picture))
        return at, picture

    def _frame_duration(self, picture: av.video.frame.VideoFrame | None = None) -> float:
        if picture is not None and picture.duration and picture.time_base:
            return float(picture.duration * picture.time_base)
        rate = self._stream.average_rate if self._stream is not None else None
        return 1.0 / float(rate) if rate else 1.0 / self.fps

    def _restart(self) -> None:
        """Seek back to the start for the next pass of a loop (reopen if seeking fails)."""
        import av

        assert self._container is not None and self._stream is not None
        try:
            self._container.seek(0)
            self._stream.codec_context.flush_buffers()
            self._frames = self._decode(self._container, self._stream)
        except (av.FFmpegError, OSError) as exc:
            log.debug("%s: seek failed (%s), reopening", self.description, exc)
            offset, end = self._loop_offset_s, self._pass_end_s
            slot, t0, current = self._slot, self._t0_ns, self._current
            self.open()
            self._loop_offset_s, self._pass_end_s = offset, end
            self._slot, self._t0_ns, self._current = slot, t0, current

    def _read_file(self) -> Frame | None:
        slot_time = self._slot / self.fps
        # Show the picture nearest to this slot's time: the latest one presented before the
        # middle of the slot (timestamps in milliseconds make "at or before" too brittle).
        # Look one picture ahead.
        due = slot_time + 0.5 / self.fps
        while True:
            if self._ahead is None:
                self._ahead = self._file_picture()
                if self._ahead is None:
                    break
            if self._current is None or self._ahead[0] < due:
                self._current, self._ahead = self._ahead, None
                self._forget_converted()
            else:
                break
        if self._current is None:
            return None
        if self._ahead is None and due > self._pass_end_s:
            return None  # past the end of the last picture of a file that does not loop
        try:
            if self._converted is None:
                frame = self._convert(self._current[1], self._slot)
            else:  # the file is slower than the configured rate: show the picture again
                frame = self.new_frame(self._slot)
                np.copyto(frame.data, self._converted.data)
        except FrameBudgetError:
            self._pace(slot_time)  # the slot passes as if it had been shown
            self._slot += 1
            raise
        # Masking works in place on the frame we return: when the next slot shows the same
        # picture, keep an untouched copy for it (only then: a copy per frame is not free).
        # With the budget spent, nothing is kept and the picture is converted again.
        next_due = (self._slot + 1.5) / self.fps
        if self._converted is None and (self._ahead is None or self._ahead[0] >= next_due):
            self._converted = self._spare_copy(frame)
        # The slot's time on the paced clock is the capture time the recording follows (read
        # faster than real time, the file still runs at fps).
        frame.mono_ns, frame.wall_ns = self._pace(slot_time), time.time_ns()
        self._slot += 1
        return frame

    def _spare_copy(self, frame: Frame) -> Frame | None:
        if self.pool is None:
            return frame.copy()
        spare = self.pool.acquire(frame.width, frame.height, frame.index)
        if spare is not None:
            np.copyto(spare.data, frame.data)
        return spare

    def _forget_converted(self) -> None:
        converted, self._converted = self._converted, None
        self._release(converted)

    def _pace(self, slot_time: float) -> int:
        """Wait for the slot (when realtime); return its time on the monotonic clock."""
        now = time.monotonic_ns()
        due_offset = round(slot_time * 1e9)
        if self._t0_ns is None or (
            self.realtime and now - (self._t0_ns + due_offset) > _MAX_LATE_S * 1e9
        ):
            self._t0_ns = now - due_offset
        due = self._t0_ns + due_offset
        if self.realtime and due > now:
            time.sleep((due - now) / 1e9)
        return due


def _copy_planes(picture: av.video.frame.VideoFrame, frame: Frame) -> None:
    """Copy an I420 picture of the frame's size into the frame: one pass over each plane,
    reading FFmpeg's buffers in place (their lines may be padded)."""
    for plane, dst in zip(picture.planes, (frame.y, frame.u, frame.v), strict=True):
        rows, cols = dst.shape
        src = np.frombuffer(memoryview(plane), dtype=np.uint8)
        if plane.line_size == cols:  # unpadded lines: one contiguous copy
            np.copyto(dst.reshape(-1), src[: rows * cols])
        else:
            np.copyto(dst, src[: rows * plane.line_size].reshape(rows, plane.line_size)[:, :cols])
