"""``edge-csu fleet``: a configuration or an update bundle rolled out to a group in waves.

``fleet config``: each unit of the group (as the units report their groups to this receiver)
gets its own signed document (``unit:ID`` scope, the same settings, the given version), one
wave after the other: a wave's documents are written to the receiver's ``config_dir``, then
the command waits until every unit of the wave reports that version in effect
(``X-Edge-Fleet``).

``fleet offer --group``: the bundle is offered to the units of one wave after the other (the
offer names them; other units are offered nothing), and the next wave waits until every unit
of the current one runs the new version and its update was confirmed (``last_update``
``good``).

Both: the first wave is the canary; a unit that refuses (the reason it reports), rolls back,
or does not report the goal within ``--wait`` stops the roll-out: later waves get nothing, and
the command says which unit stopped it and why (exit 1). One planner (:func:`plan_waves`) and
one loop (:func:`roll_out`) for both; what each waits for is its :class:`Goal`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..clihelp import add_command
from ..errors import ConfigError
from ..fsutil import write_atomic
from ..signedconfig import Scope, SignedConfigError, sign
from ..updates import version_key
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
        help="offer an update bundle to the units (edgectl update fetch), or to a group in waves",
        description="Offer BUNDLE to the units over the uplink: it is copied into the "
        "receiver's update_dir with its version, size and SHA-256 (offer.json); units fetch "
        "it with edgectl update fetch, and RAUC on each unit judges its signature. With "
        "--group, the offer goes to the group's units wave by wave (--waves, cumulative), "
        "the next wave only once every unit of the previous one runs the version, confirmed; "
        "a unit that rolls back, refuses it or stays silent for --wait seconds stops it.",
        example=[("edge-csu fleet offer edge-rpi-0.2.0.raucb --version 0.2.0 --config csu.toml",
                  "offer 0.2.0"),
                 ("edge-csu fleet offer edge-rpi-0.2.0.raucb --version 0.2.0 --config csu.toml "
                  "--group nord --waves 1,25%,100% --wait 3600", "canary first, in waves")],
    )  # fmt: skip
    offer.add_argument("bundle", type=Path, help="the signed RAUC bundle")
    offer.add_argument("--version", required=True, help="its version (as in its manifest)")
    offer.add_argument("--config", type=Path, required=True, help="receiver configuration")
    offer.add_argument("--group", help="roll it out to this group's units in waves")
    offer.add_argument(
        "--waves", default="1,50%,100%", help="cumulative sizes (default 1,50%%,100%%)"
    )
    offer.add_argument(
        "--wait", type=float, default=3600.0, help="seconds a wave may take (install, reboot)"
    )
    offer.add_argument("--json", action="store_true", help="print the outcome as JSON")
    offer.set_defaults(func=_offer)


def _offer(args: argparse.Namespace) -> int:
    cfg = serve_config.load(args.config)
    if args.group is None:
        offer = _place_bundle(cfg.update_dir, args.bundle, args.version)
        _write_offer(cfg.update_dir, offer)
        print(f"offered {offer['bundle']} ({args.version}, {offer['size'] >> 10} KiB) to the units")
        return 0
    reports = _reports(cfg)
    members = _members(reports(), args.group)
    ahead = {
        u: str(f.get("version"))
        for u, f in reports().items()
        if u in members and version_key(str(f.get("version") or "0")) > version_key(args.version)
    }
    if ahead:
        raise ConfigError(
            f"version {args.version} is below what these units run: "
            + ", ".join(f"{u} ({v})" for u, v in sorted(ahead.items()))
        )
    offer = _place_bundle(cfg.update_dir, args.bundle, args.version)
    offered: list[str] = []

    def write(unit: str) -> None:
        # Cumulative: the units of this wave and of the waves before it.
        offered.append(unit)
        doc = {**offer, "units": offered}
        _write_offer(cfg.update_dir, doc)

    outcome = roll_out(
        plan_waves(members, args.waves),
        write=write,
        reports=reports,
        goal=UpdateGoal(args.version),
        wait_s=args.wait,
    )
    if outcome["stopped"]:
        # Withdrawn from every unit: one that rolled back would otherwise fetch and install
        # it again at its next ask, and roll back again.
        offered.clear()
        _write_offer(cfg.update_dir, {**offer, "units": []})
        outcome["withdrawn"] = True
    return _report(outcome, args.json)


def _write_offer(update_dir: Path, offer: dict[str, Any]) -> None:
    """``offer.json``, what the receiver offers (to the units it names, when it names some)."""
    write_atomic(update_dir / "offer.json", json.dumps(offer).encode() + b"\n", mode=0o644)


def _place_bundle(update_dir: Path, bundle: Path, version: str) -> dict[str, Any]:
    """The bundle copied into the receiver's ``update_dir``; its offer (name, version, size,
    SHA-256)."""
    import hashlib
    import shutil

    update_dir.mkdir(parents=True, exist_ok=True)
    name = bundle.name
    dest = update_dir / name
    if dest.resolve() != bundle.resolve():
        tmp = dest.with_name(f".{name}.tmp")
        shutil.copyfile(bundle, tmp)
        tmp.replace(dest)
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {
        "bundle": name,
        "version": version,
        "size": dest.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def _reports(cfg: Any) -> Callable[[], dict[str, dict[str, Any]]]:
    """What every unit last reported of itself to this receiver (``X-Edge-Fleet``)."""
    store = SegmentStore(cfg.storage_dir)

    def reports() -> dict[str, dict[str, Any]]:
        root = cfg.storage_dir
        units = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return {u: store.read_status(u).get("fleet") or {} for u in units}

    return reports


def _members(reports: dict[str, dict[str, Any]], group: str) -> list[str]:
    members = sorted(u for u, f in reports.items() if group in (f.get("groups") or []))
    if not members:
        raise ConfigError(f"no unit reports group {group!r} to this receiver")
    return members


def _report(outcome: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(outcome, indent=1))
    else:
        for i, wave in enumerate(outcome["waves"], start=1):
            print(f"wave {i}: {', '.join(wave['units'])}: {wave['result']}")
        if outcome["stopped"]:
            print(f"edge-csu: roll-out stopped: {outcome['stopped']}", file=sys.stderr)
        if outcome.get("withdrawn"):
            print(
                "edge-csu: the offer is withdrawn: no unit is offered the bundle", file=sys.stderr
            )
    return 1 if outcome["stopped"] else 0


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


class Goal(Protocol):
    """What a roll-out waits for from each unit of a wave, judged on the units' reports."""

    @property
    def what(self) -> str:
        """The goal in the messages: "version 8"."""
        ...

    def reached(self, unit: str, report: dict[str, Any]) -> bool: ...

    def failure(self, unit: str, report: dict[str, Any], before: dict[str, Any]) -> str | None:
        """Why ``unit`` stops the roll-out (None: it does not). ``before`` is its report as it
        stood before its wave was written: what it said then is about something earlier."""
        ...


@dataclass(frozen=True, slots=True)
class ConfigGoal:
    """``fleet config``: the unit's own document of ``version`` in effect."""

    version: int

    @property
    def what(self) -> str:
        return f"version {self.version}"

    def reached(self, unit: str, report: dict[str, Any]) -> bool:
        return bool((report.get("config_documents") or {}).get(f"unit:{unit}", 0) >= self.version)

    def failure(self, unit: str, report: dict[str, Any], before: dict[str, Any]) -> str | None:
        reason = report.get("config_refused")
        if reason and reason != before.get("config_refused"):
            return f"refused {self.what}: {reason}"
        return None


#: Outcomes of ``edgectl update`` that end an update without it: a roll-back (the boot loader
#: went back), a slot the self-test did not confirm, a bundle the unit refused.
UPDATE_FAILURES = ("rolled-back", "not-confirmed", "refused")


@dataclass(frozen=True, slots=True)
class UpdateGoal:
    """``fleet offer --group``: the unit runs ``version`` and its update was confirmed."""

    version: str
    _key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", version_key(self.version))

    @property
    def what(self) -> str:
        return f"version {self.version}"

    def reached(self, unit: str, report: dict[str, Any]) -> bool:
        if version_key(str(report.get("version") or "")) != self._key:
            return False
        last = report.get("last_update") or {}
        if version_key(str(last.get("version") or "")) != self._key:
            return True  # running it without an update of this roll-out: flashed with it
        return last.get("result") == "good"

    def failure(self, unit: str, report: dict[str, Any], before: dict[str, Any]) -> str | None:
        last = report.get("last_update") or {}
        if last == (before.get("last_update") or {}) or last.get("result") not in UPDATE_FAILURES:
            return None
        reason = last.get("reason") or last.get("result")
        return f"{last.get('result')} the update to {last.get('version', '?')}: {reason}"


def wave_verdict(
    wave: list[str],
    reports: dict[str, dict[str, Any]],
    goal: Goal,
    before: dict[str, dict[str, Any]],
) -> tuple[list[str], dict[str, str]]:
    """(units of ``wave`` that reached the goal, units that stop the roll-out with why)."""
    done, stopped = [], {}
    for unit in wave:
        report = reports.get(unit) or {}
        if goal.reached(unit, report):
            done.append(unit)
        elif (why := goal.failure(unit, report, before.get(unit) or {})) is not None:
            stopped[unit] = why
    return done, stopped


def _config(args: argparse.Namespace) -> int:
    cfg = serve_config.load(args.config)
    reports = _reports(cfg)
    members = _members(reports(), args.group)
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
        goal=ConfigGoal(args.version),
        wait_s=args.wait,
    )  # fmt: skip
    return _report(outcome, args.json)


def roll_out(
    waves: list[list[str]],
    *,
    write: Callable[[str], None],
    reports: Callable[[], dict[str, dict[str, Any]]],
    wait_s: float,
    goal: Goal | None = None,
    version: int | None = None,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Each wave written, then awaited; the first failure or time-out stops the rest.

    ``goal``: what each unit must reach (``version``: short for :class:`ConfigGoal`)."""
    if goal is None:
        if version is None:
            raise TypeError("roll_out needs a goal")
        goal = ConfigGoal(version)
    done_waves: list[dict[str, Any]] = []
    for wave in waves:
        now = reports()
        before = {u: dict(now.get(u) or {}) for u in wave}
        for unit in wave:
            write(unit)
        deadline = clock() + wait_s
        while True:
            done, stopped = wave_verdict(wave, reports(), goal, before)
            if stopped:
                unit, why = sorted(stopped.items())[0]
                done_waves.append({"units": wave, "result": f"stopped by {unit}"})
                return {"waves": done_waves, "stopped": f"{unit} {why}"}
            if len(done) == len(wave):
                done_waves.append({"units": wave, "result": f"{goal.what} in effect"})
                break
            if clock() >= deadline:
                late = [u for u in wave if u not in done]
                done_waves.append({"units": wave, "result": "timed out"})
                return {
                    "waves": done_waves,
                    "stopped": f"{', '.join(late)} did not report {goal.what} within "
                    f"{wait_s:.0f} s",
                }
            sleep(poll_s)
    return {"waves": done_waves, "stopped": None}
