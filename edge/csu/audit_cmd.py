"""``edge-csu audit verify``: check the CSU audit log's chain and every signature, print its head.

The head (record count and hash of the last line) is what an auditor keeps: dropping the last
lines is the one edit a chain cannot show by itself, a later head with fewer records shows it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import settings as serve_config

from ..clihelp import add_command
from ..errors import ConfigError
from ..identity.unitkeys import load_public_pem
from .receiver import access_log, receipts


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "audit",
        help="check the signed, hash-chained CSU audit log",
        description="The CSU audit log records every viewing, export, console decision, "
        "refusal and hold, each signed with the CSU's audit key and chained to the one before.",
        example=[("edge-csu audit verify --config csu.toml", "check the log, print its head")],
    )
    asub = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ver = add_command(
        asub,
        "verify",
        help="check the chain and every signature; print the head to keep",
        description="Check the audit log's hash chain and every record's signature. Exit 0 "
        "when it holds (torn lines left by a power cut and unsigned records are listed), 1 "
        "with the first problem and its line number. Keep the printed head: a later head "
        "with fewer records means lines were removed from the end.",
        example=[
            ("edge-csu audit verify --config csu.toml", "the log and key the receiver uses"),
            (
                "edge-csu audit verify --log audit.jsonl --public-key auditor-copy.pub.pem",
                "a copy of the log, with the auditor's own copy of the public key",
            ),
        ],
    )
    ver.add_argument("--config", type=Path, help="receiver configuration (TOML)")
    ver.add_argument("--log", type=Path, help="the audit log (instead of --config)")
    ver.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="the audit key's public PEM (cluster mode: repeat it, one per receiver's key; "
        "then only these keys are accepted)",
    )
    ver.add_argument(
        "--require-signed",
        action="store_true",
        help="exit 1 if an unsigned record follows a signed one (every writer had the key)",
    )
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    ver.set_defaults(func=_verify)


def _public(path: Path) -> ed25519.Ed25519PublicKey:
    try:
        return load_public_pem(path.read_bytes(), origin=str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename}: no such file") from None


def _verify(args: argparse.Namespace) -> int:
    log: Path | None = args.log
    pub_files: list[Path] = args.public_key or []
    keys: dict[str, list[str]] | None = None
    where, line = "audit log", "line"  # the cluster's chain: records by sequence number
    if args.config is not None:
        cfg = serve_config.load(args.config)
        if cfg.storage == "cluster" and log is None:  # the chain is the cluster's
            report, keys = _verify_cluster(cfg, [_public(p) for p in pub_files])
            where, line = "shared audit chain", "seq"
        log = log or cfg.audit_log
        pub_files = pub_files or [receipts.public_path(cfg.audit_key_file)]
    if keys is None:
        if log is None or len(pub_files) != 1:
            raise ConfigError("audit verify needs --config, or --log and one --public-key")
        public = _public(pub_files[0])
        try:
            report = access_log.verify(log, public)
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc.filename}: no such file") from None
    late = report.unsigned_after_signed
    if args.require_signed and late and report.problem is None:
        report.problem = f"{line} {late[0]}: unsigned record after signing began (--require-signed)"
    if args.json:
        print(json.dumps({
            "ok": report.problem is None, "problem": report.problem, "count": report.count,
            "head": report.head, "signed": report.signed,
            "unsigned_lines": report.unsigned_lines, "unsigned_after_signed": late,
            "torn": [{"line": n, "offset": o} for n, o in report.torn],
            "torn_pending": report.torn_pending,
            **({} if keys is None else {"keys": keys}),
        }, indent=2))  # fmt: skip
    else:
        for n, o in report.torn:
            print(f"line {n}: torn line at byte {o} (a write cut short, e.g. by a power cut)")
        if report.unsigned_lines:
            lines = ", ".join(str(n) for n in report.unsigned_lines[:20])
            print(f"{len(report.unsigned_lines)} unsigned records ({line}s {lines})")
        if late:
            print(
                f"WARNING: {len(late)} unsigned records after signing began (first: {line} "
                f"{late[0]}): written by a command that could not read the audit key, or by "
                f"anyone able to write the {'file' if keys is None else 'database'}"
            )
        for kid, receivers in (keys or {}).items():
            print(f"key {kid}: registered by {', '.join(receivers)}")
        if report.problem is not None:
            print(f"{where}: {report.problem}")
        else:
            print(f"{where} OK: {report.count} records, {report.signed} signed")
            print(f"head: {report.count} {report.head}")
    return 0 if report.problem is None else 1


def _verify_cluster(
    cfg: serve_config.ServeConfig, pinned: list[ed25519.Ed25519PublicKey]
) -> tuple[access_log.AuditReport, dict[str, list[str]]]:
    """The cluster's shared chain, read from its database (:mod:`.receiver.pgaudit`); this
    receiver's own public key must be the one registered under its name."""
    from .receiver.cluster import conninfo_of
    from .receiver.deletions import key_id
    from .receiver.pgaudit import PgAuditLog
    from .receiver.pgindex import PgSegmentIndex

    assert cfg.cluster is not None  # the configuration's schema requires it in cluster mode
    db = cfg.cluster.database
    me = cfg.cluster.receiver_id
    index = PgSegmentIndex(conninfo_of(db), me, connect_timeout_s=db.connect_timeout_s)
    try:
        report, keys = PgAuditLog(lambda: index, me).verify(pinned or None)
    finally:
        index.close()
    own = receipts.public_path(cfg.audit_key_file)
    if report.problem is None and own.exists():
        mine = key_id(_public(own))
        theirs = [kid for kid, names in keys.items() if me in names]
        if theirs and mine not in theirs:
            report.problem = (
                f"receiver {me}: its audit key {mine} is not the one registered under its name"
            )
    return report, keys
