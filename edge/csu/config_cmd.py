"""``edge-csu config sign``: a configuration document signed for a unit or a group.

The document format and every check the unit makes: ``edge/signedconfig.py``. The key and
certificate come from ``edge-csu ca issue CA NAME --profile config``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..cli.entry import describe_os_error
from ..clihelp import add_command
from ..errors import ConfigError
from ..fsutil import write_atomic
from ..signedconfig import Scope, SignedConfigError, peek_scope, sign, unverified_version


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "config",
        help="sign configuration documents for units or groups",
        description="Configuration documents signed by the city: privacy masks, analytics "
        "rules, retention and uplink settings for one unit or a group, which the units fetch "
        "over the uplink and apply only after checking the signer, the scope and the version.",
        example=[
            (
                "edge-csu config sign settings.toml --scope unit:cam-nord-0042 --version 3 "
                "--key signer.key --cert signer.crt --out /srv/csu/config/cam-nord-0042.json",
                "sign and offer a document to one unit",
            ),
        ],
    )
    csub = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    sign_p = add_command(
        csub,
        "sign",
        help="sign a settings file for a unit or a group",
        description="Sign the settings of a TOML file ([[cameras]] with id and privacy_masks, "
        "[vault], [uplink], [analytics]) for one unit (unit:ID) or a group (group:NAME), with "
        "a version above every earlier one of that scope (units refuse older or replayed "
        "versions). Written where the receiver offers it (its config_dir), the units fetch "
        "it at their next connection or poll.",
        example=[
            (
                "edge-csu config sign masks.toml --scope group:district-nord --version 12 "
                "--key signer.key --cert signer.crt --out /srv/csu/config/nord.json",
                "a group's document",
            ),
        ],
    )
    sign_p.add_argument("settings", type=Path, help="TOML file of the settings")
    sign_p.add_argument("--scope", required=True, help="unit:UNIT-ID or group:GROUP")
    sign_p.add_argument("--version", type=int, required=True, help="above the scope's last one")
    sign_p.add_argument("--key", type=Path, required=True, help="configuration-signing key")
    sign_p.add_argument(
        "--cert", type=Path, required=True, help="its certificate (with intermediates)"
    )
    sign_p.add_argument("--out", type=Path, required=True, help="the signed document to write")
    sign_p.set_defaults(func=_sign)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {describe_os_error(exc)}") from None


def _sign(args: argparse.Namespace) -> int:
    scope = Scope.parse(args.scope)
    try:
        settings = tomllib.loads(_read(args.settings).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(args.settings)) from None
    key = serialization.load_pem_private_key(_read(args.key), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignedConfigError(f"{args.key}: not the ECDSA key of a configuration signer")
    out: Path = args.out
    # Refused here already, not only by the units: a version not above an offered one.
    for other in sorted(out.parent.glob("*.json")) if out.parent.is_dir() else []:
        data = other.read_bytes()
        if peek_scope(data) == scope:
            held = unverified_version(data)
            if held >= args.version:
                raise SignedConfigError(
                    f"{other} already offers version {held} for {scope.key}: sign a higher one"
                )
    envelope = sign(
        settings,
        scope=scope,
        version=args.version,
        key=key,
        chain_pem=_read(args.cert),
        now=dt.datetime.now(dt.UTC),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, envelope, mode=0o644)
    print(f"{out}: {scope.key} version {args.version}, signed")
    return 0
