"""``edgectl camera probe``: read a camera for a few seconds and report, never showing a picture.

Installers use it to check a camera, or an RTSP address before writing it into the
configuration (``--source``); maintenance staff, who are not viewers, get rates, gaps, errors
and picture-free hints (black, frozen). A camera the daemon holds exclusively (the Pi camera)
cannot be probed while edged runs: use ``edgectl status`` then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import CameraConfig
from ..errors import ConfigError
from .common import add_config_args, load_config
from .mask import pick_camera


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "camera", help="check a camera: frame rate, gaps, errors (never a picture)"
    )
    csub = parser.add_subparsers(dest="camera_command", required=True, metavar="ACTION")
    probe = csub.add_parser(
        "probe", help="open the camera, read it for a few seconds and report how it behaves"
    )
    add_config_args(probe, data_dir=False)
    probe.add_argument("--camera", default=None, help="camera id (default: the first camera)")
    probe.add_argument(
        "--source",
        default=None,
        help='try this source instead of the configured one (e.g. "rtsp://user:pw@host/path")',
    )
    probe.add_argument(
        "--tls-ca-file",
        type=Path,
        default=None,
        help="with an rtsps:// --source: CA (or the camera's own certificate) to verify it with",
    )
    probe.add_argument(
        "--tls-fingerprint-sha256",
        default=None,
        help="with an rtsps:// --source: SHA-256 of the camera's pinned certificate",
    )
    probe.add_argument("--seconds", type=float, default=5.0, help="how long to read (default 5)")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.set_defaults(func=_probe)


def _camera(args: argparse.Namespace) -> CameraConfig:
    cam = pick_camera(load_config(args), args.camera)
    if args.source is None:
        return cam
    tls: dict[str, object] = {"tls_ca_file": None, "tls_fingerprint_sha256": None}
    if args.tls_ca_file is not None or args.tls_fingerprint_sha256 is not None:
        tls = {
            "tls_ca_file": args.tls_ca_file,
            "tls_fingerprint_sha256": args.tls_fingerprint_sha256,
        }
    elif args.source.startswith("rtsps://"):  # keep the configured camera's trust
        tls = {
            "tls_ca_file": cam.tls_ca_file,
            "tls_fingerprint_sha256": cam.tls_fingerprint_sha256,
        }
    try:
        return CameraConfig.model_validate({**cam.model_dump(), "source": args.source, **tls})
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]) for e in exc.errors())
        raise ConfigError(
            '--source must be "synthetic", "picamera2", "file:PATH", "rtsp://HOST/…", '
            f'"rtsps://HOST/…" (with --tls-ca-file or --tls-fingerprint-sha256) '
            f'or "v4l2:/dev/videoN": {reasons}'
        ) from None


def _probe(args: argparse.Namespace) -> int:
    from ..capture import open_source  # heavy (PyAV, picamera2): only for this command
    from ..capture.probe import probe

    if not 0 < args.seconds <= 600:
        raise ConfigError("--seconds must be between 0 and 600")
    cam = _camera(args)
    report = probe(open_source(cam), args.seconds)
    problems = report.problems()
    if args.json:
        out = dataclasses.asdict(report) | {"camera": cam.id, "ok": report.ok}
        print(json.dumps(out | {"problems": problems}, indent=2))
    else:
        print(f"camera {cam.id}: {report.source}")
        if report.input:
            print(f"  source sends:  {report.input}")
        print(f"  delivered:     {report.width}x{report.height} I420")
        fps = "-" if report.fps_measured is None else f"{report.fps_measured:.1f}"
        print(f"  frames:        {report.frames} in {report.seconds:.1f} s, {fps} fps measured")
        print(f"                 ({report.fps_configured:g} configured)")
        if report.first_frame_s is not None:
            print(f"  first frame:   after {report.first_frame_s:.2f} s")
        print(f"  state:         {report.state}: {report.reason}")
        for problem in problems:
            print(f"  PROBLEM:       {problem}")
        print("OK" if report.ok and not problems else "NOT OK")
    return 0 if report.ok and not problems else 2
