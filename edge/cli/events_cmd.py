"""``edgectl events``: the signed events (counts, rule alerts, tamper, unit alarms) the vault
keeps on the unit, read from the data directory and each verified with the unit's key.

Snapshots are sealed to the CSU: the command says whether an event has one and whether it
verifies, never shows it (the unit cannot open it, and maintenance staff may not see pictures).
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from datetime import datetime
from typing import Any

from edge.identity import keys_dir_of, load_signing_public_key
from edge.vault import resolve_range

from ..clihelp import add_command
from ..errors import VaultError
from ..vault import layout
from ..vault.eventlog import StoredEvent, read_events
from .common import add_config_args, load_config

DEFAULT_LAST_NS = 24 * 3600 * 1_000_000_000


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "events",
        help="counts and alerts kept on the unit (signed; table or JSON)",
        description="List the signed events the vault keeps (line counts, rule alerts, tamper, "
        "unit alarms), oldest first, each verified with the unit's key; --counts sums the line "
        "counts per camera, line, class, direction and provenance (model and configuration "
        "digests) instead. Default range: the last 24 h. "
        "Snapshots are sealed to the CSU and never shown here. Exit 0: every event verifies; "
        "1: some do not (listed as DAMAGED); 2: could not read.",
        example=[
            ("edgectl events --last 1h", "the last hour's events"),
            ("edgectl events --category alert --camera cam1", "alerts of camera cam1"),
            ("edgectl events --counts --from 2026-12-01T08:00 --to 2026-12-01T09:00", "totals"),
            ("edgectl events --json", "one JSON object per event, for scripts"),
        ],
    )
    add_config_args(parser)
    parser.add_argument(
        "--from", dest="start", default=None, help="start: ISO 8601 (local), @UNIX, -10m"
    )
    parser.add_argument("--to", dest="end", default=None, help="end (same forms as --from)")
    parser.add_argument("--last", default=None, help="the last DURATION up to now (10m, 2h, 1d)")
    parser.add_argument("--camera", action="append", default=None, help="only this camera")
    parser.add_argument(
        "--category",
        choices=("count", "alert", "tamper"),
        default=None,
        help="only this category of event",
    )
    parser.add_argument("--kind", default=None, help="only this kind (gathering, wrong_way…)")
    parser.add_argument(
        "--counts", action="store_true", help="sum the line counts instead of listing events"
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.set_defaults(func=_run)


def _local(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _keep(ev: StoredEvent, args: argparse.Namespace) -> bool:
    if ev.body is None:
        return True  # damage is always shown, whatever the filter
    if args.category and ev.body.get("category") != args.category:
        return False
    return not (args.kind and ev.body.get("kind") != args.kind)


def summary(body: dict[str, Any]) -> str:
    """One short line of an event's details (counts, persons, seconds…); never a picture."""
    details = body.get("details") or {}
    if body.get("category") == "count":
        counts = details.get("counts") or {}
        parts = [f"{k}={v}" for k, v in sorted(counts.items())]
        return (" ".join(parts) or "no crossing") + f" in {details.get('interval_seconds', '?')} s"
    items = [f"{k}={v}" for k, v in sorted(details.items()) if not isinstance(v, dict | list)]
    return " ".join(items)


def _provenance_of(body: dict[str, Any]) -> tuple[str, str]:
    """The (model, configuration) digests a count was signed with; empty for a count kept
    before counts carried them."""
    prov = body.get("provenance")
    if not isinstance(prov, dict):
        return "", ""
    return str(prov.get("model_sha256", "")), str(prov.get("config_sha256", ""))


def count_totals(events: list[StoredEvent]) -> list[dict[str, Any]]:
    """Line counts summed per camera, line, class and direction (verified events only), and
    per provenance: counts made by another model or configuration are another row."""
    totals: collections.Counter[tuple[str, str, str, str, str, str]] = collections.Counter()
    for ev in events:
        body = ev.body
        if body is None or body.get("category") != "count":
            continue
        model, conf = _provenance_of(body)
        for key, n in (body.get("details", {}).get("counts") or {}).items():
            label, _, way = str(key).partition("/")
            if isinstance(n, int) and not isinstance(n, bool):
                totals[(ev.camera, str(body.get("rule")), label, way, model, conf)] += n
    return [
        {
            "camera": c,
            "line": line,
            "class": label,
            "direction": way,
            "count": n,
            "provenance": (
                {"model_sha256": model, "config_sha256": conf} if model or conf else None
            ),
        }
        for (c, line, label, way, model, conf), n in sorted(totals.items())
    ]


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    data = cfg.unit.data_dir
    root = layout.vault_dir(data)
    if not root.is_dir():
        raise VaultError(
            f"{root}: no vault here: is this the unit's configuration (--config, "
            "--data-dir)? edged creates the vault at its first start"
        )
    now = time.time_ns()
    lo, hi = resolve_range(args.start, args.end, args.last, now)
    if lo is None and args.last is None and args.start is None:
        lo = (hi if hi is not None else now) - DEFAULT_LAST_NS
    public = load_signing_public_key(keys_dir_of(data))
    events = [
        ev
        for ev in read_events(
            root, public, start_ns=lo, end_ns=hi, only=args.camera, device_id=cfg.unit.id
        )
        if _keep(ev, args)
    ]
    damaged = [ev for ev in events if ev.body is None or ev.snapshot_problem]
    if args.counts:
        _print_counts(count_totals(events), lo, hi, args.json)
    elif args.json:
        for ev in events:
            print(json.dumps(_as_json(ev), ensure_ascii=False, sort_keys=True))
    else:
        _print_table(events)
    if damaged and not args.json:
        print(f"{len(damaged)} event(s) DAMAGED: they do not verify (run edgectl verify)")
    return 1 if damaged else 0


def _as_json(ev: StoredEvent) -> dict[str, Any]:
    if ev.body is None:
        return {"damaged": True, "file": str(ev.path), "problem": ev.problem}
    snapshot = "none"
    if isinstance(ev.body.get("snapshot"), dict):
        snapshot = "sealed" if ev.snapshot is not None else f"DAMAGED: {ev.snapshot_problem}"
    return {"event": ev.body, "snapshot": snapshot, "verified": True}


def _print_table(events: list[StoredEvent]) -> None:
    if not events:
        print("no event in that range")
        return
    print(
        f"{'TIME':<25} {'CAMERA':<8} {'CATEGORY':<8} {'KIND':<18} {'RULE':<12} {'STATE':<8} DETAILS"
    )
    for ev in events:
        if ev.body is None:
            print(f"{_local(ev.wall_ns):<25} {ev.camera:<8} DAMAGED  {ev.path.name}: {ev.problem}")
            continue
        b = ev.body
        detail = summary(b)
        if isinstance(b.get("snapshot"), dict):
            detail += " [snapshot sealed]" if ev.snapshot else f" [{ev.snapshot_problem}]"
        print(
            f"{_local(int(b['wall_ns'])):<25} {ev.camera:<8} {b.get('category', ''):<8} "
            f"{b.get('kind', ''):<18} {b.get('rule', ''):<12} {b.get('state') or '':<8} {detail}"
        )


def _print_counts(
    totals: list[dict[str, Any]], lo: int | None, hi: int | None, as_json: bool
) -> None:
    if as_json:
        doc = {"from_ns": lo, "to_ns": hi, "counts": totals}
        print(json.dumps(doc, ensure_ascii=False, sort_keys=True))
        return
    span = f"{_local(lo) if lo else 'start'} .. {_local(hi) if hi else 'now'}"
    if not totals:
        print(f"no line count in {span}")
        return
    print(f"line counts, {span}")
    print(
        f"{'CAMERA':<10} {'LINE':<14} {'CLASS':<12} {'DIRECTION':<10} {'MODEL':<12} "
        f"{'CONFIG':<12} {'COUNT':>7}"
    )
    for row in totals:
        prov = row["provenance"] or {}
        model = str(prov.get("model_sha256") or "-")[:12]
        conf = str(prov.get("config_sha256") or "-")[:12]
        print(
            f"{row['camera']:<10} {row['line']:<14} {row['class']:<12} {row['direction']:<10} "
            f"{model:<12} {conf:<12} {row['count']:>7}"
        )
