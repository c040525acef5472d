"""``edgectl mask preview --out FILE`` and ``edgectl mask show``: privacy masks for installers.

``preview`` reads one frame from the configured camera, masks it and writes a PNG with the
polygon outlines and names (the installer's view while aiming the camera and drawing masks;
nothing hidden by a mask ever appears in it). ``show`` prints no picture: each mask's name,
fill, vertex count and coverage at the camera's resolution, so maintenance staff can check the
masks without seeing the scene.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

from .. import control
from ..config import CameraConfig, EdgeConfig
from ..errors import CaptureError, ConfigError
from ..privacy.masker import PrivacyMasker, mask_pixels
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "mask", help="privacy masks: masked preview for installers, coverage summary"
    )
    msub = parser.add_subparsers(dest="mask_command", required=True, metavar="ACTION")
    preview = msub.add_parser(
        "preview", help="write a PNG of one masked frame with the mask outlines and names"
    )
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.add_argument(
        "--direct",
        action="store_true",
        help="read the camera directly instead of asking edged (commissioning, edged stopped)",
    )
    _camera_args(preview)
    preview.set_defaults(func=_preview)
    show = msub.add_parser("show", help="list each mask with its vertex count and coverage")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    _camera_args(show)
    show.set_defaults(func=_show)


def _camera_args(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, data_dir=False)
    parser.add_argument("--camera", default=None, help="camera id (default: the first camera)")


def pick_camera(cfg: EdgeConfig, camera_id: str | None) -> CameraConfig:
    """The camera named ``camera_id``, or the first one."""
    if camera_id is None:
        return cfg.cameras[0]
    for cam in cfg.cameras:
        if cam.id == camera_id:
            return cam
    known = ", ".join(c.id for c in cfg.cameras)
    raise ConfigError(f"no camera {camera_id!r} in the configuration (cameras: {known})")


def _preview(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    cam = pick_camera(cfg, args.camera)
    if not args.direct:
        return _preview_from_daemon(cfg, cam, args.out)
    from ..capture import open_source  # heavy (PyAV, picamera2): only for this action
    from ..privacy.preview import render_preview

    source = open_source(cam, realtime=False)
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    if frame is None:
        raise CaptureError(f"camera {cam.id}: {source.description} gave no frame", transient=False)
    image = render_preview(frame, cam.privacy_masks)
    out: Path = args.out
    tmp = out.with_name(out.name + ".tmp")
    image.save(tmp, format="PNG")
    tmp.replace(out)
    masker = PrivacyMasker(cam.privacy_masks, cam.width, cam.height)
    print(
        f"{out}: camera {cam.id}, {frame.width}x{frame.height}, "
        f"{len(cam.privacy_masks)} mask(s) covering {100.0 * masker.coverage:.2f} %"
    )
    return 0


def _preview_from_daemon(cfg: EdgeConfig, cam: CameraConfig, out: Path) -> int:
    """Ask edged (installer role, audited) for its latest frame under the masks of ``cfg``.

    edged holds masked frames only, so masks drawn here can add to what is hidden but never
    reveal what the running masks hide: to shrink a mask, apply the configuration
    (``systemctl reload edged``) and preview again.
    """
    masks = [m.model_dump(mode="json") for m in cam.privacy_masks]
    result = control.call(cfg.control.socket, "preview", {"camera": cam.id, "masks": masks})
    png = base64.b64decode(result["png_base64"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(png)
    tmp.replace(out)
    print(
        f"{out}: camera {cam.id} as edged sees it, {len(masks)} mask(s) drawn, "
        f"covering {result['coverage_percent']:.2f} %"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    cam = pick_camera(load_config(args), args.camera)
    rows = []
    total = cam.width * cam.height
    for mask in cam.privacy_masks:
        covered = int(mask_pixels(mask, cam.width, cam.height).sum())
        rows.append(
            {
                "name": mask.name,
                "fill": mask.fill.value,
                "vertices": len(mask.points),
                "coverage_percent": round(100.0 * covered / total, 2) if covered else 0,
            }
        )
    union = PrivacyMasker(cam.privacy_masks, cam.width, cam.height).coverage
    if args.json:
        print(
            json.dumps(
                {
                    "camera": cam.id,
                    "width": cam.width,
                    "height": cam.height,
                    "masks": rows,
                    "coverage_percent": round(100.0 * union, 2),
                }
            )
        )
        return 0
    print(f"camera {cam.id} ({cam.width}x{cam.height}): {len(rows)} privacy mask(s)")
    for row in rows:
        # A mask left outside the frame (a typo, a resolution change) hides nothing: say so.
        hint = "  <- hides nothing: outside the frame?" if row["coverage_percent"] == 0 else ""
        print(
            f"  {row['name']:32} {row['fill']:8} {row['vertices']:3} vertices "
            f"{row['coverage_percent']:6.2f} %{hint}"
        )
    print(f"  {'all masks together':32} {'':8} {'':12} {100.0 * union:6.2f} %")
    return 0
