"""``edge-csu fleet config``: a configuration rolled out to a group in waves, canary first.

Each unit of the group (as the units report their groups to this receiver) gets its own
signed document (``unit:ID`` scope, the same settings, the given version), one wave after the
other: a wave's documents are written to the receiver's ``config_dir``, then the command waits
until every unit of the wave reports that version in effect (``X-Edge-Fleet``). A unit that
refuses it (the reason it reports) or does not report it within ``--wait`` stops the roll-out:
later waves get nothing, and the command says which unit stopped it and why (exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..clihelp import add_command
from ..errors import ConfigError
from ..fsutil import write_atomic
from ..signedconfig import Scope, SignedConfigError, sign
from .receiver import settings as serve_config
from .receiver.archive import SegmentStore


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "fleet",
        help="roll a signed configuration out to a group in waves, canary first",
        description="Roll a configuration out to the units of a group in waves: the first "
        "wave (the canary) gets its signed documents first; the next wave only once every "
        "unit of the previous one reports the new version in effect. A refusal or a unit "
        "that does not report it in time stops the roll-out.",
        example=[
            (
                "edge-csu fleet config masks.toml --config csu.toml --group district-nord "
                "--version 8 --key signer.key --cert signer.crt --waves 1,25%,100%",
                "one canary, then a quarter, then the rest",
            ),
        ],
    )
    fsub = parser.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    cfg = add_command(
        fsub,
        "config",
        help="sign a settings file for every unit of a group, wave by wave",
        description="Sign SETTINGS for every unit of --group, one wave at a time (--waves: "
        "counts or percentages of the group, cumulative), waiting for each wave to report "
        "the version in effect before the next.",
        example=[("edge-csu fleet config s.toml --config csu.toml --group nord --version 3 "
                  "--key k --cert c", "default waves: 1, 50%, 100%")],
    )  # fmt: skip
    cfg.add_argument("settings", type=Path, help="TOML file of the settings")
    cfg.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    cfg.add_argument("--group", required=True, help="the group whose units get it")
    cfg.add_argument("--version", type=int, required=True, help="above each unit's last one")
    cfg.add_argument("--key", type=Path, required=True, help="configuration-signing key")
    cfg.add_argument("--cert", type=Path, required=True, help="its certificate (with chain)")
    cfg.add_argument(
        "--waves", default="1,50%,100%", help="cumulative sizes (default 1,50%%,100%%)"
    )
    cfg.add_argument("--wait", type=float, default=900.0, help="seconds a wave may take")
    cfg.add_argument("--json", action="store_true", help="print the outcome as JSON")
    cfg.set_defaults(func=_config)
    offer = add_command(
        fsub,
        "offer",
        help="offer an update bundle to the units (edgectl update fetch)",
        description="Offer BUNDLE to the units over the uplink: it is copied into the "
        "receiver's update_dir with its version, size and SHA-256 (offer.json); units fetch "
        "it with edgectl update fetch, and RAUC on each unit judges its signature.",
        example=[("edge-csu fleet offer edge-rpi-0.2.0.raucb --version 0.2.0 --config csu.toml",
                  "offer 0.2.0")],
    )  # fmt: skip
    offer.add_argument("bundle", type=Path, help="the signed RAUC bundle")
    offer.add_argument("--version", required=True, help="its version (as in its manifest)")
    offer.add_argument("--config", type=Path, required=True, help="receiver configuration")
    offer.set_defaults(func=_offer)


def _offer(args: argparse.Namespace) -> int:
    import hashlib
    import shutil

    cfg = serve_config.load(args.config)
    cfg.update_dir.mkdir(parents=True, exist_ok=True)
    name = args.bundle.name
    dest = cfg.update_dir / name
    if dest.resolve() != args.bundle.resolve():
        tmp = dest.with_name(f".{name}.tmp")
        shutil.copyfile(args.bundle, tmp)
        tmp.replace(dest)
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    offer = {
        "bundle": name,
        "version": args.version,
        "size": dest.stat().st_size,
        "sha256": digest.hexdigest(),
    }
    write_atomic(cfg.update_dir / "offer.json", json.dumps(offer).encode() + b"\n", mode=0o644)
    print(f"offered {name} ({args.version}, {offer['size'] >> 10} KiB) to the units")
    return 0


def plan_waves(units: list[str], spec: str) -> list[list[str]]:
    """``units`` cut into waves by cumulative sizes ("1,25%,100%"); the last wave takes all
    that remain, so no unit is forgotten by rounding."""
    bounds = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        try:
            size = (
                math.ceil(len(units) * float(item[:-1]) / 100) if item.endswith("%") else int(item)
            )
        except ValueError:
            raise ConfigError(f"--waves: {item!r} is not a count or a percentage") from None
        if size < 1:
            raise ConfigError(f"--waves: {item!r} is an empty wave")
        bounds.append(min(size, len(units)))
    waves, start = [], 0
    for end in [*bounds, len(units)]:
        if end > start:
            waves.append(units[start:end])
            start = end
    return waves


def wave_verdict(
    wave: list[str],
    reports: dict[str, dict[str, Any]],
    version: int,
    refused_before: dict[str, str | None],
) -> tuple[list[str], dict[str, str]]:
    """(units that report ``version`` in effect, units that refused it with their reason).

    A refusal counts only when it is new since the wave's documents were written: one a unit
    reported before is about an earlier document."""
    done, refused = [], {}
    for unit in wave:
        fleet = reports.get(unit) or {}
        reason = fleet.get("config_refused")
        if (fleet.get("config_documents") or {}).get(f"unit:{unit}", 0) >= version:
            done.append(unit)
        elif reason and reason != refused_before.get(unit):
            refused[unit] = str(reason)
    return done, refused


def _config(args: argparse.Namespace) -> int:
    cfg = serve_config.load(args.config)
    store = SegmentStore(cfg.storage_dir)

    def reports() -> dict[str, dict[str, Any]]:
        root = cfg.storage_dir
        units = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return {u: store.read_status(u).get("fleet") or {} for u in units}

    members = sorted(u for u, f in reports().items() if args.group in (f.get("groups") or []))
    if not members:
        raise ConfigError(f"no unit reports group {args.group!r} to this receiver")
    behind = {
        u: v
        for u, f in reports().items()
        if u in members
        and (v := (f.get("config_documents") or {}).get(f"unit:{u}", 0)) >= args.version
    }
    if behind:
        raise SignedConfigError(
            f"version {args.version} is not above what these units run: "
            + ", ".join(f"{u} (v{v})" for u, v in sorted(behind.items()))
        )
    settings = tomllib.loads(args.settings.read_text(encoding="utf-8"))
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignedConfigError(f"{args.key}: not the ECDSA key of a configuration signer")
    chain = args.cert.read_bytes()
    cfg.config_dir.mkdir(parents=True, exist_ok=True)
    outcome = roll_out(
        plan_waves(members, args.waves),
        write=lambda unit: write_atomic(
            cfg.config_dir / f"{unit}.json",
            sign(settings, scope=Scope("unit", unit), version=args.version, key=key,
                 chain_pem=chain, now=dt.datetime.now(dt.UTC)),
            mode=0o644,
        ),
        reports=reports,
        version=args.version,
        wait_s=args.wait,
    )  # fmt: skip
    if args.json:
        print(json.dumps(outcome, indent=1))
    else:
        for i, wave in enumerate(outcome["waves"], start=1):
            print(f"wave {i}: {', '.join(wave['units'])}: {wave['result']}")
        if outcome["stopped"]:
            print(f"edge-csu: roll-out stopped: {outcome['stopped']}", file=sys.stderr)
    return 1 if outcome["stopped"] else 0


def roll_out(
    waves: list[list[str]],
    *,
    write: Callable[[str], None],
    reports: Callable[[], dict[str, dict[str, Any]]],
    version: int,
    wait_s: float,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Each wave written, then awaited; the first refusal or time-out stops the rest."""
    done_waves: list[dict[str, Any]] = []
    for wave in waves:
        now = reports()
        before = {u: (now.get(u) or {}).get("config_refused") for u in wave}
        for unit in wave:
            write(unit)
        deadline = clock() + wait_s
        while True:
            done, refused = wave_verdict(wave, reports(), version, before)
            if refused:
                unit, reason = sorted(refused.items())[0]
                done_waves.append({"units": wave, "result": f"refused by {unit}"})
                return {
                    "waves": done_waves,
                    "stopped": f"{unit} refused version {version}: {reason}",
                }
            if len(done) == len(wave):
                done_waves.append({"units": wave, "result": f"version {version} in effect"})
                break
            if clock() >= deadline:
                late = [u for u in wave if u not in done]
                done_waves.append({"units": wave, "result": "timed out"})
                return {
                    "waves": done_waves,
                    "stopped": f"{', '.join(late)} did not report version {version} within "
                    f"{wait_s:.0f} s",
                }
            sleep(poll_s)
    return {"waves": done_waves, "stopped": None}
