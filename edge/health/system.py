"""Health of the machine itself: clock synchronisation, temperature, throttling, load, memory,
storage. Each reader returns plain data (or ``None`` with nothing faked when the source is
absent) and takes its file-system root as a parameter so tests can point it at a fixture.

Evidence timestamps depend on the clock (ANSSI R63): :func:`time_sync` asks chrony first (the
image's NTP/NTS client), then systemd-timesyncd through ``timedatectl``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.snapshot import MemoryStatus, StorageStatus, SystemStatus, TimeStatus


@dataclass(frozen=True)
class TimeSync:
    synchronised: bool
    source: str
    """Where the verdict comes from: "chrony <server>", "timedatectl", or "unknown"."""
    offset_s: float | None
    stratum: int | None
    detail: str


def parse_chrony_tracking(csv_line: str) -> TimeSync:
    """Parse ``chronyc -c tracking`` (one CSV line). Pure."""
    fields = csv_line.strip().split(",")
    if len(fields) < 14:
        raise ValueError(f"unexpected chronyc output: {csv_line!r}")
    ref_name, stratum = fields[1], int(fields[2])
    offset = float(fields[4])  # how far the system clock is from true time, seconds
    leap = fields[13]
    synced = leap.lower() != "not synchronised" and stratum > 0 and stratum < 16
    return TimeSync(synced, f"chrony {ref_name}", offset, stratum, f"leap status: {leap}")


def time_sync(run: Any = subprocess.run) -> TimeSync:
    if shutil.which("chronyc"):
        out = run(
            ["chronyc", "-c", "tracking"], capture_output=True, text=True, timeout=3, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            try:
                return parse_chrony_tracking(out.stdout.splitlines()[0])
            except ValueError:
                pass
    if shutil.which("timedatectl"):
        out = run(
            ["timedatectl", "show", "--property=NTPSynchronized,NTP"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
        if out.returncode == 0:
            props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
            synced = props.get("NTPSynchronized") == "yes"
            return TimeSync(synced, "timedatectl", None, None, f"NTP={props.get('NTP', '?')}")
        detail = (out.stderr or out.stdout).strip().splitlines()
        return TimeSync(False, "unknown", None, None, detail[0] if detail else "timedatectl failed")
    return TimeSync(False, "unknown", None, None, "neither chronyc nor timedatectl is installed")


@dataclass(frozen=True)
class ThermalZone:
    zone: str
    kind: str
    celsius: float


def thermal_zones(sys_root: Path = Path("/sys")) -> list[ThermalZone]:
    zones = []
    for zone in sorted((sys_root / "class/thermal").glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip()
        except (OSError, ValueError):
            continue
        zones.append(ThermalZone(zone.name, kind, milli / 1000.0))
    return zones


#: Bits of the Raspberry Pi firmware's get_throttled word.
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def decode_throttled(value: int) -> list[str]:
    """Pure: the names of the bits set in a Raspberry Pi get_throttled word."""
    return [name for bit, name in THROTTLE_BITS.items() if value & (1 << bit)]


def throttling(sys_root: Path = Path("/sys")) -> list[str] | None:
    """Raspberry Pi throttling flags, or ``None`` where the firmware does not expose them."""
    path = sys_root / "devices/platform/soc/soc:firmware/get_throttled"
    try:
        return decode_throttled(int(path.read_text().strip(), 16))
    except (OSError, ValueError):
        return None


def meminfo(proc_root: Path = Path("/proc")) -> MemoryStatus:
    """Total and available memory in bytes."""
    values: dict[str, int] = {}
    for line in (proc_root / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    return {
        "total_bytes": values.get("MemTotal", 0),
        "available_bytes": values.get("MemAvailable", 0),
    }


def storage(path: Path, sys_root: Path = Path("/sys")) -> StorageStatus:
    """Space on the file system holding ``path``, and the ext4 error count where there is one."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    errors: int | None = None
    dev = os.stat(probe).st_dev
    for fs in (sys_root / "fs/ext4").glob("*"):
        try:
            if os.stat(f"/dev/{fs.name}").st_rdev == dev:
                errors = int((fs / "errors_count").read_text().strip())
        except (OSError, ValueError):
            continue
    return {
        "path": str(path),
        "total_bytes": usage.total,
        "free_bytes": usage.free,
        "free_percent": round(100.0 * usage.free / usage.total, 1) if usage.total else 0.0,
        "fs_errors": errors,
    }


def _time_status(sync: TimeSync) -> TimeStatus:
    return {
        "synchronised": sync.synchronised,
        "source": sync.source,
        "offset_s": sync.offset_s,
        "stratum": sync.stratum,
        "detail": sync.detail,
    }


def snapshot(data_dir: Path) -> SystemStatus:
    """Every machine-health figure ``edgectl status`` shows."""
    zones = thermal_zones()
    return {
        "time": _time_status(time_sync()),
        "thermal": [asdict(z) for z in zones],
        "soc_celsius": max((z.celsius for z in zones), default=None),
        "throttling": throttling(),
        "load": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "memory": meminfo(),
        "storage": storage(data_dir),
    }
