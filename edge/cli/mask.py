"""``edgectl mask preview --out FILE`` and ``edgectl mask show``: privacy masks for installers.

``preview`` reads one frame from the configured camera, masks it and writes a PNG with the
polygon outlines and names (the installer's view while aiming the camera and drawing masks;
nothing hidden by a mask ever appears in it). Either way it applies the unit's *installed*
masks, to which the masks of ``--config`` (candidates) can only add; it needs the installer
role and is written to the unit's signed audit log before any picture is read. ``show``
prints no picture: each mask's name, fill, vertex count and coverage at the camera's
resolution, so maintenance staff can check the masks without seeing the scene.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path
from typing import Any

from .. import config as config_mod
from .. import control
from ..config import CameraConfig, EdgeConfig, PrivacyMaskConfig
from ..errors import CaptureError, ConfigError, EdgeError, VaultError
from ..privacy.masker import PrivacyMasker, mask_pixels
from ..unitkeys import keys_dir_of, load_signing_key
from ..vault import layout
from ..vault.audit import AuditLog
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
    return _preview_direct(cfg, cam, args.out)


def _own_roles(installed: EdgeConfig) -> set[control.Role]:
    """The roles this process holds, by the rule the control socket applies to its callers."""
    gid = os.getgid()
    me = control.Caller(os.getpid(), os.getuid(), gid, frozenset({gid, *os.getgroups()}))
    return control.roles_of(
        me,
        control.resolve_group(installed.control.maint_group),
        control.resolve_group(installed.control.install_group),
    )


def _preview_direct(candidate: EdgeConfig, cam: CameraConfig, out: Path) -> int:
    """Read the camera itself (commissioning, edged stopped) under the unit's installed masks.

    The camera, its masks, the roles and the audit log all come from the *installed*
    configuration (``/etc/edge/edge.toml``, as edged reads it), never from ``--config``: a
    candidate file without masks, or naming another data directory, must not unmask the scene
    or escape the audit. The candidate's masks for the same camera are added on top.
    """
    installed, origin = config_mod.load(None)
    if control.Role.INSTALL not in _own_roles(installed):
        raise EdgeError(
            f"permission denied: the preview needs the install role (root or group "
            f"{installed.control.install_group!r})"
        )
    live = next((c for c in installed.cameras if c.id == cam.id), None)
    if live is None:
        raise ConfigError(
            f"camera {cam.id!r} is not in the installed configuration ({origin}): install it "
            "first, a preview always applies the installed masks"
        )
    masks: list[PrivacyMaskConfig] = list(live.privacy_masks)
    masks += [m for m in cam.privacy_masks if m not in masks]
    audit = _audit_log(installed)
    from ..capture import open_source  # heavy (PyAV, picamera2): only for this action
    from ..privacy.preview import render_preview

    # The source masks before it scales or converts, with every mask the preview shows.
    source = open_source(live.model_copy(update={"privacy_masks": masks}), realtime=False)
    # Written before the camera is read: no picture without its record.
    audit.append(
        "mask-preview",
        {
            "camera": live.id,
            "direct": True,
            "source": source.description,
            "installed_masks": [m.name for m in live.privacy_masks],
            "candidate_masks": [m.name for m in masks[len(live.privacy_masks) :]],
            "pid": os.getpid(),
        },
    )
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    if frame is None:
        raise CaptureError(f"camera {live.id}: {source.description} gave no frame", transient=False)
    image = render_preview(frame, masks)
    tmp = out.with_name(out.name + ".tmp")
    image.save(tmp, format="PNG")
    tmp.replace(out)
    masker = PrivacyMasker(masks, frame.width, frame.height)
    print(
        f"{out}: camera {live.id}, {frame.width}x{frame.height}, {len(live.privacy_masks)} "
        f"installed + {len(masks) - len(live.privacy_masks)} candidate mask(s) covering "
        f"{100.0 * masker.coverage:.2f} %"
    )
    return 0


def _audit_log(installed: EdgeConfig) -> AuditLog:
    """The unit's signed audit log, ready to append to, or a refusal naming the next step."""
    data = installed.unit.data_dir
    try:
        key = load_signing_key(keys_dir_of(data))
    except VaultError as exc:
        raise VaultError(
            f"the preview cannot be audited: {exc}; start edged once (or enrol the unit) so the "
            "unit has its signing key, and run this as root"
        ) from None
    return AuditLog(layout.vault_dir(data) / "audit.log", installed.unit.id, key)


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
