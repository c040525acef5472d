"""``edgectl update install BUNDLE`` and ``edgectl update mark-good``: signed A/B updates.

What RAUC checks and what the city's policy adds: ``edge/updates.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from edge import __version__, updates
from edge import config as config_mod
from edge.app import control
from edge.identity import keys_dir_of, load_signing_key, revocation
from edge.slots import last_update, read_running_slot, update_dir_of
from edge.vault import AuditLog, layout

from ..clihelp import add_command
from ..errors import EdgeError, VaultError
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "update",
        help="install a signed update bundle into the other root slot, confirm it",
        description="Signed A/B updates with RAUC. install checks a bundle (RAUC judges the "
        "signature against the city's keyring and every byte of the payload; the version "
        "must be above the running one) and writes it into the inactive root slot, which "
        "boots next. mark-good, run after that boot by edge-update-confirm.service, keeps "
        "the new slot once edged is READY and its self-test passes; otherwise the boot "
        "loader goes back to the previous slot. Each outcome is written to the signed audit "
        "log and shown by the CSU's fleet view. Needs root.",
        example=[
            ("edgectl update install /media/usb/edge-rpi-0.2.0.raucb", "install, then reboot"),
            ("edgectl update status", "running version and slot, last update"),
        ],
    )
    usub = parser.add_subparsers(dest="update_command", required=True, metavar="ACTION")
    inst = add_command(
        usub,
        "install",
        help="check a bundle and install it into the inactive slot",
        description="Check BUNDLE (signed by the city's update key, intact, for this kind of "
        "unit, a version above the running one) and install it into the inactive root slot. "
        "Refused: unsigned bundles, bundles signed by another key or by a certificate revoked "
        "on the city CRL the unit holds (its state is printed), altered bundles, and "
        "versions below the running one unless the city signed the bundle as a downgrade and "
        "--downgrade confirms it. Reboot to run the new slot.",
        example=[("edgectl update install edge-rpi-0.2.0.raucb", "then: systemctl reboot")],
    )
    add_config_args(inst)
    inst.add_argument("bundle", type=Path, help="the RAUC bundle (.raucb)")
    inst.add_argument(
        "--downgrade", action="store_true", help="confirm a downgrade the city signed as one"
    )
    inst.add_argument("--rauc-conf", type=Path, default=updates.SYSTEM_CONF, help="system.conf")
    inst.set_defaults(func=_install)
    good = add_command(
        usub,
        "mark-good",
        help="keep the running slot once edged is READY and its self-test passes",
        description="Confirm the slot that booted: wait for edged to answer (READY), run its "
        "self-test, and only when every check passes tell RAUC the slot is good. A slot an "
        "update put on probation that fails: exit 3 without confirming, and "
        "edge-update-confirm.service reboots, so that the boot loader counts the attempt and, "
        "the attempts used, falls back to the previous slot. A slot confirmed before that "
        "fails: exit 1, it stays. Run by edge-update-confirm.service after each boot.",
        example=[("edgectl update mark-good --wait 300", "what the service runs")],
    )
    add_config_args(good)
    good.add_argument(
        "--wait", type=float, default=120.0, metavar="SECONDS", help="how long edged may take"
    )
    good.add_argument("--rauc-conf", type=Path, default=updates.SYSTEM_CONF, help="system.conf")
    good.set_defaults(func=_mark_good)
    fetch = add_command(
        usub,
        "fetch",
        help="fetch the bundle the CSU offers over the uplink, and install it",
        description="Ask the CSU, over the uplink's mutual TLS, which bundle it offers; when "
        "its version is above the running one, download it to the data partition (its "
        "SHA-256 checked against the offer) and, with --install, install it as `install` "
        "does (RAUC judges the signature). Needs root (the unit's TLS key).",
        example=[("edgectl update fetch --install", "then: systemctl reboot")],
    )
    add_config_args(fetch)
    fetch.add_argument("--install", action="store_true", help="install what was fetched")
    fetch.add_argument(
        "--downgrade", action="store_true", help="confirm a downgrade the city signed as one"
    )
    fetch.add_argument("--rauc-conf", type=Path, default=updates.SYSTEM_CONF, help="system.conf")
    fetch.set_defaults(func=_fetch)
    stat = add_command(
        usub,
        "status",
        help="running version and slot, last update",
        description="The running version and root slot, and the last update's outcome.",
        example=[("edgectl update status --json", "for scripts")],
    )
    add_config_args(stat)
    stat.add_argument("--json", action="store_true", help="print one JSON object")
    stat.set_defaults(func=_status)


def _audit(data_dir: Path, device: str, action: str, details: dict[str, Any]) -> None:
    try:
        key = load_signing_key(keys_dir_of(data_dir))
        AuditLog(layout.vault_dir(data_dir) / "audit.log", device, key).append(action, details)
    except (VaultError, OSError) as exc:
        print(f"edgectl: WARNING: {action} not written to the audit log: {exc}", file=sys.stderr)


def _install(args: argparse.Namespace) -> int:
    return _install_bundle(load_config(args), args.bundle, args.downgrade, args.rauc_conf)


def _fetch(args: argparse.Namespace) -> int:
    from edge.uplink import protocol
    from edge.uplink.tls import connect

    cfg = load_config(args)
    data = cfg.unit.data_dir
    conn = connect(cfg)
    try:
        conn.request("GET", protocol.update_path(cfg.unit.id))
        response = conn.getresponse()
        body = response.read()
        if response.status == 404:
            print("the CSU offers no update")
            return 0
        if response.status != 200:
            raise updates.UpdateError(f"the CSU refused: {response.status} {body[:200]!r}")
        offer = json.loads(body)
        name, version = Path(str(offer["bundle"])).name, str(offer["version"])
        size, sha256 = int(offer["size"]), str(offer["sha256"])
        if updates.version_key(version) <= updates.version_key(__version__) and not args.downgrade:
            print(f"the CSU offers {version}; this unit runs {__version__}: nothing newer")
            return 0
        target = update_dir_of(data) / "download" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        conn.request("GET", protocol.update_path(cfg.unit.id) + "/bundle")
        response = conn.getresponse()
        if response.status != 200:
            raise updates.UpdateError(f"the CSU did not send the bundle: {response.status}")
        got = updates.download(response, target, size=size, sha256=sha256)
    finally:
        conn.close()
    print(f"fetched {name} ({version}, {got >> 10} KiB) from the CSU")
    _audit(
        data, _device(cfg), "update-fetched", {"bundle": name, "version": version, "sha256": sha256}
    )
    if not args.install:
        print(f"install it with: edgectl update install {target}")
        return 0
    return _install_bundle(cfg, target, args.downgrade, args.rauc_conf)


def _city_crl(cfg: Any) -> revocation.CityCrl | None:
    """The city CRL the unit holds (kept by edged's uplink on the data partition), checked
    against the city CA it enrolled with; None on a unit with no city CA (never enrolled)."""
    from edge.uplink.tls import key_paths

    ca_file, _, _ = key_paths(cfg)
    try:
        ca_certs = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except (OSError, ValueError):
        return None
    return revocation.CityCrl(revocation.path_in(cfg.unit.data_dir), ca_certs)


def _install_bundle(cfg: Any, path: Path, downgrade: bool, conf: Path) -> int:
    data = cfg.unit.data_dir
    details: dict[str, Any] = {"bundle": path.name, "running": __version__}
    try:
        bundle = updates.check_bundle(path, conf=conf, work_dir=update_dir_of(data) / "work")
        details.update(version=bundle.version, signer=bundle.signer)
        # The signer's chain against the city CRL the unit holds, as commands and signed
        # configuration documents are: a stale list stays in force, none checks nothing.
        now = dt.datetime.now(dt.UTC)
        crl = _city_crl(cfg)
        details["crl"] = updates.crl_state(crl, now)
        print(updates.crl_line(details["crl"]))
        anchors = updates.keyring_certificates(conf) + (crl.ca_certs if crl else [])
        problem = updates.revocation_problem(bundle, crl, anchors, now)
        if problem is None:
            problem = updates.policy_problem(bundle, __version__, downgrade=downgrade)
        if problem is not None:
            raise updates.UpdateError(f"{path.name}: refused: {problem}")
        print(f"{path.name}: version {bundle.version} signed by {bundle.signer}: installing")
        started = time.monotonic()
        said = updates.install(bundle, conf=conf)
        details["seconds"] = round(time.monotonic() - started, 1)
    except EdgeError as exc:
        updates.record(data, {"result": "refused", "reason": str(exc)[:300], **details})
        _audit(data, _device(cfg), "update-refused", {**details, "reason": str(exc)})
        raise
    updates.record(
        data,
        {
            "result": "installed",
            "from_version": __version__,
            "boot_id": updates.boot_id(),
            **details,
        },
    )
    _audit(data, _device(cfg), "update-installed", details)
    print(f"{said}\ninstalled {bundle.version} into the inactive slot in {details['seconds']} s")
    print("next: systemctl reboot; the new slot is kept once edged is READY and its self-test")
    print("passes (edgectl update mark-good), else the previous slot boots again")
    return 0


EDGED_UNIT = "edged.service"
EXIT_PROBATION_FAILED = 3  # edge-update-confirm.service: the unit fails, systemd reboots


def _edged_restarts() -> int | None:
    """How many times systemd restarted edged this boot (None: not under systemd)."""
    try:
        out = subprocess.run(
            ["systemctl", "show", "-P", "NRestarts", EDGED_UNIT],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() else None


def _health(cfg: Any, wait: float) -> str | None:
    """None when edged is READY and its self-test passes; otherwise why not."""
    deadline = time.monotonic() + wait
    reason = "edged did not answer"
    while time.monotonic() < deadline:
        try:
            state = control.call(cfg.control.socket, "status", timeout=10.0)
        except control.ControlError as exc:
            reason = f"edged not ready: {exc}"
            restarts = _edged_restarts()
            if restarts is not None and restarts >= 3:
                # Restart=always: a daemon that cannot start never answers; no use waiting.
                return f"edged not ready: it failed to start {restarts} times ({exc})"
            time.sleep(2.0)
            continue
        # Unprovisioned, edged records nothing: its self-test checks what it has (the data
        # partition, the signing key), and an update installed before provisioning is kept.
        checks = control.call(cfg.control.socket, "selftest", timeout=180.0)["checks"]
        failed = [c for c in checks if c["outcome"] in ("failed", "timeout")]
        if not failed:
            if state.get("provisioned") is False:
                print("(edged runs unprovisioned: checked what it has, " + _passed(checks) + ")")
            return None
        return "self-test failed: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
    return reason


def _mark_good(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    data = cfg.unit.data_dir
    slot = read_running_slot()
    last = last_update(data)
    if updates.awaiting_reboot(last, updates.boot_id(), updates.bootloader(args.rauc_conf)):
        print("an update was installed during this boot: reboot to run it; nothing confirmed")
        return 0
    # The boot loader went back (the installed version is not the one running): said at once,
    # whatever edged's health, and the slot it left is not tried again.
    back = updates.rolled_back(last, __version__, slot)
    if back is not None:
        updates.record(data, {**(last or {}), **back})
        _audit(data, _device(cfg), "update-rolled-back", back)
        print(f"edgectl: update rolled back: {back['reason']}", file=sys.stderr)
        updates.mark_other_bad(conf=args.rauc_conf)
    probation = updates.on_probation(last_update(data), __version__)
    reason = _health(cfg, args.wait)
    if reason is None:
        said = updates.mark_good(conf=args.rauc_conf)
        if probation:  # the update that was pending: its outcome, for the fleet view
            outcome = {"result": "good", "version": __version__, "slot": slot}
            updates.record(data, {**(last_update(data) or {}), **outcome})
            _audit(data, _device(cfg), "update-marked-good", outcome)
        print(f"{said}: version {__version__} in slot {slot or '?'} is kept")
        return 0
    outcome = {"result": "not-confirmed", "version": __version__, "slot": slot, "reason": reason}
    _audit(data, _device(cfg), "update-not-confirmed", outcome)
    if probation:
        updates.record(data, {**(last_update(data) or {}), **outcome})
        print(
            f"edgectl: slot not confirmed: {reason}; restart to try it again or, its boot "
            "attempts used, go back to the previous slot",
            file=sys.stderr,
        )
        return EXIT_PROBATION_FAILED
    # A slot confirmed before (or the flashed one): an unplugged camera is no reason to boot
    # an older version. Its boot count is reset; the status shows what is wrong.
    with contextlib.suppress(updates.UpdateError):
        updates.mark_good(conf=args.rauc_conf)
    print(
        f"edgectl: slot not confirmed: {reason}; no update waits on it: this slot stays",
        file=sys.stderr,
    )
    return 1


def _passed(checks: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['name']} {c['outcome']}" for c in checks)


def _device(cfg: Any) -> str:
    """The unit id audit records carry; an unprovisioned unit's schema default is no id."""
    return str(cfg.unit.id) if config_mod.is_provisioned(cfg) else "unprovisioned"


def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    crl = updates.crl_state(_city_crl(cfg), dt.datetime.now(dt.UTC))
    doc = {
        "version": __version__,
        "slot": read_running_slot(),
        "last_update": last_update(cfg.unit.data_dir),
        "crl": crl,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"version {doc['version']}, slot {doc['slot'] or '? (the kernel names none)'}")
    last = doc["last_update"]
    print(f"last update: {json.dumps(last) if last else 'none'}")
    print(updates.crl_line(crl))
    return 0
