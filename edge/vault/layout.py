"""Where the vault's files live, readable with ``ls``::

<data_dir>/vault/
  index.sqlite            the index (a cache: rebuilt from the files when needed)
  audit.log               hash-chained, signed audit records
  audit.head              signed head anchor of audit.log (last sequence and hash)
  tmp/                    files being written; emptied at start-up
  quarantine/             files that failed verification at recovery (kept for analysis)
  segments/<camera>/<YYYY-MM-DD>/<HH>/<HHMMSS>-<sequence>.seg      (UTC)
  epochs/<camera>/<YYYY-MM-DD>/<HHMMSS>-<epoch id>.env
  checkpoints/<camera>.ckp
  gaps/<camera>/<first:010d>-<last:010d>.gap    signed records of sequences lost (recovery)
  sequences/<camera>.next  high-water mark: every sequence below it may have been issued
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

SEGMENT_RE = re.compile(r"^(\d{6})-(\d{10})\.seg\Z")
ENVELOPE_RE = re.compile(r"^(\d{6})-([0-9a-f]{32})\.env\Z")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
HOUR_RE = re.compile(r"^\d{2}\Z")
GAP_RE = re.compile(r"^(\d{10})-(\d{10})\.gap\Z")


def vault_dir(data_dir: Path) -> Path:
    return data_dir / "vault"


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def segment_path(root: Path, camera: str, start_ns: int, seq: int) -> Path:
    t = _utc(start_ns)
    return (
        root
        / "segments"
        / camera
        / t.strftime("%Y-%m-%d")
        / t.strftime("%H")
        / f"{t.strftime('%H%M%S')}-{seq:010d}.seg"
    )


def envelope_path(root: Path, camera: str, created_ns: int, epoch_id: bytes) -> Path:
    t = _utc(created_ns)
    return root / "epochs" / camera / t.strftime("%Y-%m-%d") / f"{t:%H%M%S}-{epoch_id.hex()}.env"


def checkpoint_path(root: Path, camera: str) -> Path:
    return root / "checkpoints" / f"{camera}.ckp"


def gap_path(root: Path, camera: str, first: int, last: int) -> Path:
    return root / "gaps" / camera / f"{first:010d}-{last:010d}.gap"


def gap_files(root: Path, camera: str) -> list[Path]:
    base = root / "gaps" / camera
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if GAP_RE.match(p.name))


def high_water_path(root: Path, camera: str) -> Path:
    return root / "sequences" / f"{camera}.next"


def hour_of(ns: int) -> tuple[str, str]:
    t = _utc(ns)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def hour_dirs(root: Path, camera: str) -> list[tuple[str, str, Path]]:
    """Every (day, hour, path) directory of a camera, oldest first."""
    base = root / "segments" / camera
    out = []
    if not base.is_dir():
        return []
    for day in sorted(p for p in base.iterdir() if DAY_RE.match(p.name) and p.is_dir()):
        for hour in sorted(p for p in day.iterdir() if HOUR_RE.match(p.name) and p.is_dir()):
            out.append((day.name, hour.name, hour))
    return out


def camera_ids(root: Path) -> list[str]:
    found: set[str] = set()
    for sub in ("segments", "epochs", "gaps"):
        base = root / sub
        if base.is_dir():
            found.update(p.name for p in base.iterdir() if p.is_dir())
    ck = root / "checkpoints"
    if ck.is_dir():
        found.update(p.stem for p in ck.glob("*.ckp"))
    hwm = root / "sequences"
    if hwm.is_dir():
        found.update(p.stem for p in hwm.glob("*.next"))
    return sorted(found)
