"""``edge-csu command``: an agent's signed command to a unit's cabinet outputs (confirm a
playbook's request, set an output for a bounded time, return it to safe).

The command is signed here with the agent's operator key (``edge-csu ca issue … --profile
operator``) and filed in the receiver's ``commands_dir``; the unit pulls it over its own
mutual-TLS connection, checks it (:mod:`edge.outputs.commands`) and audits the outcome. No
port is opened towards the unit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.csu.receiver import settings as serve_config
from edge.csu.receiver.commands import CommandQueue
from edge.outputs import commands

from ..cli.entry import describe_os_error
from ..clihelp import add_command
from ..errors import CommandError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    p.add_argument("--unit", required=True, help="the unit's identity (its certificate's CN)")
    p.add_argument("--output", required=True, help="the output the command is scoped to")
    p.add_argument("--key", type=Path, required=True, help="the agent's operator private key")
    p.add_argument(
        "--cert", type=Path, required=True, help="the agent's operator certificate (PEM)"
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=120.0,
        help=f"seconds the unit may still act on it (default 120, at most "
        f"{commands.MAX_LIFETIME_S:g})",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="wait this many seconds for the unit to take the command (default: do not wait)",
    )


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "command",
        help="an agent's signed command to a unit's cabinet outputs",
        description="Sign a command with an agent's operator key and queue it for a unit, which "
        "pulls it over its own TLS connection, checks signature, certificate, scope, expiry and "
        "nonce, and writes the outcome to its signed audit log.",
        example=[
            (
                "edge-csu command confirm --config csu.toml --unit cam-nord-0001 --output sign-n "
                "--playbook lane-closure --event 2c1f… --key op.key --cert op.crt",
                "confirm a playbook's request",
            ),
        ],
    )
    csub = parser.add_subparsers(dest="command_action", required=True, metavar="ACTION")
    confirm = add_command(
        csub,
        "confirm",
        help="confirm a playbook's request (the unit then drives the output)",
        description="Confirm the request a playbook made for an event (the request reaches "
        "the CSU as an `output-confirmation-requested` event naming playbook, event and "
        "output).",
        example=[
            (
                "edge-csu command confirm --config csu.toml --unit cam-nord-0001 --output sign-n "
                "--playbook lane-closure --event 2c1f… --key op.key --cert op.crt --wait 10",
                "and wait for the unit to take it",
            )
        ],
    )
    _common(confirm)
    confirm.add_argument("--playbook", required=True, help="the playbook that asked")
    confirm.add_argument("--event", required=True, help="the event id of its request")
    confirm.set_defaults(func=_confirm)
    manual = add_command(
        csub,
        "set",
        help="set an output to one of its states for a bounded time",
        description="Set an output to one of the states the city configured, for at most "
        "--duration seconds (the unit also bounds it by the output's max_duration_s); "
        "`--state safe` returns it to its safe state at once.",
        example=[
            (
                "edge-csu command set --config csu.toml --unit cam-nord-0001 --output sign-n "
                "--state safe --key op.key --cert op.crt",
                "blank the sign now",
            )
        ],
    )
    _common(manual)
    manual.add_argument("--state", required=True, help="a state of the output, or safe")
    manual.add_argument(
        "--duration", type=float, default=60.0, help="seconds the state holds (default 60)"
    )
    manual.set_defaults(func=_set)


def _operator(args: argparse.Namespace) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificates(args.cert.read_bytes())[0]
    except OSError as exc:
        raise CommandError(f"operator key or certificate: {describe_os_error(exc)}") from None
    except ValueError as exc:
        raise CommandError(f"operator key or certificate unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CommandError(f"{args.key}: not an operator key (ECDSA)")
    problem = commands.operator_problem(cert)
    if problem is not None:
        raise CommandError(f"{args.cert}: {problem}")
    if not 1.0 <= args.lifetime <= commands.MAX_LIFETIME_S:
        raise CommandError(f"--lifetime must be 1 to {commands.MAX_LIFETIME_S:g} seconds")
    return key, cert


def _queue(args: argparse.Namespace, **fields: Any) -> int:
    key, cert = _operator(args)
    envelope = commands.sign(
        key, cert, unit=args.unit, outputs=[args.output], lifetime_s=args.lifetime, **fields
    )
    cfg = serve_config.load(args.config)
    queue = CommandQueue(cfg.commands_dir)
    path = queue.queue(args.unit, envelope)
    nonce = path.stem
    print(f"command {nonce} queued for {args.unit} (valid {args.lifetime:g} s)")
    deadline = time.monotonic() + args.wait
    while args.wait > 0:
        if queue.is_done(args.unit, nonce):
            print("the unit took it; its audit log and events say what it did")
            return 0
        if time.monotonic() >= deadline:
            print(f"the unit did not take it within {args.wait:g} s (uplink down?)")
            return 1
        time.sleep(0.2)
    return 0


def _confirm(args: argparse.Namespace) -> int:
    return _queue(args, kind="confirm", playbook=args.playbook, event=args.event)


def _set(args: argparse.Namespace) -> int:
    return _queue(
        args, kind="manual", output=args.output, state=args.state, duration_s=args.duration
    )
