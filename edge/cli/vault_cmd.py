"""``edgectl verify``, ``edgectl export`` and ``edgectl audit``: the evidence vault on the unit.

None of them can decrypt anything: the unit holds no key to its closed epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.identity import (
    keys_dir_of,
    load_public_pem,
    load_signing_key,
    load_signing_public_key,
)
from edge.vault import AuditLog, check_audit, export_bundle, resolve_range

from ..clihelp import add_command
from ..errors import ConfigError, VaultError
from ..vault import layout
from ..vault.verify import CANNOT_SEE, VerifyReport, verify_vault
from .common import add_config_args, load_config

EXIT_PARTIAL = 3
"""``edgectl export``: a bundle was written, but parts of the range were damaged."""


def register(sub: Any) -> None:
    verify = add_command(
        sub,
        "verify",
        help="check signatures and the hash chain of the recordings (no key needed)",
        description="Check every segment, epoch envelope and retention checkpoint (signatures, "
        "hash chain, gaps), the CSU's receipts when uplink.csu_receipt_key is set (each the "
        "CSU's, naming the bytes held) and the audit log (signatures, chain, its head anchor). "
        "Exit 0: "
        "intact; 1: integrity problem(s), listed; 2: could not verify. Cannot see: "
        + " ".join(CANNOT_SEE)
        + ".",
        example=[
            ("edgectl verify", "the whole vault"),
            ("edgectl verify --last 2h --json", "the last two hours, for scripts"),
        ],
    )
    add_config_args(verify)
    _range_args(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=_verify)

    export = add_command(
        sub,
        "export",
        help="write an evidence bundle of a time range",
        description="Write an evidence bundle of a time range (sealed segments as recorded, "
        "their epoch envelopes, a signed manifest). What is damaged in the range is left out "
        "or flagged and named in the manifest; the rest is exported. Every export, failed or "
        "interrupted ones too, goes to the audit log. Exit 0: complete; 3: bundle written but "
        "PARTIAL (the damaged parts are listed); 2: no bundle.",
        example=[
            (
                "edgectl export --from 2026-03-14T21:00 --to 2026-03-14T21:30 --case PV-2026-042 "
                "--out /media/usb/pv42",
                "half an hour of every camera onto a mounted USB stick",
            ),
            (
                "edgectl export --last 10m --camera cam2 --case PV-2026-043 --out /media/usb/pv43",
                "the last ten minutes of camera cam2",
            ),
        ],
    )
    add_config_args(export)
    _range_args(export)
    export.add_argument("--case", required=True, help="case reference of the requisition")
    export.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    export.add_argument(
        "--camera", action="append", default=None, help="only this camera (repeatable)"
    )
    export.set_defaults(func=_export)

    audit = add_command(
        sub,
        "audit",
        help="print and check the audit log",
        description="Print the unit's signed audit log (exports, previews, enrolment, "
        "configuration changes) and check its signatures and chain.",
        example=[
            ("edgectl audit --tail 20", "the last twenty records"),
            ("edgectl audit --json", "one JSON object per record, for scripts"),
        ],
    )
    add_config_args(audit)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--tail", type=int, default=None, help="only the last N records")
    audit.set_defaults(func=_audit)


def _range_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="start",
        default=None,
        help="start: ISO 8601 (local time), @UNIX, now, or --from=-10m",
    )
    parser.add_argument("--to", dest="end", default=None, help="end (same forms as --from)")
    parser.add_argument("--last", default=None, help="the last DURATION up to now (10s, 5m, 2h)")


def _fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _audit_key(data_dir: Path, device: str) -> AuditLog | None:
    try:
        key = load_signing_key(keys_dir_of(data_dir))
    except VaultError:
        return None
    return AuditLog(layout.vault_dir(data_dir) / "audit.log", device, key)


def _verify(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    data = cfg.unit.data_dir
    root = layout.vault_dir(data)
    if not root.is_dir():
        raise VaultError(
            f"{root}: no vault here: is this the unit's configuration (--config, "
            "--data-dir)? edged creates the vault at its first start"
        )
    lo, hi = resolve_range(args.start, args.end, args.last, time.time_ns())
    public = load_signing_public_key(keys_dir_of(data))
    receipt_key = None
    if cfg.uplink.csu_receipt_key is not None:  # the key the uplink checks receipts with
        path = cfg.uplink.csu_receipt_key
        try:
            receipt_key = load_public_pem(path.read_bytes(), origin=str(path))
        except OSError as exc:
            raise ConfigError(f"uplink.csu_receipt_key: {path}: {exc.strerror}") from None
    tty = sys.stderr.isatty()

    def progress(checked: int) -> None:
        sys.stderr.write(f"\rverifying: {checked} segment(s)")
        sys.stderr.flush()

    report = verify_vault(
        root,
        public,
        device_id=cfg.unit.id,
        start_ns=lo,
        end_ns=hi,
        progress=progress if tty else None,
        receipt_key=receipt_key,
    )
    if tty:
        sys.stderr.write("\r\033[K")
    log = _audit_key(data, cfg.unit.id)
    if log is not None:
        try:
            log.append(
                "verify",
                {
                    "from_ns": lo,
                    "to_ns": hi,
                    "ok": report.ok,
                    "segments_ok": sum(c.segments_ok for c in report.cameras.values()),
                    "problems": len(report.findings),
                },
            )
        except (OSError, VaultError) as exc:  # the report matters more than this record
            print(f"edgectl: WARNING: this verification not audited: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0 if report.ok else 1
    return _print_report(report)


def _print_report(report: VerifyReport) -> int:
    for cam, s in report.cameras.items():
        line = f"{cam}: {s.segments_ok} segment(s) verified"
        if s.first is not None:
            line += f" (#{s.first}..#{s.last})"
        if s.purged_through is not None:
            line += (
                f"; #0..#{s.purged_through} purged by retention "
                f"(signed checkpoint, {s.purged_count} segment(s))"
            )
        print(line)
        if s.receipts_ok:
            print(f"  {s.receipts_ok} CSU receipt(s) match, through #{s.receipted_through}")
        for at, seconds in s.time_gaps:  # true times: what was not recorded is named
            print(f"  time gap: nothing recorded for {seconds:.1f} s after {_fmt_ns(at)}")
    print(f"{report.envelopes_ok} epoch envelope(s) verified")
    print(f"{report.events_ok} event(s) verified (with their sealed snapshots)")
    audit = report.audit
    if audit is not None:
        anchor = f"head anchor #{audit.head_seq}" if audit.head_seq is not None else "no anchor"
        last = f"#{audit.last_seq}" if audit.last_seq is not None else "none"
        print(f"audit log: {audit.records} record(s), last {last}, {anchor}")
        for rec in audit.incidents:
            reasons = "; ".join(str(r) for r in rec.details.get("reasons", []))
            print(f"  recorded damage #{rec.seq} at {_fmt_ns(rec.time_ns)}: {reasons}")
            if "missing_seqs" in rec.details:
                first, end = rec.details["missing_seqs"]
                print(f"    records #{first}..#{end} lost")
            if "quarantined" in rec.details:
                print(f"    {rec.details['bytes']} byte(s) kept in {rec.details['quarantined']}")
    for finding in report.findings:
        print(f"  {finding}")
    for limit in CANNOT_SEE:
        print(f"note: cannot see {limit}")
    if not report.ok:
        print(f"FAILED: {len(report.findings)} integrity problem(s)")
        return 1
    if audit is not None and audit.incidents:
        print(
            f"OK: signatures and chains intact, with {len(audit.incidents)} damage record(s) "
            "in the audit log (found, preserved and signed earlier: see above)"
        )
        return 0
    print("OK: signatures and chains intact")
    return 0


def _export(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    data = cfg.unit.data_dir
    if not layout.vault_dir(data).is_dir():  # before the key: that is what is missing
        raise VaultError(
            f"{layout.vault_dir(data)}: no vault here: is this the unit's configuration "
            "(--config, --data-dir)? edged creates the vault at its first start"
        )
    lo, hi = resolve_range(args.start, args.end, args.last, time.time_ns())
    if lo is None or hi is None:
        raise VaultError("give the range: --from and --to, or --last")
    key = load_signing_key(keys_dir_of(data))
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            sys.stderr.write(f"\rexporting: {done}/{total} file(s)")
            sys.stderr.flush()

    result = export_bundle(
        data,
        start_ns=lo,
        end_ns=hi,
        case=args.case,
        out_dir=args.out,
        device_id=cfg.unit.id,
        signing_key=key,
        cameras=args.camera,
        progress=progress,
    )
    if tty:
        sys.stderr.write("\n")
    print(
        f"{result.path}: {result.segments} segment(s), {result.envelopes} envelope(s), "
        f"{result.bytes} bytes, {_fmt_ns(lo)} .. {_fmt_ns(hi)}"
    )
    for part in result.damaged:
        print(f"  damaged: {part}")
    print(f"events: {result.events} signed event(s), {result.snapshots} sealed snapshot(s)")
    for bad in result.events_damaged:
        print(f"  event left out (does not verify): {bad}")
    print(f"bundle digest (sha256 of manifest.json): {result.digest}")
    for gap in result.gaps:
        print(f"LOSS RECORDED (signed gap record in the bundle): {gap}")
    if result.certified:
        print("evidence chain: certs/unit-signing.crt and certs/ca.pem; verify it with the city's")
        print("  video CA alone: edge-csu open BUNDLE --ca CITY-ROOT.pem --key KEY --out clip.mp4")
    else:
        print("WARNING: unit not enrolled (no evidence-signing certificate for its signing key):")
        print("  the bundle verifies only against the unit's public key, pinned with")
        print(f"  edge-csu open --unit-key {keys_dir_of(data) / 'unit-signing.pub.pem'}")
        print("  (fingerprint in the manifest: unit_key_id); enrol with edgectl enroll")
    if result.partial:
        print(
            f"PARTIAL: {len(result.damaged) + len(result.events_damaged)} damaged part(s) of "
            "the range are named in the signed manifest (see above; run edgectl verify)"
        )
        return EXIT_PARTIAL
    return 0


def _audit(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    data = cfg.unit.data_dir
    if not layout.vault_dir(data).is_dir():
        raise VaultError(
            f"{layout.vault_dir(data)}: no vault here: is this the unit's configuration (--config, "
            "--data-dir)? edged creates the vault at its first start"
        )
    public = load_signing_public_key(keys_dir_of(data))
    check = check_audit(layout.vault_dir(data) / "audit.log", public)
    records, problems = check.records, check.problems
    shown = records[-args.tail :] if args.tail else records
    for rec in shown:
        if args.json:
            print(
                json.dumps(
                    {
                        "seq": rec.seq,
                        "time": _fmt_ns(rec.time_ns),
                        "actor": rec.actor,
                        "action": rec.action,
                        "details": rec.details,
                    }
                )
            )
        else:
            details = " ".join(f"{k}={v}" for k, v in rec.details.items())
            print(f"{rec.seq:6d} {_fmt_ns(rec.time_ns)} {rec.actor:12} {rec.action:10} {details}")
    for problem in problems:
        print(f"audit log problem: {problem}", file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in the audit log", file=sys.stderr)
        return 1
    return 0
