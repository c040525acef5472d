"""``edgectl status``, ``edgectl diag`` and ``edgectl logs``: what a technician needs at 3 a.m.

``status`` fits one 80×24 screen whatever the number of cameras, in colour on a terminal and
plain when piped; ``--json`` for scripts; ``--watch`` redraws it in place while a camera is
aimed. ``diag`` lists each problem with its likely cause and the next step. Both exit 0 when
healthy, 1 when degraded, 2 when failing. Neither ever shows a picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from edge import __version__
from edge.app import Finding, Level, control, evaluate, worst
from edge.snapshot import StatusReport

from ..clihelp import add_command
from ..errors import ConfigError
from ..health import system as system_health
from .common import add_config_args, load_config

WIDTH = 80
#: The refresh period of ``--watch`` without a value: quick enough to aim a camera by.
DEFAULT_WATCH_S = 2.0
#: Cursor home and clear screen: the next screen is drawn over the previous one.
_REDRAW = "\033[H\033[2J"
_COLOURS = {Level.OK: "32", Level.DEGRADED: "33", Level.FAILING: "31;1", Level.NA: "2"}
_OVERALL = {Level.OK: "HEALTHY", Level.DEGRADED: "DEGRADED", Level.FAILING: "FAILING"}


def register(sub: Any) -> None:
    status = add_command(
        sub,
        "status",
        help="one-screen health summary (exit 0/1/2)",
        description="One 80×24 screen of the unit's health: cameras, masks, recording, uplink, "
        "enrolment, cabinet, time, temperature and storage. Exit status 0 healthy, 1 degraded, "
        "2 failing. In colour on a terminal (unless NO_COLOR is set), plain when piped.",
        example=[
            ("edgectl status", "the screen once"),
            ("edgectl status --watch", "redraw every 2 s while aiming a camera; Ctrl-C quits"),
            ("edgectl status --camera cam3", "only camera cam3 (with many cameras)"),
            ("edgectl status --json | jq .overall", "for scripts"),
        ],
    )
    add_config_args(status)
    status.add_argument("--json", action="store_true", help="print the full status as JSON")
    status.add_argument(
        "--camera",
        metavar="ID",
        help="show only this camera (the other sections are shown as usual)",
    )
    status.add_argument(
        "--watch",
        nargs="?",
        type=_period,
        const=DEFAULT_WATCH_S,
        default=None,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C, then exit with "
        "the last status; in place on a terminal, one screen after another when piped "
        "(one JSON document per line with --json)",
    )
    status.set_defaults(func=_status)
    diag = add_command(
        sub,
        "diag",
        help="every problem with its likely cause and next step",
        description="Every problem found by the status checks, worst first, each with its "
        "likely cause and the next step to take. Exit status as for `edgectl status`.",
        example=[
            ("edgectl diag", "what is wrong and what to do"),
            ("edgectl diag --json", "the same as a JSON list, for scripts"),
        ],
    )
    add_config_args(diag)
    diag.add_argument(
        "--json",
        action="store_true",
        help="print the problems as a JSON list (section, level, summary, cause, action)",
    )
    diag.set_defaults(func=_diag)
    logs = add_command(
        sub,
        "logs",
        help="recent journal entries of edged",
        description="The last journal entries of edged in this boot, oldest first.",
        example=[
            ("edgectl logs", "the last 50 entries"),
            ("edgectl logs -n 200", "more history"),
        ],
    )
    logs.add_argument(
        "-n", "--lines", type=int, default=50, help="how many entries to show (default 50)"
    )
    logs.add_argument(
        "--unit",
        default="edged.service",
        help="systemd unit whose entries to show (default edged.service)",
    )
    logs.set_defaults(func=_logs)


def _period(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("the refresh period is 0.1 to 3600 seconds")
    return value


def gather(args: argparse.Namespace) -> StatusReport:
    """The full status: the daemon's own figures (over the control socket) and the machine's."""
    cfg = load_config(args)
    status: StatusReport = {
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


#: The screen a technician's terminal (or a serial console) is assumed to have.
HEIGHT = 24
#: Lines of the screen outside the findings: the title, two rules and the verdict.
_FRAME_LINES = 4
_PROBLEM = (Level.DEGRADED, Level.FAILING)


def _row(section: str, summary: str, level: Level, colour: bool) -> str:
    body = f"{section:<9} {summary}"[: WIDTH - 6]
    return body + " " * (WIDTH - 5 - len(body)) + _colour(f"{level.label:>4}", level, colour)


def _camera_id(finding: Finding) -> str:
    return finding.summary.split(" ", 1)[0]


def _compact_cameras(cameras: list[Finding], masks_line: Finding, room: int) -> list[Finding]:
    """The camera section in ``room`` lines: every problem camera first, then as many healthy
    ones as fit, then one line saying how many were left out and how to see them. Problem cameras
    that do not fit one per line are still named, several to a line: a fault is never cut off."""
    # Failing cameras before degraded ones; otherwise in the configuration's order.
    problems = sorted((f for f in cameras if f.level in _PROBLEM), key=lambda f: -f.level)
    healthy = [f for f in cameras if f.level not in _PROBLEM]
    room -= 1  # the masks summary
    if len(cameras) <= room:
        return problems + healthy + [masks_line]
    for shown in range(min(len(problems), room - 1), -1, -1):
        rest = problems[shown:]
        if not rest:
            kept = healthy[: room - shown - 1]
            more = f"… {len(healthy) - len(kept)} more camera(s) OK: `edgectl status --camera ID`"
            return problems + kept + [Finding("camera", Level.OK, more), masks_line]
        words = ["… also", *(_camera_id(f) for f in rest)]
        words.append(f"(+{len(healthy)} OK): `edgectl diag`" if healthy else "— `edgectl diag`")
        overflow = _wrap(words, WIDTH - 16)
        if shown + len(overflow) <= room:
            level = max(f.level for f in rest)
            return (
                problems[:shown]
                + [Finding("camera", level, text) for text in overflow]
                + [masks_line]
            )
    return [*problems[: max(room, 0)], masks_line]  # a screen too small for any summary


def _wrap(words: list[str], width: int) -> list[str]:
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _masks_summary(status: StatusReport) -> Finding:
    daemon = status.get("daemon")
    cams = daemon.get("cameras", []) if daemon else []
    total = sum(int(c.get("masks", 0)) for c in cams)
    unmasked = [str(c.get("id", "?")) for c in cams if not c.get("masks")]
    text = f"{total} mask(s) on {len(cams)} camera(s)"
    if unmasked:
        text += "; none on " + " ".join(unmasked)
    return Finding("masks", Level.OK, text + "; `edgectl mask show`")


def render(status: StatusReport, findings: list[Finding], *, colour: bool, note: str = "") -> str:
    """The status screen: at most 24 lines of at most 80 columns, whatever the number of cameras.

    ``note`` (e.g. the refresh period under ``--watch``) is right-aligned on the last line."""
    daemon = status.get("daemon")
    overall = worst(findings)
    uptime = daemon.get("uptime_s") if daemon else None
    up = f"up {int(uptime // 3600)}h{int(uptime % 3600 // 60):02d}m" if uptime is not None else ""
    unit = (daemon.get("unit_id") or "(unprovisioned)") if daemon else "?"
    version = daemon.get("version", __version__) if daemon else __version__
    left = f"edge unit {unit}  v{version}  {up}"
    right = _OVERALL[overall]
    lines = [left + " " * max(1, WIDTH - len(left) - len(right)) + _colour(right, overall, colour)]
    lines.append("─" * WIDTH)

    cameras = [f for f in findings if f.section == "camera"]
    masks = [f for f in findings if f.section == "masks"]
    others = [f for f in findings if f.section not in ("camera", "masks")]
    room = HEIGHT - _FRAME_LINES - len(others)
    if len(cameras) + len(masks) > room:
        compact = _compact_cameras(cameras, _masks_summary(status), room)
        first = next((i for i, f in enumerate(findings) if f.section in ("camera", "masks")), 0)
        shown = others[:first] + compact + others[first:]
    else:
        shown = findings
    if len(shown) > HEIGHT - _FRAME_LINES:  # still too many: healthy lines go first
        keep = HEIGHT - _FRAME_LINES
        ok_lines = [i for i, f in enumerate(shown) if f.level not in _PROBLEM]
        drop = set(ok_lines[len(ok_lines) - (len(shown) - keep) :]) if ok_lines else set()
        shown = [f for i, f in enumerate(shown) if i not in drop][:keep]

    seen: set[str] = set()
    for f in shown:
        name = f.section.upper() if f.section not in seen else ""
        seen.add(f.section)
        lines.append(_row(name, f.summary, f.level, colour))
    problems = [f for f in findings if f.level in _PROBLEM]
    lines.append("─" * WIDTH)
    if problems:
        last = f"{len(problems)} problem(s): `edgectl diag` gives causes and next steps"
    else:
        last = "all checks passed"
    if note and len(last) + 2 + len(note) <= WIDTH:
        last += " " * (WIDTH - len(last) - len(note)) + note
    lines.append(last[:WIDTH])
    return "\n".join(lines)


def _one_status(args: argparse.Namespace) -> tuple[StatusReport, list[Finding], Level]:
    status = gather(args)
    daemon = status.get("daemon")
    if args.camera is not None and daemon:
        cameras = daemon.get("cameras", [])
        chosen = [c for c in cameras if c.get("id") == args.camera]
        if not chosen:
            known = ", ".join(str(c.get("id")) for c in cameras) or "none"
            raise ConfigError(f"no camera {args.camera!r} on this unit (cameras: {known})")
        daemon["cameras"] = chosen
    findings = evaluate(status)
    return status, findings, worst(findings)


def _as_json(status: StatusReport, findings: list[Finding], overall: Level) -> StatusReport:
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
    return status


def _status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        return watch(args, args.watch)
    status, findings, overall = _one_status(args)
    if args.json:
        doc = _as_json(status, findings, overall)
        print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
    else:
        colour = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
        print(render(status, findings, colour=colour))
    return int(overall)


def watch(
    args: argparse.Namespace,
    period: float,
    *,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``status --watch``: the screen again every ``period`` seconds until Ctrl-C; the exit
    status is the last check's, so a script can tell how the unit was when it was stopped."""
    out = out or sys.stdout
    tty = out.isatty()
    colour = tty and os.environ.get("NO_COLOR") is None
    note = f"every {period:g}s, ^C quits"
    code = int(Level.FAILING)  # interrupted before the first check: nothing is known to work
    try:
        while True:
            status, findings, overall = _one_status(args)
            code = int(overall)
            if args.json:
                doc = _as_json(status, findings, overall)
                out.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
            elif tty:
                # No newline after the last line: on a 24-line terminal it would scroll the
                # title off the screen.
                out.write(_REDRAW + render(status, findings, colour=colour, note=note))
            else:  # piped or logged: screens one after another, each stamped
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                out.write(f"--- {stamp}\n" + render(status, findings, colour=False) + "\n")
            out.flush()
            sleep(period)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
            out.flush()
    return code


def _diag(args: argparse.Namespace) -> int:
    status = gather(args)
    findings = evaluate(status)
    problems = [f for f in findings if f.level in (Level.DEGRADED, Level.FAILING)]
    if args.json:
        found = [f.__dict__ | {"level": f.level.label} for f in problems]
        print(json.dumps(found, indent=2, ensure_ascii=False))
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
