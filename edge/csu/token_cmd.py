"""``edge-csu token``: operator bearer tokens with an expiry, a role and a scope (new, list).

Entries written before roles and scopes existed keep working unchanged: no ``role`` means
investigator (view and export, what every token could do then), no ``scope`` every camera;
``token list`` shows them as such so that they can be narrowed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from edge.csu.receiver import settings as serve_config

from ..clihelp import add_command
from ..errors import ConfigError
from .console.roles import Scope
from .receiver.trust import utcnow

#: Longest validity ``token new`` grants: a token outliving a posting is a standing risk.
MAX_DAYS = 366


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "token",
        help="operator bearer tokens: make one (with its expiry), list their expiries",
        description="Bearer tokens of the operators who view recordings through the receiver. "
        "The receiver's configuration holds only each token's SHA-256 and its expiry.",
        example=[
            ("edge-csu token new --name j.martin --days 90", "a token for one operator"),
            (
                "edge-csu token new --name wall-3 --role viewer --scope unit-12/street",
                "a display script that may only watch one camera",
            ),
        ],
    )
    tsub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = add_command(
        tsub,
        "new",
        help="make a token; prints it once and its [[operators]] entry",
        description="Make a random bearer token for one operator. The token is printed once, "
        "with the [[operators]] entry (its SHA-256 and expiry) to add to the receiver's "
        "configuration; the token itself is stored nowhere.",
        example=[
            ("edge-csu token new --name j.martin", "valid 90 days"),
            ("edge-csu token new --name night-desk --days 30", "a shorter validity"),
        ],
    )
    new.add_argument("--name", required=True, help="the operator, as the audit log names them")
    new.add_argument("--days", type=int, default=90, help=f"validity, 1-{MAX_DAYS} (default 90)")
    new.add_argument(
        "--role",
        default="viewer",
        choices=["viewer", "investigator", "supervisor", "admin"],
        help="what the token may do (default viewer: watch only)",
    )
    new.add_argument(
        "--scope", default="", help="comma-separated UNIT or UNIT/CAMERA (default: every camera)"
    )
    new.set_defaults(func=_new)
    lst = add_command(
        tsub,
        "list",
        help="operators of a receiver configuration and their expiry",
        description="List the operators of a receiver configuration with the creation and "
        "expiry dates of their tokens; an expired token is refused by the receiver.",
        example=[("edge-csu token list --config /etc/edge-csu/csu.toml", "who expires when")],
    )
    lst.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    lst.set_defaults(func=_list)


def operator_entry(
    name: str,
    token: str,
    created: dt.datetime,
    expires: dt.datetime,
    role: str = "viewer",
    scope: tuple[str, ...] = (),
) -> str:
    """The ``[[operators]]`` TOML entry of a token (only its SHA-256 is kept)."""
    return (
        "[[operators]]\n"
        f'name = "{name}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        f"created = {created:%Y-%m-%dT%H:%M:%SZ}\n"
        f"expires = {expires:%Y-%m-%dT%H:%M:%SZ}\n"
        f'role = "{role}"\n'
        f"scope = {json.dumps(list(scope))}\n"
    )


def _new(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= MAX_DAYS:
        raise ConfigError(f"--days must be 1 to {MAX_DAYS}")
    _check_name(args.name)
    try:
        scope = Scope.parse(args.scope)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    created = utcnow().replace(microsecond=0)
    expires = created + dt.timedelta(days=args.days)
    token = secrets.token_urlsafe(32)
    print(f"token (give it to {args.name}; it is shown only now): {token}")
    print(f"valid until {expires:%Y-%m-%d %H:%M} UTC; add to the receiver configuration:\n")
    print(operator_entry(args.name, token, created, expires, args.role, scope.items))
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
    print(f"{'OPERATOR':24} {'ROLE':13} {'SCOPE':24} {'CREATED':20} {'EXPIRES':20} STATE")
    for op in cfg.operators:
        created = f"{op.created:%Y-%m-%d %H:%M}" if op.created else "-"
        left = op.expires - now
        state = (
            "EXPIRED (refused)" if left.total_seconds() <= 0 else f"valid, {left.days} day(s) left"
        )
        scope = ",".join(op.scope) or "* (every camera)"
        print(
            f"{op.name:24} {op.role:13} {scope:24} {created:20} "
            f"{op.expires:%Y-%m-%d %H:%M}     {state}"
        )
    return 0
