"""``edgectl status``, ``edgectl diag`` and ``edgectl logs``: what a technician needs at 3 a.m.

``status`` fits one 80×24 screen, in colour on a terminal and plain when piped; ``--json`` for
scripts. ``diag`` lists each problem with its likely cause and the next step. Both exit 0 when
healthy, 1 when degraded, 2 when failing. Neither ever shows a picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from .. import __version__, control
from ..diagnostics import Finding, Level, evaluate, worst
from ..health import system as system_health
from .common import add_config_args, load_config

WIDTH = 80
_COLOURS = {Level.OK: "32", Level.DEGRADED: "33", Level.FAILING: "31;1", Level.NA: "2"}
_OVERALL = {Level.OK: "HEALTHY", Level.DEGRADED: "DEGRADED", Level.FAILING: "FAILING"}


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="one-screen health summary (exit 0/1/2)")
    add_config_args(status)
    status.add_argument("--json", action="store_true", help="print the full status as JSON")
    status.set_defaults(func=_status)
    diag = sub.add_parser("diag", help="every problem with its likely cause and next step")
    add_config_args(diag)
    diag.add_argument("--json", action="store_true")
    diag.set_defaults(func=_diag)
    logs = sub.add_parser("logs", help="recent journal entries of edged")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--unit", default="edged.service")
    logs.set_defaults(func=_logs)


def gather(args: argparse.Namespace) -> dict[str, Any]:
    """The full status: the daemon's own figures (over the control socket) and the machine's."""
    cfg = load_config(args)
    status: dict[str, Any] = {
        "edgectl_version": __version__,
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "daemon": None,
        "daemon_error": None,
    }
    try:
        status["daemon"] = control.call(cfg.control.socket, "status")
    except control.ControlError as exc:
        status["daemon_error"] = str(exc)
        if exc.denied:
            status["denied"] = True
    status["system"] = system_health.snapshot(cfg.unit.data_dir)
    return status


def _colour(text: str, level: Level, enabled: bool) -> str:
    return f"\033[{_COLOURS[level]}m{text}\033[0m" if enabled else text


def render(status: dict[str, Any], findings: list[Finding], *, colour: bool) -> str:
    """The status screen: at most 24 lines of at most 80 columns."""
    daemon = status.get("daemon") or {}
    overall = worst(findings)
    uptime = daemon.get("uptime_s")
    up = f"up {int(uptime // 3600)}h{int(uptime % 3600 // 60):02d}m" if uptime is not None else ""
    left = f"edge unit {daemon.get('unit_id', '?')}  v{daemon.get('version', __version__)}  {up}"
    right = _OVERALL[overall]
    lines = [left + " " * max(1, WIDTH - len(left) - len(right)) + _colour(right, overall, colour)]
    lines.append("─" * WIDTH)
    seen: set[str] = set()
    for f in findings:
        name = f.section.upper() if f.section not in seen else ""
        seen.add(f.section)
        tag = f.level.label
        body = f"{name:<9} {f.summary}"
        body = body[: WIDTH - 6]
        lines.append(body + " " * (WIDTH - 5 - len(body)) + _colour(f"{tag:>4}", f.level, colour))
    problems = [f for f in findings if f.level in (Level.DEGRADED, Level.FAILING)]
    lines.append("─" * WIDTH)
    if problems:
        lines.append(
            f"{len(problems)} problem(s): run `edgectl diag` for causes and next steps"[:WIDTH]
        )
    else:
        lines.append("all checks passed")
    return "\n".join(lines[:24])


def _status(args: argparse.Namespace) -> int:
    status = gather(args)
    findings = evaluate(status)
    overall = worst(findings)
    if args.json:
        status["findings"] = [
            {
                "section": f.section,
                "level": f.level.label,
                "summary": f.summary,
                "cause": f.cause,
                "action": f.action,
            }
            for f in findings
        ]
        status["overall"] = _OVERALL[overall]
        print(json.dumps(status, indent=2, default=str))
    else:
        colour = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
        print(render(status, findings, colour=colour))
    return int(overall)


def _diag(args: argparse.Namespace) -> int:
    status = gather(args)
    findings = evaluate(status)
    problems = [f for f in findings if f.level in (Level.DEGRADED, Level.FAILING)]
    if args.json:
        print(json.dumps([f.__dict__ | {"level": f.level.label} for f in problems], indent=2))
    elif not problems:
        print("no problem found")
    else:
        for f in sorted(problems, key=lambda f: -f.level):
            print(f"[{f.level.label}] {f.section}: {f.cause}")
            print(f"       next step: {f.action}")
    return int(worst(findings))


def _logs(args: argparse.Namespace) -> int:
    try:
        from systemd import journal
    except ImportError:
        print("edgectl: systemd-python is not installed", file=sys.stderr)
        return 2
    reader = journal.Reader()
    reader.this_boot()
    reader.add_match(_SYSTEMD_UNIT=args.unit)
    reader.add_disjunction()
    reader.add_match(SYSLOG_IDENTIFIER="edged")
    reader.seek_tail()
    entries = []
    for _ in range(args.lines):
        entry = reader.get_previous()
        if not entry:
            break
        entries.append(entry)
    if not entries:
        print(f"no journal entries for {args.unit} in this boot")
        return 0
    for entry in reversed(entries):
        stamp = entry.get("__REALTIME_TIMESTAMP")
        when = stamp.strftime("%Y-%m-%d %H:%M:%S") if stamp else time.strftime("%H:%M:%S")
        print(f"{when} {entry.get('PRIORITY', '')} {entry.get('MESSAGE', '')}")
    return 0
