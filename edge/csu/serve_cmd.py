"""``edge-csu serve --config FILE``: run the receiver; ``edge-csu units``: what it holds."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.csu.receiver import RevocationList, SegmentStore, UnitRegistry
from edge.csu.receiver import settings as serve_config

from ..clihelp import add_command

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    serve = add_command(
        sub,
        "serve",
        help="receive sealed segments and events from units (mutual TLS 1.3)",
        description="Run the receiver: units connect with mutual TLS 1.3 and upload sealed "
        "segments, gap records and events, which are stored and acknowledged. Operators with "
        "a bearer token view the recordings. Runs until stopped.",
        example=[
            ("edge-csu serve --config /etc/edge-csu/csu.toml", "the receiver as configured"),
            (
                "edge-csu serve --config csu.toml --log-level debug --ports-file ports.json",
                "trying a configuration by hand",
            ),
        ],
    )
    serve.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    serve.add_argument(
        "--ports-file", type=Path, default=None, help="write the bound ports here as JSON"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="how much the receiver logs (default info)",
    )
    serve.set_defaults(func=_serve)
    units = add_command(
        sub,
        "units",
        help="list units: signing key trust, last contact, backlog, chain, version, config",
        description="List the units this receiver knows: how each unit's signing key is "
        "trusted, last contact, backlog and chain status, and what each unit last reported "
        "of itself: running version and root slot, last update result, configuration "
        "digest and the signed configuration documents in effect (the fleet view).",
        example=[
            ("edge-csu units --config /etc/edge-csu/csu.toml", "one line per unit"),
            ("edge-csu units --config csu.toml --json", "for scripts and monitoring"),
        ],
    )
    units.add_argument("--config", type=Path, required=True, help="receiver configuration (TOML)")
    units.add_argument("--json", action="store_true", help="print one JSON object")
    units.set_defaults(func=_units)


def _serve(args: argparse.Namespace) -> int:
    from edge.app import setup_logging
    from edge.csu.receiver import serve

    setup_logging("edge-csu", args.log_level)
    cfg = serve_config.load(args.config)

    def ready(units_port: int, operators_port: int) -> None:
        ports = {"units": units_port, "operators": operators_port}
        if args.ports_file is not None:
            tmp = args.ports_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(ports))
            tmp.replace(args.ports_file)
        print(json.dumps({"listening": ports}), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # SIGUSR1 asks for a purge (edge.csu.receiver.purge installs that); until then it
        # must not kill the receiver, as its default action would.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        await serve(cfg, stop, ready, config_path=args.config.resolve())

    asyncio.run(main())
    return 0


def unit_rows(cfg: serve_config.ServeConfig) -> list[dict[str, Any]]:
    crl = RevocationList(cfg.tls.crl_file, cfg.tls.client_ca_file)
    registry = UnitRegistry(cfg.registry_dir, ca_file=cfg.tls.client_ca_file, crl=crl)
    if cfg.storage == "cluster":
        assert cfg.cluster is not None
        from edge.csu.receiver.cluster import ClusterStore

        cluster = ClusterStore(cfg.cluster)
        try:
            return _rows(registry, cluster.units(), cluster.read_status, cluster.camera_status,
                         cluster.cameras_of)  # fmt: skip
        finally:
            cluster.close()
    store = SegmentStore(cfg.storage_dir)
    return _rows(
        registry,
        _stored_units(cfg.storage_dir),
        store.read_status,
        lambda unit, cam: store.camera(unit, cam).status(),
        store.cameras_of,
    )


def _rows(
    registry: UnitRegistry,
    stored: list[str],
    read_status: Callable[[str], dict[str, Any]],
    camera_status: Callable[[str, str], dict[str, Any]],
    cameras_of: Callable[[str], list[str]],
) -> list[dict[str, Any]]:
    rows = []
    for unit in sorted(set(registry.unit_ids()) | set(stored)):
        status = read_status(unit)
        cams = {cam: camera_status(unit, cam) for cam in cameras_of(unit)}
        trusted = registry.trust(unit)
        rows.append(
            {
                "unit": unit,
                "enrolled": trusted.key is not None,
                "signing_key": trusted.to_json(),
                "last_contact_ns": status.get("last_contact_ns"),
                "peer": status.get("peer"),
                "receiver": status.get("receiver"),
                "backlog": status.get("backlog"),
                "fleet": status.get("fleet"),
                "cameras": cams,
            }
        )
    return rows


def _stored_units(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def crl_line(cfg: serve_config.ServeConfig) -> str | None:
    """The CRL the receiver checks and until when; loud when it has expired (every unit is then
    refused at the handshake). None without a CRL."""
    if cfg.tls.crl_file is None:
        return None
    crl = RevocationList(cfg.tls.crl_file, cfg.tls.client_ca_file)
    problem = crl.expiry_problem()
    if problem is not None:
        return f"EXPIRED: {problem}"
    next_update = crl.next_update()
    until = f"{next_update:%Y-%m-%d %H:%M} UTC" if next_update else "no next update"
    return f"CRL {cfg.tls.crl_file}: valid until {until}"


def _units(args: argparse.Namespace) -> int:
    cfg = serve_config.load(args.config)
    rows = unit_rows(cfg)
    crl = crl_line(cfg)
    if crl is not None and crl.startswith("EXPIRED"):
        print(f"edge-csu: {crl}", file=sys.stderr)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if crl is not None and not crl.startswith("EXPIRED"):
        print(crl)
    head = f"{'UNIT':24} {'ENROLLED (SIGNING KEY)':34} {'LAST CONTACT':>12} {'BACKLOG':>14}"
    print(f"{head}  CAMERAS")
    now = time.time_ns()
    for row in rows:
        last = row["last_contact_ns"]
        ago = f"{(now - last) / 1e9:.0f}s ago" if last else "never"
        backlog = row["backlog"] or {}
        seconds = backlog.get("seconds")
        bl = (
            f"{backlog.get('items', '?')} / {seconds:.0f}s"
            if backlog and isinstance(seconds, int | float)
            else "-"
        )
        cams = ", ".join(
            f"{cam}: {st['count']} seg, #{st['first']}..#{st['last']}, chain {st['chain']}"
            for cam, st in row["cameras"].items()
        )
        print(f"{row['unit']:24} {_trust_cell(row['signing_key']):34} {ago:>12} {bl:>14}  {cams}")
        for cam, st in row["cameras"].items():
            for lost in st.get("lost_at_unit", []):
                print(
                    f"{'':24}   {cam}: sequences {lost[0]}..{lost[1]} LOST AT THE UNIT (gap record)"
                )
            for c in st.get("conflicts", []):
                print(
                    f"{'':24}   {cam}: CONFLICT: the unit declared #{c['first']}..#{c['last']} "
                    f"lost; this CSU holds the originals {c['held']}"
                )
        if row["signing_key"]["problem"]:
            print(f"{'':24}   {row['signing_key']['problem']}")
        if row["fleet"]:
            print(f"{'':24}   {fleet_line(row['fleet'])}")
    return 0


def fleet_line(fleet: dict[str, Any]) -> str:
    """What the unit last said of itself: version and slot, last update, configuration."""
    update = fleet.get("last_update") or {}
    if update:
        outcome = update.get("result", "?")
        detail = f" {update.get('version', '')}".rstrip()
        reason = f" ({update['reason']})" if update.get("reason") else ""
        updated = f"last update {outcome}{detail}{reason}"
    else:
        updated = "no update yet"
    docs = fleet.get("config_documents") or {}
    signed = ", ".join(f"{scope} v{version}" for scope, version in sorted(docs.items()))
    digest = str(fleet.get("config_digest") or "?")[:12]
    return (
        f"v{fleet.get('version', '?')} slot {fleet.get('slot') or '?'}, {updated}, "
        f"config {digest}… ({signed or 'no signed document'})"
    )


def _trust_cell(signing_key: dict[str, Any]) -> str:
    """How the unit's signing key is trusted, in a column: the certificate with its expiry, a
    pinned key, or why not (the reason is printed on the next line)."""
    if not signing_key["trusted"]:
        return "NO"
    if signing_key["source"] == "certificate":
        return f"yes (certificate until {signing_key['not_after'][:10]})"
    return "yes (pinned key)"
