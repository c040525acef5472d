"""``edge-csu hold`` (legal holds) and ``edge-csu retention`` (purge now, audit the records)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..clihelp import add_command
from ..errors import ConfigError

_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./_:-]{0,79}\Z")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")


def register(sub: Any) -> None:
    hold = add_command(
        sub,
        "hold",
        help="legal holds: keep recordings past the 30-day limit for proceedings",
        description="Legal holds keep the recordings of a unit (one camera or all) over a time "
        "range past the retention limit, for judicial proceedings. Each hold names its case and "
        "who placed it; placing and releasing are recorded in a hash-chained log. The next purge "
        "after a release deletes what the limit no longer allows.",
        example=[
            (
                'edge-csu hold add --config csu.toml --case "PV 2026/1234" --unit u-rivoli-12 '
                "--from 2026-11-28T14:00 --to 2026-11-28T15:00 --by j.martin",
                "keep an hour of one unit's recordings",
            ),
            ("edge-csu hold list --config csu.toml", "holds in force"),
        ],
    )
    hsub = hold.add_subparsers(dest="hold_command", required=True, metavar="ACTION")
    add = add_command(
        hsub,
        "add",
        help="place a hold (case number, who, unit, camera, time range)",
        description="Place a legal hold: the unit's recordings overlapping --from..--to are "
        "kept past the retention limit until the hold is released. Prints the hold's id.",
        example=[
            (
                'edge-csu hold add --config csu.toml --case "PV 2026/1234" --unit u-rivoli-12 '
                "--camera cam1 --from=-3d --to=-2d --by j.martin",
                "one camera, a day",
            )
        ],
    )
    add.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    add.add_argument("--case", required=True, help="case or requisition number")
    add.add_argument("--unit", required=True, help="unit id")
    add.add_argument("--camera", default=None, help="camera id (default: every camera)")
    add.add_argument("--from", dest="from_", required=True, help="start (ISO, @unix, --from=-2d)")
    add.add_argument("--to", required=True, help="end (ISO time, @unix, now, or --to=-1d)")
    add.add_argument("--by", required=True, help="who places the hold (recorded)")
    add.add_argument("--reason", default="", help="free text recorded with the hold")
    add.set_defaults(func=_hold_add)
    release = add_command(
        hsub,
        "release",
        help="release a hold (recorded); the next purge applies the limit again",
        description="Release a legal hold by its id. The release is recorded with who and "
        "why; recordings it kept are deleted by the next purge if the limit has passed.",
        example=[
            (
                "edge-csu hold release --config csu.toml H-1a2b3c4d5e6f --by j.martin "
                '--reason "case closed"',
                "the next purge deletes what the limit no longer allows",
            )
        ],
    )
    release.add_argument("--config", type=Path, required=True, help="receiver configuration")
    release.add_argument("hold_id", help="the hold's id (edge-csu hold list)")
    release.add_argument("--by", required=True, help="who releases the hold (recorded)")
    release.add_argument("--reason", default="", help="free text recorded with the release")
    release.set_defaults(func=_hold_release)
    lst = add_command(
        hsub,
        "list",
        help="holds in force (--all: the whole log, releases included)",
        description="List the legal holds in force, or with --all every placing and release.",
        example=[("edge-csu hold list --config csu.toml --json", "for scripts")],
    )
    lst.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    lst.add_argument("--all", action="store_true", help="the whole log, releases included")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_hold_list)

    ret = add_command(
        sub,
        "retention",
        help="purge recordings past the limit now; audit the signed deletion records",
        description="The CSU deletes recordings older than retention.days (at most 30) unless "
        "a legal hold keeps them, and signs a chained record of every deletion. A running "
        "receiver purges by itself; `retention audit` lets an auditor check the records and "
        "that nothing stored has outlived its time.",
        example=[
            ("edge-csu retention audit --config csu.toml", "check the deletion records"),
            ("edge-csu retention purge --config csu.toml", "purge with the receiver stopped"),
        ],
    )
    rsub = ret.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    purge = add_command(
        rsub,
        "purge",
        help="run one purge now (receiver stopped; a running one: SIGUSR1)",
        description="Delete every stored segment past the limit and not held, writing the "
        "signed deletion records first. Refused while a receiver runs on the same storage "
        "(send it SIGUSR1 instead).",
        example=[("edge-csu retention purge --config csu.toml", "prints what was deleted")],
    )
    purge.add_argument("--config", type=Path, required=True, help="receiver configuration")
    purge.set_defaults(func=_purge)
    aud = add_command(
        rsub,
        "audit",
        help="verify the deletion records and that nothing outlived its time (exit 1 if not)",
        description="Check every deletion record's signature and chain, that each deletion "
        "came within the limit plus one purge interval, and that no stored segment is older "
        "than the limit without a hold in force. Prints the head (count and hash) to keep: "
        "a later audit showing fewer records means some were removed.",
        example=[
            (
                "edge-csu retention audit --config csu.toml --key auditor-copy.pub.pem",
                "with the auditor's own copy of the public key",
            )
        ],
    )
    aud.add_argument("--config", type=Path, required=True, help="receiver configuration")
    aud.add_argument(
        "--key", type=Path, default=None, help="deletion-record public key (default: the CSU's)"
    )
    aud.add_argument("--json", action="store_true", help="print JSON")
    aud.set_defaults(func=_audit)
    sweep = add_command(
        rsub,
        "sweep",
        help="cluster mode: delete objects no database row names (older than an hour)",
        description="In cluster mode, delete from the object store the sealed bytes that no "
        "row of the database names: an upload whose receiver died before the database "
        "decided, or refused bytes whose deletion failed. Only objects older than "
        "--older-than-s (default one hour) are deleted, so that an upload still being decided "
        "is never touched. Safe to run while the receivers run, and twice.",
        example=[("edge-csu retention sweep --config /etc/edge-csu/r1.toml", "prints the counts")],
    )
    sweep.add_argument("--config", type=Path, required=True, help="receiver configuration")
    sweep.add_argument(
        "--older-than-s",
        type=float,
        default=3600.0,
        help="only objects older than this many seconds (default 3600, at least 600)",
    )
    sweep.set_defaults(func=_sweep)


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ConfigError(f"{value!r}: not a valid {what}")
    return value


def _hold_add(args: argparse.Namespace) -> int:
    from edge.csu.receiver import settings as serve_config
    from edge.csu.receiver.holds import HoldBook
    from edge.vault.timespec import parse_time

    cfg = serve_config.load(args.config)
    now = time.time_ns()
    book = HoldBook(cfg.retention.directory, cfg.audit_key_file)
    with _cluster_told(cfg, book):
        hold = book.add(
            case=_checked(_CASE, args.case, "case number"),
            unit=_checked(_NAME, args.unit, "unit id"),
            camera=None if args.camera is None else _checked(_NAME, args.camera, "camera id"),
            from_ns=parse_time(args.from_, now),
            to_ns=parse_time(args.to, now),
            who=_checked(_NAME, args.by, "name"),
            reason=args.reason,
        )
    print(hold.hold_id)
    return 0


def _hold_release(args: argparse.Namespace) -> int:
    from edge.csu.receiver import settings as serve_config
    from edge.csu.receiver.holds import HoldBook

    cfg = serve_config.load(args.config)
    book = HoldBook(cfg.retention.directory, cfg.audit_key_file)
    with _cluster_told(cfg, book):
        hold = book.release(args.hold_id, who=_checked(_NAME, args.by, "name"), reason=args.reason)
    print(f"released {hold.hold_id} (case {hold.case}); the next purge applies the limit")
    return 0


@contextlib.contextmanager
def _cluster_told(cfg: Any, book: Any) -> Iterator[None]:
    """In cluster mode, the database learns how many entries the shared hold log has once the
    change is in it: a receiver purging from a directory without them then refuses
    (:mod:`edge.csu.receiver.cluster_purge`). The database is reached first, so that an
    unreachable one stops the command before the log changes."""
    if cfg.storage != "cluster":
        yield
        return
    from edge.csu.receiver.cluster import ClusterStore
    from edge.csu.receiver.deletions import ZERO

    store = ClusterStore(cfg.cluster)
    try:
        index = store.index()
        index.retention_state()  # reachable, schema in place
        yield
        index.note_hold_entries(len(book.entries()), ZERO)
    finally:
        store.close()


def _when(ns: int) -> str:
    return f"{dt.datetime.fromtimestamp(ns / 1e9, dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _hold_list(args: argparse.Namespace) -> int:
    from edge.csu.receiver import settings as serve_config
    from edge.csu.receiver.holds import HoldBook

    cfg = serve_config.load(args.config)
    book = HoldBook(cfg.retention.directory)
    if args.all:
        entries = book.entries()
        if args.json:
            json.dump(entries, sys.stdout, indent=1)
            sys.stdout.write("\n")
        for e in [] if args.json else entries:
            print(f"{_when(e['time_ns'])}  {e['action']:13} {e['hold_id']}  by {e['who']}")
        return 0
    holds = sorted(book.active().values(), key=lambda h: h.placed_ns)
    if args.json:
        json.dump([h.to_json() for h in holds], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for h in holds:
        print(
            f"{h.hold_id}  case {h.case!r}  {h.unit}/{h.camera or '*'}  "
            f"{_when(h.from_ns)} .. {_when(h.to_ns)}  placed by {h.placed_by} "
            f"on {_when(h.placed_ns)}"
        )
    if not holds:
        print("no hold in force")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from edge.csu.receiver import settings as serve_config
    from edge.csu.receiver.cluster import ClusterStore

    cfg = serve_config.load(args.config)
    if cfg.cluster is None or cfg.storage != "cluster":
        raise ConfigError('sweep is for cluster mode (storage = "cluster")', key="storage")
    if args.older_than_s < 600:
        raise ConfigError("--older-than-s: at least 600 (an upload may still be decided)")
    store = ClusterStore(cfg.cluster)
    try:
        counts = store.sweep(older_than_s=args.older_than_s, now=time.time())
    finally:
        store.close()
    print(json.dumps(counts))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from edge.csu.receiver import SegmentStore, purge
    from edge.csu.receiver import settings as serve_config

    cfg = serve_config.load(args.config)
    if cfg.storage == "cluster":
        assert cfg.cluster is not None  # the configuration's schema requires it
        from edge.csu.receiver import cluster_purge
        from edge.csu.receiver.cluster import ClusterStore

        # beside running receivers: the database's purge lock keeps the cycles apart
        store = ClusterStore(cfg.cluster)
        try:
            report = cluster_purge.purge_once(
                store, cfg.retention, purge.open_ledger(cfg.retention), now_ns=time.time_ns()
            )
        finally:
            store.close()
        if report is None:
            print(json.dumps({"skipped": "another receiver is purging"}))
            return 0
        print(json.dumps(report.to_json()))
        return 0
    with purge.no_receiver_running(cfg.retention):
        report = purge.purge_once(
            SegmentStore(cfg.storage_dir),
            cfg.retention,
            purge.open_ledger(cfg.retention),
            now_ns=time.time_ns(),
        )
    print(json.dumps(report.to_json()))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from edge.csu.receiver import SegmentStore, purge
    from edge.csu.receiver import settings as serve_config

    cfg = serve_config.load(args.config)
    if cfg.storage == "cluster":
        assert cfg.cluster is not None
        from edge.csu.receiver import cluster_purge
        from edge.csu.receiver.cluster import ClusterStore

        store = ClusterStore(cfg.cluster)
        try:
            public = purge.public_key(cfg.retention, args.key)
            report = cluster_purge.audit(store, cfg.retention, public, now_ns=time.time_ns())
        finally:
            store.close()
    else:
        public = purge.public_key(cfg.retention, args.key)
        report = purge.audit(
            SegmentStore(cfg.storage_dir), cfg.retention, public, now_ns=time.time_ns()
        )
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(f"deletion records: {report.records}, head {report.head}")
        print(f"deleted (segments and events): {report.deleted}")
        for h in report.held:
            print(f"held past the limit: {h['unit']}/{h['camera']}: {h['segments']} segments")
        for p in report.problems:
            print(f"PROBLEM: {p}")
        print("audit: OK" if not report.problems else f"audit: {len(report.problems)} problems")
    return 0 if not report.problems else 1
