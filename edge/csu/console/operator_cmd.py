"""``edge-csu operator``: console accounts (add, list, disable, enable, unlock, reset, set-auth).

Run on the CSU host by its administrators (the database is the receiver's, mode 0600). Every
change is written to the CSU audit log under the system user who made it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Any

from ...clihelp import add_command
from ...errors import ConfigError
from ..receiver import settings as serve_config
from ..receiver.access_log import AuditLog, open_signing_key
from ..receiver.pgaudit import PgAuditLog
from .accounts import AuthMethod, OperatorStore
from .credentials import new_totp_secret, totp_uri
from .roles import OPERATOR_NAME, Role, Scope
from .stores import operator_store


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "operator",
        help="console accounts: add, list, disable, enable, unlock, reset, set-auth",
        description="Accounts of the operators who log in to the console (password and "
        "one-time code, or password and a console client certificate of the city's CA), with "
        "a role (viewer, investigator, supervisor, admin) and a scope (units or unit/camera; "
        "none is the whole fleet).",
        example=[
            (
                "edge-csu operator add --config csu.toml --name j.martin --role viewer "
                "--scope unit-12/street",
                "one camera only",
            ),
            ("edge-csu operator list --config csu.toml", "who may log in, locked, disabled"),
        ],
    )
    osub = parser.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    add = add_command(
        osub,
        "add",
        help="make an account; prints its one-time-code secret once",
        description="Make an account. The password is asked twice (or read from standard "
        "input with --password-stdin); the one-time-code secret is printed once, as text and "
        "as an otpauth:// URI for the operator's authenticator app. With --auth certificate "
        "the account logs in with its password and its console client certificate instead "
        "(edge-csu ca issue CA-DIR NAME --profile console); no one-time code then.",
        example=[
            (
                "edge-csu operator add --config csu.toml --name a.dupont --role supervisor",
                "a supervisor for the whole fleet",
            ),
            (
                "edge-csu operator add --config csu.toml --name j.martin --role viewer "
                "--auth certificate",
                "password + console certificate",
            ),
        ],
    )
    add.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="viewer (watch), investigator (+ export), supervisor (+ alerts, audit), admin",
    )
    add.add_argument(
        "--scope", default="", help="comma-separated UNIT or UNIT/CAMERA (default: every camera)"
    )
    _auth_option(add, default="totp")
    _common(add, name=True, password=True)
    add.set_defaults(func=_add)
    set_auth = add_command(
        osub,
        "set-auth",
        help="switch an account between one-time codes and a console certificate",
        description="Switch how an account logs in, beside its password: --auth certificate "
        "(its console client certificate; the one-time-code secret is dropped) or --auth totp "
        "(a new one-time-code secret, printed once). Its open sessions end.",
        example=[
            (
                "edge-csu operator set-auth --config csu.toml --name j.martin --auth certificate",
                "after issuing j.martin a console certificate",
            )
        ],
    )
    _auth_option(set_auth, default=None)
    _common(set_auth, name=True, password=False)
    set_auth.set_defaults(func=_set_auth)
    lst = add_command(
        osub,
        "list",
        help="accounts with role, scope and state",
        description="List the accounts with their role, scope and state (active, locked "
        "until when, disabled).",
        example=[("edge-csu operator list --config csu.toml", "one line per account")],
    )
    _common(lst, name=False, password=False)
    lst.set_defaults(func=_list)
    for action, help_text, example in (
        ("disable", "refuse an account's log-ins and end its sessions now", "someone left"),
        ("enable", "accept a disabled account's log-ins again", "back from leave"),
        ("unlock", "lift a lock-out after failed log-ins before it runs out", "checked by phone"),
        (
            "reset",
            "new password and one-time-code secret (lost phone; a certificate account: the "
            "password only); ends its sessions",
            "a lost phone",
        ),
    ):
        p = add_command(
            osub,
            action,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            example=[(f"edge-csu operator {action} --config csu.toml --name j.martin", example)],
        )
        _common(p, name=True, password=action == "reset")
        p.set_defaults(func=_change, action=action)


def _auth_option(p: argparse.ArgumentParser, *, default: str | None) -> None:
    p.add_argument(
        "--auth",
        choices=[m.value for m in AuthMethod],
        default=default,
        required=default is None,
        help="what the operator gives beside the password: totp (one-time code, "
        "the default for a new account) or certificate (console client certificate)",
    )


def _common(p: argparse.ArgumentParser, *, name: bool, password: bool) -> None:
    p.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    if name:
        p.add_argument("--name", required=True, help="the operator, as the audit log names them")
    if password:
        p.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )


def _open(args: argparse.Namespace) -> tuple[OperatorStore, AuditLog]:
    cfg = serve_config.load(args.config)
    if cfg.storage != "cluster":
        return operator_store(cfg), AuditLog.with_key_file(cfg.audit_log, cfg.audit_key_file)
    # Cluster mode: the accounts and the audit chain are the cluster's; the record names
    # this receiver and is signed with its key, as the receiver's records are.
    from . import pgconsole

    database = pgconsole.database(cfg)
    key, reason = open_signing_key(cfg.audit_key_file)
    audit = PgAuditLog(database.connection, database.receiver, key, unsigned_reason=reason)
    return pgconsole.PgOperatorStore(database), audit


def _check_name(name: str) -> None:
    if not OPERATOR_NAME.match(name):
        raise ConfigError(f"operator name {name!r}: 1-64 letters, digits, . _ @ -")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def _print_secret(name: str, secret: str) -> None:
    print(f"one-time-code secret of {name} (enter it in the authenticator app; shown only now):")
    print(f"  {secret}")
    print(f"  {totp_uri(secret, name)}")


def _add(args: argparse.Namespace) -> int:
    _check_name(args.name)
    try:
        scope = Scope.parse(args.scope)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store, audit = _open(args)
    secret = new_totp_secret()
    auth = AuthMethod(args.auth)
    store.add(args.name, Role(args.role), scope, _password(args), secret, auth=auth)
    audit.record(
        getpass.getuser(), "operator-add", operator=args.name, role=args.role, scope=str(scope),
        auth=auth.value,
    )  # fmt: skip
    print(f"operator {args.name} added: {args.role}, scope {scope}")
    if auth is AuthMethod.CERTIFICATE:
        _print_certificate_note(args.name)
    else:
        _print_secret(args.name, secret)
    return 0


def _print_certificate_note(name: str) -> None:
    print(
        f"{name} logs in with the password and a console certificate whose common name is "
        f"{name}: edge-csu ca issue CA-DIR {name} --profile console --out PREFIX"
    )


def _set_auth(args: argparse.Namespace) -> int:
    store, audit = _open(args)
    auth = AuthMethod(args.auth)
    secret = new_totp_secret() if auth is AuthMethod.TOTP else ""
    store.set_auth(args.name, auth, secret)
    audit.record(getpass.getuser(), "operator-set-auth", operator=args.name, auth=auth.value)
    print(f"operator {args.name}: logs in with password and {auth.value}; sessions ended")
    if auth is AuthMethod.CERTIFICATE:
        _print_certificate_note(args.name)
    else:
        _print_secret(args.name, secret)
    return 0


def _list(args: argparse.Namespace) -> int:
    store, _ = _open(args)
    print(f"{'OPERATOR':24} {'ROLE':13} {'AUTH':12} {'SCOPE':30} STATE")
    for op in store.list():
        if op.disabled:
            state = "disabled"
        elif op.locked_until is not None:
            until = dt.datetime.fromtimestamp(op.locked_until, dt.UTC)
            state = f"LOCKED until {until:%Y-%m-%d %H:%M:%S} UTC ({op.failures} failures)"
        else:
            state = "active" + (f" ({op.failures} failed log-ins)" if op.failures else "")
        print(f"{op.name:24} {op.role.value:13} {op.auth.value:12} {op.scope!s:30} {state}")
    return 0


def _change(args: argparse.Namespace) -> int:
    store, audit = _open(args)
    certificate = False
    if args.action == "reset":
        secret = new_totp_secret()
        store.reset(args.name, _password(args), secret)
        op = store.get(args.name)
        certificate = op is not None and op.auth is AuthMethod.CERTIFICATE
    elif args.action == "unlock":
        store.unlock(args.name)
    else:
        store.set_disabled(args.name, args.action == "disable")
    audit.record(getpass.getuser(), f"operator-{args.action}", operator=args.name)
    print(f"operator {args.name}: {args.action} done")
    if args.action == "reset" and not certificate:
        _print_secret(args.name, secret)
    return 0
