"""Capture: video sources producing I420 frames, and the thread that reads them.

``open_source(cam)`` builds the :class:`~edge.capture.base.FrameSource` a camera's
configuration names; :class:`~edge.capture.loop.CaptureLoop` runs it in a thread with
reconnection. Implementations: :mod:`.synthetic` (deterministic street scene with ground
truth), :mod:`.pyav` (files, RTSP, V4L2 through FFmpeg), :mod:`.picamera2` (the Pi camera).
picamera2 and PyAV are imported only when a camera uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

from ..config import CameraConfig
from .base import FrameSource


def open_source(cam: CameraConfig, *, realtime: bool = True) -> FrameSource:
    """The source for ``cam.source`` (not opened yet).

    ``realtime=False`` lets synthetic scenes and files run as fast as they are read (tests,
    benchmarks); the daemon keeps the default. A synthetic scene places its intruder inside
    the first privacy mask when ``cam.synthetic.masked_intruder`` is set.
    """
    source = cam.source
    if source == "synthetic":
        from .synthetic import SyntheticSource

        scene = cam.synthetic
        polygon = None
        if scene.masked_intruder and cam.privacy_masks:
            polygon = list(cam.privacy_masks[0].points)
        return SyntheticSource(
            cam.width,
            cam.height,
            cam.fps,
            seed=scene.seed,
            pedestrians=scene.pedestrians,
            vehicles=scene.vehicles,
            intruder_polygon=polygon,
            realtime=realtime,
        )
    if source == "picamera2":
        from .picamera2 import Picamera2Source

        return Picamera2Source(cam.width, cam.height, cam.fps)
    from .pyav import PyAVSource

    return PyAVSource(
        source,
        cam.width,
        cam.height,
        cam.fps,
        loop=cam.loop_file,
        realtime=realtime,
        privacy_masks=cam.privacy_masks,
        tls_ca_file=cam.tls_ca_file,
        tls_fingerprint_sha256=cam.tls_fingerprint_sha256,
    )


if TYPE_CHECKING:
    from edge.capture.loop import CaptureLoop as CaptureLoop
    from edge.capture.loop import CaptureState as CaptureState
    from edge.capture.loop import CaptureStats as CaptureStats
    from edge.capture.probe import ProbeReport as ProbeReport
    from edge.capture.props import Prop as Prop
    from edge.capture.pyav import PyAVSource as PyAVSource
    from edge.capture.synthetic import SyntheticSource as SyntheticSource

#: public name -> the module defining it (imported on first use); FrameSource and open_source
#: are defined or imported here.
_EXPORTS = {
    "Prop": "props",
    "CaptureLoop": "loop",
    "CaptureState": "loop",
    "CaptureStats": "loop",
    "ProbeReport": "probe",
    "PyAVSource": "pyav",
    "SyntheticSource": "synthetic",
}
__all__ = [
    "CaptureLoop",
    "CaptureState",
    "CaptureStats",
    "FrameSource",
    "ProbeReport",
    "Prop",
    "PyAVSource",
    "SyntheticSource",
    "open_source",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
