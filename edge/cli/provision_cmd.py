"""``edgectl provision``: give a freshly flashed unit its identity and cameras (installers).

edged does the work (installer role, written to the signed audit log, see
``edge/app/provision.py``): this command only gathers the request and prints the outcome.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from edge import configschema
from edge.app import control

from ..clihelp import add_command
from ..errors import ConfigError
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "provision",
        help="give a freshly flashed unit its identity and cameras",
        description="Give a freshly flashed (unprovisioned) unit its identity: unit id, site "
        "and cameras are written to the per-unit file on the data partition "
        "(<data_dir>/unit.toml, laid over /etc/edge/edge.toml), then the unit's keys (made "
        "once, never replaced) and certificate requests for that id are written, and edged "
        "starts recording under it. Needs the installer role; every attempt is written to the "
        "signed audit log. A unit that has an identity keeps it unless its current id is "
        "typed again with --replace-identity.",
        example=[
            (
                "edgectl provision --unit-id cam-nord-0042 --site 'rue de la Paix 12' "
                "--camera cam1=picamera2",
                "first installation of a unit",
            ),
            (
                "edgectl provision --unit-id cam-nord-0043 --cameras-file cams.toml "
                "--replace-identity cam-nord-0042",
                "give a provisioned unit another identity (its id typed again)",
            ),
        ],
    )
    add_config_args(parser)
    parser.add_argument("--unit-id", required=True, help="the unit id the city assigned")
    parser.add_argument("--site", default=None, help="where the unit stands (free text)")
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="a group of units the unit belongs to (signed configuration for the group applies "
        "to it); repeat for several",
    )
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="ID=SOURCE",
        help='a camera: its id and source ("picamera2", "rtsp://…", "v4l2:/dev/video0"); '
        "repeat for several",
    )
    parser.add_argument(
        "--cameras-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file with [[cameras]] tables (every camera setting, masks included)",
    )
    parser.add_argument(
        "--replace-identity",
        default=None,
        metavar="CURRENT_ID",
        help="confirm replacing the identity of a provisioned unit: type its current id",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(func=_provision)


def cameras_of(specs: list[str], file: Path | None) -> list[dict[str, Any]]:
    """The camera tables of ``--camera ID=SOURCE`` and ``--cameras-file``, unchecked (edged
    checks them against the schema it starts with)."""
    cameras: list[dict[str, Any]] = []
    for spec in specs:
        cam_id, sep, source = spec.partition("=")
        if not sep or not cam_id or not source:
            raise ConfigError(f"--camera {spec!r}: give ID=SOURCE, e.g. cam1=picamera2")
        cameras.append({"id": cam_id, "source": source})
    if file is not None:
        try:
            doc = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", path=str(file)) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid TOML: {exc}", path=str(file)) from None
        # A cameras file of an older schema says it in its own words: read in this one's.
        doc, _schema = configschema.migrate(doc, path=str(file))
        unknown = sorted(set(doc) - {"cameras"})
        if unknown:
            raise ConfigError(f"only [[cameras]] tables belong here, not {unknown}", path=str(file))
        tables = doc.get("cameras", [])
        if not isinstance(tables, list):
            raise ConfigError("cameras: give [[cameras]] tables", path=str(file))
        cameras.extend(tables)
    return cameras


def _provision(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    params = {
        "unit_id": args.unit_id,
        "site": args.site,
        "cameras": cameras_of(args.camera, args.cameras_file),
        "groups": args.group,
        "replace_identity": args.replace_identity,
    }
    try:
        result = control.call(cfg.control.socket, "provision", params, timeout=60.0)
    except control.ControlError as exc:
        if not exc.not_running:
            raise
        raise control.ControlError(
            f"{exc}: edged provisions the unit; start it (systemctl start edged)",
            not_running=True,
        ) from None
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    replaced = f" (was {result['replaced']})" if result.get("replaced") else ""
    print(f"unit provisioned as {result['unit_id']}{replaced}: edged starts recording under it")
    print(f"  per-unit configuration {result['unit_file']}")
    if result.get("kept_as"):
        print(f"  previous one kept as {result['kept_as']}")
    print(f"  signing key id {result['signing_key_id']}")
    print(f"  certificate requests {result['tls_csr']} and {result['signing_csr']}")
    print("next: have both requests signed by the city's video CA, then:")
    print("  edgectl enroll --install unit-tls.crt unit-signing.crt --ca city-ca-chain.pem")
    return 0
