"""``edge-csu token``: operator bearer tokens with an expiry (new, list)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .receiver import config as serve_config
from .receiver.trust import utcnow

#: Longest validity ``token new`` grants: a token outliving a posting is a standing risk.
MAX_DAYS = 366


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "token", help="operator bearer tokens: make one (with its expiry), list their expiries"
    )
    tsub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = tsub.add_parser("new", help="make a token; prints it once and its [[operators]] entry")
    new.add_argument("--name", required=True, help="the operator, as the audit log names them")
    new.add_argument("--days", type=int, default=90, help=f"validity, 1-{MAX_DAYS} (default 90)")
    new.set_defaults(func=_new)
    lst = tsub.add_parser("list", help="operators of a receiver configuration and their expiry")
    lst.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    lst.set_defaults(func=_list)


def operator_entry(name: str, token: str, created: dt.datetime, expires: dt.datetime) -> str:
    """The ``[[operators]]`` TOML entry of a token (only its SHA-256 is kept)."""
    return (
        "[[operators]]\n"
        f'name = "{name}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        f"created = {created:%Y-%m-%dT%H:%M:%SZ}\n"
        f"expires = {expires:%Y-%m-%dT%H:%M:%SZ}\n"
    )


def _new(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= MAX_DAYS:
        raise ConfigError(f"--days must be 1 to {MAX_DAYS}")
    _check_name(args.name)
    created = utcnow().replace(microsecond=0)
    expires = created + dt.timedelta(days=args.days)
    token = secrets.token_urlsafe(32)
    print(f"token (give it to {args.name}; it is shown only now): {token}")
    print(f"valid until {expires:%Y-%m-%d %H:%M} UTC; add to the receiver configuration:\n")
    print(operator_entry(args.name, token, created, expires))
    return 0


def _check_name(name: str) -> None:
    """Refuse a name the configuration would refuse, before a token is printed for it."""
    from pydantic import ValidationError

    try:
        serve_config.OperatorConfig(
            name=name, token_sha256="0" * 64, expires=dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
        )
    except ValidationError:
        raise ConfigError(f"operator name {name!r}: 1-64 letters, digits, . _ @ -") from None


def _list(args: argparse.Namespace) -> int:
    cfg = serve_config.load(args.config)
    now = utcnow()
    print(f"{'OPERATOR':24} {'CREATED':20} {'EXPIRES':20} STATE")
    for op in cfg.operators:
        created = f"{op.created:%Y-%m-%d %H:%M}" if op.created else "-"
        left = op.expires - now
        state = (
            "EXPIRED (refused)" if left.total_seconds() <= 0 else f"valid, {left.days} day(s) left"
        )
        print(f"{op.name:24} {created:20} {op.expires:%Y-%m-%d %H:%M}     {state}")
    return 0
