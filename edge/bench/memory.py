"""memory: steady-state RSS of edged, and of the whole unit with analytics, per camera set.

Each scenario starts a real ``edged`` (a child process, synthetic cameras, the vault sealing to
a demo recipient) and samples once a second, from ``/proc``: edged's resident set (``VmRSS``)
and the proportional set (``Pss``, shared pages counted once) of edged and every process under
it (the analytics processes), and apart, the resident set of the analytics processes edged names
in its status (``analytics_rss_mib``). The first quarter of the run is warm-up; over the rest,
the median is the steady state and ``growth`` compares the mean of its last third to that of its
first third. edged's frame pool (``edgectl status``: ``frame_memory``) gives the frame memory
held against ``[memory] frame_budget_mib``. The baseline is the same interpreter doing nothing
(``python -c`` with edged's imports), so figures compare across machines.

edged's CPU (user + system, all threads, over the same window) is given as a percentage of one
core. ``--source`` and ``--codec`` run the unit's own camera and encoder (the hardware
acceptance in ``hw-tests/test_bench_acceptance.py`` does).

Scenarios: ``1080p25`` (goal: edged ≤ 150 MiB), ``1080p25-analytics`` (goal: the whole unit
≤ 250 MiB), ``4k25`` (goal: frame memory within the budget, growth ≤ 5 MiB) and
``2x1080p25`` (two cameras; growth ≤ 5 MiB).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import EncoderCodec
from ..errors import EdgeError
from ..framepool import DEFAULT_BUDGET_MIB, MIB


@dataclass(frozen=True)
class Scenario:
    cameras: tuple[tuple[int, int, int], ...]  # width, height, fps
    analytics: bool
    goal: str


SCENARIOS: dict[str, Scenario] = {
    "1080p25": Scenario(((1920, 1080, 25),), False, "edged_rss_mib <= 150"),
    "1080p25-analytics": Scenario(((1920, 1080, 25),), True, "unit_pss_mib <= 250"),
    "4k25": Scenario(((3840, 2160, 25),), False, "frame_peak_mib <= budget, growth_mib <= 5"),
    "2x1080p25": Scenario(((1920, 1080, 25),) * 2, False, "growth_mib <= 5"),
}
GOAL_EDGED_MIB = 150.0
GOAL_UNIT_MIB = 250.0
GOAL_GROWTH_MIB = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="run time per scenario (default 120)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, among {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--budget-mib",
        type=int,
        default=DEFAULT_BUDGET_MIB,
        help=f"[memory] frame_budget_mib of the runs (default {DEFAULT_BUDGET_MIB})",
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="detector model for analytics (default: motion)"
    )
    parser.add_argument(
        "--source",
        default="synthetic",
        help="the cameras' source (default synthetic; picamera2 on a Pi with its camera)",
    )
    parser.add_argument(
        "--codec",
        choices=[c.value for c in EncoderCodec],
        default=EncoderCodec.LIBX264.value,
        help="H.264 encoder (default libx264; h264_v4l2m2m on a Raspberry Pi 4)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="scale the cameras' sizes (e.g. 0.1 for a quick check; default 1)",
    )


# --- /proc ---------------------------------------------------------------------------------


def _proc_kib(path: str, key: str) -> int:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                continue
            found += kids
            todo += kids
    return found


def _sample(pid: int) -> tuple[float, float, int]:
    """(edged's RSS MiB, PSS MiB of edged and its descendants, number of processes)."""
    rss = _proc_kib(f"/proc/{pid}/status", "VmRSS:") / 1024
    pids = [pid, *_descendants(pid)]
    pss = sum(_proc_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
    return rss, pss, len(pids)


def _rss_mib(pids: list[int]) -> float:
    return sum(_proc_kib(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024


def _analytics_pids(status: dict[str, Any] | None) -> list[int]:
    """The analytics processes edged reports running (one per analysed camera)."""
    analytics = (status or {}).get("analytics") or {}
    return [int(c["pid"]) for c in analytics.get("cameras", []) if c.get("running") and c["pid"]]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_python_rss() -> float:
    """Resident MiB of this interpreter with edged's imports, doing nothing: the baseline."""
    code = (
        "import edge.app.daemon, time, sys\n"
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]); sys.stdout.flush()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return int(out.stdout.strip()) / 1024


# --- one scenario --------------------------------------------------------------------------


def _config(tmp: Path, scenario: Scenario, args: argparse.Namespace) -> Path:
    cameras = ""
    for i, (w, h, fps) in enumerate(scenario.cameras):
        w, h = round(w * args.scale) // 2 * 2, round(h * args.scale) // 2 * 2
        cameras += f"""
[[cameras]]
id = "cam{i + 1}"
source = "{args.source}"
width = {max(64, w)}
height = {max(64, h)}
fps = {fps}

[cameras.encoder]
codec = "{args.codec}"

[[cameras.privacy_masks]]
name = "upper-floor windows"
points = [[0.02, 0.04], [0.98, 0.04], [0.98, 0.19], [0.02, 0.19]]
"""
    analytics = f"\n[analytics]\nenabled = {'true' if scenario.analytics else 'false'}\n"
    if scenario.analytics and args.model is not None:
        analytics += f'[analytics.detector]\nmodel_path = "{args.model.resolve()}"\n'
    path = tmp / "edge.toml"
    path.write_text(
        f"""[unit]
id = "bench-unit"
data_dir = "{tmp / "data"}"

[logging]
level = "warning"

[control]
socket = "{tmp / "control.sock"}"

[memory]
frame_budget_mib = {args.budget_mib}

[vault]
demo_recipient = true
{cameras}{analytics}"""
    )
    return path


def _status(sock: Path) -> dict[str, Any] | None:
    from ..app import control

    try:
        result: dict[str, Any] = control.call(sock, "status", timeout=5.0)
    except control.ControlError:
        return None
    return result


def _run_scenario(name: str, scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    # Under /tmp, not a long TMPDIR: the control socket's path must stay short.
    with tempfile.TemporaryDirectory(prefix="edge-mem-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        config = _config(tmp, scenario, args)
        log_path = tmp / "edged.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge.app.daemon", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )
        try:
            return _measure(name, scenario, args, proc, tmp / "control.sock", log_path)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _measure(
    name: str,
    scenario: Scenario,
    args: argparse.Namespace,
    proc: subprocess.Popen[bytes],
    sock: Path,
    log_path: Path,
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:  # recording has begun: every camera has encoded frames
        status = _status(sock)
        if (
            status is not None
            and all(c["frames_encoded"] > 0 for c in status["cameras"])
            and (not scenario.analytics or _analytics_pids(status))
        ):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise EdgeError(f"{name}: edged did not start recording: {tail}")
        time.sleep(0.5)
    samples: list[tuple[float, float, int]] = []
    analytics_pids = _analytics_pids(status)
    analytics_rss: list[float] = []
    start = time.monotonic()
    end = start + args.seconds
    cpu_mark: tuple[float, float] | None = None  # (time, edged's CPU s) when warm-up ended
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise EdgeError(f"{name}: edged exited ({proc.returncode}) during the run")
        samples.append(_sample(proc.pid))
        if analytics_pids:
            if not all(os.path.exists(f"/proc/{p}") for p in analytics_pids):
                analytics_pids = _analytics_pids(_status(sock))  # restarted: its new pid
            analytics_rss.append(_rss_mib(analytics_pids))
        if cpu_mark is None and time.monotonic() - start >= args.seconds / 4:
            cpu_mark = (time.monotonic(), _cpu_s(proc.pid))
        time.sleep(1.0)
    if cpu_mark is None:
        cpu_mark = (start, 0.0)
    cpu_percent = 100 * (_cpu_s(proc.pid) - cpu_mark[1]) / max(1e-9, time.monotonic() - cpu_mark[0])
    status = _status(sock) or {}
    memory = status.get("frame_memory") or {}
    frame_peak = int(memory.get("peak_bytes", 0))
    capture_lost = sum(c["capture"]["frames_lost"] for c in status.get("cameras", []))
    steady = samples[len(samples) // 4 :] or samples
    third = max(1, len(steady) // 3)
    rss = [s[0] for s in steady]
    pss = [s[1] for s in steady]
    growth = statistics.fmean(rss[-third:]) - statistics.fmean(rss[:third])
    cameras = status.get("cameras", [])
    out: dict[str, Any] = {
        "cameras": [f"{c['width']}x{c['height']}@{c['fps_configured']:g}" for c in cameras],
        "analytics": scenario.analytics,
        "samples": len(samples),
        "edged_rss_mib": round(statistics.median(rss), 1),
        "edged_rss_max_mib": round(max(rss), 1),
        "unit_pss_mib": round(statistics.median(pss), 1),
        "unit_processes": samples[-1][2] if samples else 0,
        "analytics_rss_mib": (
            round(statistics.median(analytics_rss[len(analytics_rss) // 4 :]), 1)
            if analytics_rss
            else None
        ),
        "analytics_processes": len(analytics_pids),
        "edged_cpu_percent": round(cpu_percent, 1),
        "growth_mib": round(growth, 1),
        "frame_budget_mib": args.budget_mib,
        "frame_peak_mib": round(frame_peak / MIB, 1),
        "frames_in": sum(c["frames_in"] for c in cameras),
        "frames_encoded": sum(c["frames_encoded"] for c in cameras),
        "frames_dropped": sum(c["frames_dropped"] for c in cameras),
        "frames_lost_by_source": capture_lost,
        "frames_refused_by_budget": int(memory.get("refused", 0)),
        "goal": scenario.goal,
    }
    if name == "1080p25":
        out["goal_met"] = out["edged_rss_mib"] <= GOAL_EDGED_MIB
    elif scenario.analytics:
        out["goal_met"] = out["unit_pss_mib"] <= GOAL_UNIT_MIB
    elif name == "4k25":
        out["goal_met"] = frame_peak <= args.budget_mib * MIB and growth <= GOAL_GROWTH_MIB
    else:
        out["goal_met"] = growth <= GOAL_GROWTH_MIB
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise EdgeError(f"unknown scenario(s) {unknown}: choose among {', '.join(SCENARIOS)}")
    idle = _idle_python_rss()
    result: dict[str, Any] = {
        "seconds": args.seconds,
        "scale": args.scale,
        "idle_python_rss_mib": round(idle, 1),
    }
    for name in names:
        figures = _run_scenario(name, SCENARIOS[name], args)
        figures["edged_rss_vs_idle_python"] = round(figures["edged_rss_mib"] / idle, 2)
        result[name] = figures
    return result
