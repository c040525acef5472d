"""``edgectl analytics preview`` and ``edgectl analytics calibrate``: what the rules look at,
drawn on the masked preview picture, and the ground-plane calibration for installers.

The picture is the privacy preview's (``edgectl mask preview``): asked of edged or read from
the camera with ``--direct``, always under the unit's installed masks, role-checked (installer)
and written to the signed audit log first. Lines, zones and the ground grid come from
``--config`` (a candidate file may be tried before it is installed: drawing a rule reveals
nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from .. import fsutil
from ..analytics.ground import area_m2, homography, to_ground
from ..analytics.overlay import draw_rules
from ..config import CameraAnalyticsConfig, EdgeConfig, GroundCalibration
from ..errors import ConfigError
from .common import load_config
from .mask import _preview_direct, _preview_from_daemon, pick_camera


def _masked_picture(args: argparse.Namespace, cfg: EdgeConfig, out: Path) -> None:
    """The masked preview PNG of the chosen camera at ``out`` (the privacy preview's path)."""
    cam = pick_camera(cfg, args.camera)
    # What the mask preview says of the picture goes to stderr: stdout is this command's own
    # report (JSON with --json).
    with contextlib.redirect_stdout(sys.stderr):
        if args.direct:
            _preview_direct(cfg, cam, out, demo=args.demo)
        else:
            _preview_from_daemon(cfg, cam, out)


def _overlay(out: Path, rules: CameraAnalyticsConfig) -> None:
    with Image.open(out) as png:
        image = png.convert("RGB")
    draw_rules(image, rules)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    # The mask preview's own file mode is kept: the picture stays as private as it was made.
    fsutil.write_atomic(out, buf.getvalue(), mode=out.stat().st_mode & 0o777)


def preview(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    cam = pick_camera(cfg, args.camera)
    rules = cfg.analytics.for_camera(cam.id)
    _masked_picture(args, cfg, args.out)
    _overlay(args.out, rules)
    parts = [
        f"{len(rules.lines)} line(s)",
        f"{sum(len(z) for z in _zones(rules).values())} zone(s)",
        "ground grid (1 m)" if rules.ground is not None else "no ground calibration",
    ]
    print(f"{args.out}: rules of camera {cam.id} drawn: {', '.join(parts)}")
    for line in rules.lines:
        (ax, ay), (bx, by) = line.points
        print(
            f"  line {line.name}: ({ax:g}, {ay:g}) -> ({bx:g}, {by:g}); forward = the arrow's side"
            f" (a quarter turn clockwise from the line as drawn), hysteresis {line.hysteresis:g}"
        )
    return 0


def _zones(rules: CameraAnalyticsConfig) -> dict[str, list[Any]]:
    return {
        "gathering": rules.gatherings,
        "crowd": rules.crowd_movements,
        "wrong-way": rules.wrong_ways,
        "parking": rules.parkings,
        "intrusion": rules.intrusions,
        "abandoned": rules.abandoned_objects,
        "fallen": rules.fallen_persons,
        "density": rules.densities,
        "fire": rules.fires,
    }


def _points(text: str, what: str) -> list[tuple[float, float]]:
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in text.split()]
    except ValueError:
        raise ConfigError(f"{what}: expected four points 'x,y x,y x,y x,y'") from None
    if len(pts) != 4 or any(len(p) != 2 for p in pts):
        raise ConfigError(f"{what}: expected four points 'x,y x,y x,y x,y'")
    return [(p[0], p[1]) for p in pts]


def _world(args: argparse.Namespace) -> list[tuple[float, float]]:
    if (args.world is None) == (args.rect is None):
        raise ConfigError("give the ground positions: --world 'X,Y ...' or --rect WIDTH,DEPTH")
    if args.world is not None:
        return _points(args.world, "--world")
    try:
        width, depth = (float(v) for v in args.rect.split(","))
    except ValueError:
        raise ConfigError("--rect: expected WIDTH,DEPTH in metres (e.g. 6,10)") from None
    if width <= 0 or depth <= 0:
        raise ConfigError("--rect: width and depth must be positive")
    # The image points go round the rectangle: first -> second is its width, second -> third
    # its depth (a zebra crossing, a parking bay, kerb stones of known length).
    return [(0.0, 0.0), (width, 0.0), (width, depth), (0.0, depth)]


def calibrate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    cam = pick_camera(cfg, args.camera)
    image = _points(args.image, "--image")
    world = _world(args)
    try:
        ground = GroundCalibration(image=image, world=world)
        hm = homography(image, world)
    except ValueError as exc:
        raise ConfigError(f"calibration refused: {exc}") from None
    error = max(
        abs(a - b)
        for p, q in zip(image, world, strict=True)
        for a, b in zip(to_ground(hm, p), q, strict=True)
    )
    rules = cfg.analytics.for_camera(cam.id).model_copy(update={"ground": ground})
    areas: dict[str, float | str] = {}
    for kind, items in _zones(rules).items():
        for rule in items:
            try:
                areas[f"{kind}: {rule.name}"] = round(area_m2(hm, rule.zone), 1)
            except ValueError:
                areas[f"{kind}: {rule.name}"] = "reaches the horizon: draw it on the ground"
    toml = (
        "[analytics.cameras.ground]\n"
        f"image = [{', '.join(f'[{x:g}, {y:g}]' for x, y in image)}]\n"
        f"world = [{', '.join(f'[{x:g}, {y:g}]' for x, y in world)}]\n"
    )
    if args.out is not None:
        _masked_picture(args, cfg, args.out)
        _overlay(args.out, rules)
    if args.json:
        doc = {
            "camera": cam.id,
            "image": image,
            "world": world,
            "homography": hm.tolist(),
            "max_error_m": error,
            "zone_areas_m2": areas,
            "toml": toml,
        }
        print(json.dumps(doc))
        return 0
    print(f"camera {cam.id}: ground calibrated from four points (error {error:.2g} m)")
    for name, area in areas.items():
        print(f"  {name}: {area} m²" if isinstance(area, float) else f"  {name}: {area}")
    if args.out is not None:
        print(f"{args.out}: masked preview with the ground grid (1 m) and the rules")
    print("add to the camera's [[analytics.cameras]] section:")
    print(toml, end="")
    return 0
