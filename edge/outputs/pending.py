"""Requests waiting for an agent's confirmation, kept across a restart of edged.

The :class:`edge.outputs.engine.OutputEngine` writes the playbook requests that wait for an
agent to ``<data_dir>/outputs/pending-requests.json`` whenever they change
(:func:`edge.fsutil.write_atomic`, mode 0600), and reads it back at start: a request whose
window is still open waits again, one that closed while edged was stopped lapses (audited).
A restart never drives anything by itself: the outputs are made safe at start as always, and
only an agent's confirmation that arrives afterwards drives one.

Times: a request's deadline is kept in wall-clock terms (``expires_ns``, the Unix time it
lapses), since the monotonic clock starts again with the machine. At reload the time left is
``expires_ns - now``, capped at the playbook's ``confirm_within_s``: a clock stepped back
while edged was stopped gives the request at most one full window from the restart, never
more; a clock stepped forward shortens the window or lapses the request, which only ever
means that nothing is driven without a fresh event. A playbook removed from the
configuration, or now aimed at another output, lapses its requests.

Bounded: at most :data:`MAX_KEPT` requests are written (the newest ones; a warning names how
many older ones are not kept) and a file over :data:`MAX_BYTES` is not read. A file that
cannot be read or understood is kept aside (``pending-requests.json.damaged-<ns>``, as the
command nonce store does) and reported in :attr:`PendingStore.damaged` for the audit log;
edged then starts with no request waiting.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.config import PlaybookConfig
from edge.fsutil import fsync_dir, makedirs_durably, write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "pending-requests.json"
FORMAT = 1
#: Requests written at most (each about 250 bytes): the newest are kept.
MAX_KEPT = 500
#: A file larger than this is not read (it cannot be one this module wrote).
MAX_BYTES = 512 * 1024

_FIELDS = {"playbook": str, "event": str, "camera": str, "output": str, "made_ns": int,
           "expires_ns": int}  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeptRequest:
    """A request as written to disk: wall-clock times (Unix nanoseconds)."""

    playbook: str
    event: str
    camera: str
    output: str
    made_ns: int
    expires_ns: int


@dataclass(frozen=True, slots=True)
class Restored:
    """A kept request that waits again, for ``left_s`` seconds from the restart."""

    request: KeptRequest
    left_s: float


@dataclass(frozen=True, slots=True)
class Lapsed:
    """A kept request that can no longer be confirmed, and why."""

    request: KeptRequest
    reason: str


def pending_path(data_dir: Path) -> Path:
    return data_dir / "outputs" / FILE_NAME


class PendingStore:
    """The file of waiting requests: :meth:`load` once at start, :meth:`save` on each change.
    Used by the engine's thread alone (and by ``start``/``stop`` before and after it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: What was wrong with the file found at start (kept aside), for the audit log.
        self.damaged: str | None = None

    def load(self) -> list[KeptRequest]:
        """The requests kept by the previous life of edged; [] when none or the file is
        damaged (then kept aside and described in :attr:`damaged`)."""
        try:
            size = self.path.stat().st_size
            if size > MAX_BYTES:
                raise ValueError(f"{size} bytes, over {MAX_BYTES}")
            return _parse(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            # Never silently repaired: kept aside for the maintenance to look at, audited by
            # the engine. The outputs are safe regardless: only the requests are lost.
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.time_ns()}")
            self.damaged = f"{self.path} unreadable ({exc}); kept as {aside.name}"
            log.error("pending output requests %s", self.damaged)
            try:
                self.path.rename(aside)
                fsync_dir(self.path.parent)
            except OSError as err:
                self.damaged += f" (not moved aside: {err})"
            return []

    def save(self, requests: Iterable[KeptRequest]) -> None:
        """Replace the file with ``requests`` (the newest :data:`MAX_KEPT`); raises OSError."""
        kept = sorted(requests, key=lambda r: (r.made_ns, r.event))
        if len(kept) > MAX_KEPT:
            log.warning("%d output requests wait for an agent; the %d oldest are not kept "
                        "over a restart of edged", len(kept), len(kept) - MAX_KEPT)  # fmt: skip
            kept = kept[-MAX_KEPT:]
        data = {"format": FORMAT, "requests": [asdict(r) for r in kept]}
        makedirs_durably(self.path.parent)
        write_atomic(self.path, json.dumps(data, sort_keys=True).encode(), mode=0o600)


def _parse(raw: bytes) -> list[KeptRequest]:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a format {FORMAT} file of pending requests")
    out = []
    for item in data["requests"]:
        fields: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            value = item[name]
            if type(value) is not kind:
                raise ValueError(f"{name} {value!r} is not {kind.__name__}")
            fields[name] = value
        out.append(KeptRequest(**fields))
    return out


def restore(
    kept: Iterable[KeptRequest], playbooks: Mapping[str, PlaybookConfig], now_ns: int
) -> tuple[list[Restored], list[Lapsed]]:
    """Which kept requests wait again (and for how long) and which lapse, at ``now_ns``."""
    restored: list[Restored] = []
    lapsed: list[Lapsed] = []
    seen: set[str] = set()
    for req in kept:
        if req.event in seen:  # one request per event, as the policy keeps them
            continue
        seen.add(req.event)
        pb = playbooks.get(req.playbook)
        if pb is None or pb.output != req.output:
            lapsed.append(Lapsed(req, "playbook no longer configured for this output"))
            continue
        left_s = min((req.expires_ns - now_ns) / 1e9, pb.confirm_within_s)
        if left_s <= 0:
            lapsed.append(Lapsed(req, "expired while edged was stopped"))
        else:
            restored.append(Restored(req, left_s))
    return restored, lapsed
