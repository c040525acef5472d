"""What the analytics process may say to edged, and how edged reads it without trusting it.

The analytics process runs models supplied from outside the firmware and parses their output: it
is treated as compromisable. Everything it sends therefore crosses as *plain data* (never a
pickle: unpickling runs code the sender chooses, and a ``multiprocessing.Queue`` unpickles) and
is checked field by field by the parent before anything is built from it. The parent alone holds
the unit's signing key and signs the events it accepted (:mod:`edge.analytics.bridge`).

Four one-way pipes join them, and nothing else: no ``multiprocessing`` queue, lock, event or
condition, whose shared semaphores a child could hold to block the parent (a child killed while
waiting on an ``Event`` was enough to hang ``Event.set()`` in the parent for ever).

From the child to the parent:

- *messages*: frames of a 4-byte big-endian length then that many bytes of UTF-8 JSON, at most
  :data:`MAX_MESSAGE_BYTES`, nested at most :data:`MAX_DEPTH` levels (:mod:`edge.jsonlimits`).
  The parent reads them non-blocking (:class:`MessageReader`): a child that stalls mid-frame
  stalls nothing; a frame announced larger than the limit, or any message that is not one of
  the types below, is a :class:`~edge.errors.ProtocolError` and the parent replaces the child;
- *free slots*: one byte per frame slot handed back (:func:`return_slot`), read without blocking
  by the capture thread (:func:`read_returned_slots`). A byte is atomic on a pipe, so no framing
  can be half-written; values out of range are ignored.

From the parent to the child:

- *ready slots*: one byte per slot holding a new frame (:func:`post_slot`, never blocking: a
  full pipe is a dropped frame), read by the child with :func:`wait_posted`;
- *stop*: the parent closes its end; the child sees end-of-file (also when the parent dies).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import select
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .. import jsonlimits
from ..errors import ProtocolError
from ..events import EventDraft
from .decree import check_details

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024  # a JPEG of the largest analysis frame (1920 px wide)
MAX_DEPTH = 8
MAX_TEXT = 256  # kinds, rules, detector descriptions, failure reasons
CATEGORIES = frozenset({"count", "alert", "tamper"})
STATES = frozenset({"raised", "cleared"})
UNIT_RULE = "unit"  # reserved for the daemon's own alarms (AlertHub): never from analytics
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEADER = struct.Struct(">I")
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True, slots=True)
class Started:
    """The child loaded its model and analyses."""

    detector: str
    sandbox: str = "not confined"
    """How the child is confined (:func:`edge.app.sandbox.current`)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The child is about to exit on an error."""

    reason: str


@dataclass(frozen=True, slots=True)
class ChildStats:
    """The child's figures, sent every second for ``edgectl status``."""

    analysed: int = 0
    dropped_late: int = 0
    fps: float = 0.0
    inference_ms: float = 0.0
    process_ms: float = 0.0
    detector_runs: int = 0
    tracks: int = 0
    tamper: tuple[str, ...] = ()
    learning: bool = False


ChildMessage = Started | Failed | ChildStats | EventDraft


# --- child side ---------------------------------------------------------------------------------


def encode(message: ChildMessage) -> bytes:
    """One framed message (the child's side)."""
    doc: dict[str, Any]
    if isinstance(message, Started):
        doc = {"type": "started", "detector": message.detector, "sandbox": message.sandbox}
    elif isinstance(message, Failed):
        doc = {"type": "failed", "reason": message.reason[:MAX_TEXT]}
    elif isinstance(message, ChildStats):
        doc = {
            "type": "stats",
            "analysed": message.analysed,
            "dropped_late": message.dropped_late,
            "fps": message.fps,
            "inference_ms": message.inference_ms,
            "process_ms": message.process_ms,
            "detector_runs": message.detector_runs,
            "tracks": message.tracks,
            "tamper": list(message.tamper),
            "learning": message.learning,
        }
    else:
        doc = {
            "type": "event",
            "category": message.category,
            "kind": message.kind,
            "rule": message.rule,
            "wall_ns": message.wall_ns,
            "frame_index": message.frame_index,
            "details": message.details,
            "state": message.state,
            "interval_start_ns": message.interval_start_ns,
            "snapshot": (base64.b64encode(message.snapshot).decode() if message.snapshot else None),
        }
    payload = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(payload)) + payload


def send(fd: int, message: ChildMessage) -> None:
    """Write one message whole on the (blocking) message pipe."""
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view) :]


def return_slot(fd: int, slot: int) -> None:
    """Hand frame slot ``slot`` back to the parent."""
    os.write(fd, bytes([slot]))


def wait_posted(ready_fd: int, stop_fd: int, timeout: float) -> tuple[list[int], bool]:
    """Slots the parent posted (waiting up to ``timeout`` for the first), and whether it asked
    us to stop (it closed the stop pipe, or died)."""
    readable, _, _ = select.select([ready_fd, stop_fd], [], [], timeout)
    posted = list(os.read(ready_fd, 256)) if ready_fd in readable else []
    return posted, stop_fd in readable


# --- parent side --------------------------------------------------------------------------------


def post_slot(fd: int, slot: int) -> bool:
    """Tell the child slot ``slot`` holds a new frame; False (never a wait) if the pipe is full."""
    try:
        return os.write(fd, bytes([slot])) == 1
    except OSError:  # full (BlockingIOError), or the child is gone (BrokenPipeError)
        return False


def read_returned_slots(fd: int, slots: int) -> list[int]:
    """Slots handed back since the last call, never blocking; bytes out of range are dropped."""
    out: list[int] = []
    while True:
        try:
            data = os.read(fd, 256)
        except (BlockingIOError, InterruptedError):
            return out
        if not data:
            return out  # the child is gone; its slots come back when it is replaced
        out.extend(b for b in data if b < slots)


class MessageReader:
    """Reassembles framed messages from a non-blocking pipe; not thread-safe (one reader)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.eof = False
        self.error: ProtocolError | None = None
        """Set when the child announced a message over the limit: nothing from it after that
        point is read, or can be trusted."""
        self._buf = bytearray()

    def read(self) -> list[bytes]:
        """Whole message payloads available now (possibly none), in order; those before a
        violation are still returned, then :attr:`error` is set. Never holds more than one
        maximal message."""
        while not self.eof and self.error is None:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                self.eof = True
                break
            self._buf += data
            if len(self._buf) > _HEADER.size + MAX_MESSAGE_BYTES:
                break  # hand over what is whole before reading more
        payloads = []
        while self.error is None and len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > MAX_MESSAGE_BYTES:
                self.error = ProtocolError(
                    f"message of {size} bytes announced (limit {MAX_MESSAGE_BYTES})"
                )
                self._buf.clear()
                break
            if len(self._buf) < _HEADER.size + size:
                break
            payloads.append(bytes(self._buf[_HEADER.size : _HEADER.size + size]))
            del self._buf[: _HEADER.size + size]
        return payloads


def decode(payload: bytes, *, labels: Collection[str] | None = None) -> ChildMessage:
    """The message ``payload`` holds, every field checked; :class:`ProtocolError` otherwise.
    ``labels``: the class labels an event may name (the detector's declared ones)."""
    doc = jsonlimits.loads(payload, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_DEPTH)
    if not isinstance(doc, dict):
        raise ProtocolError("message is not a JSON object")
    kind = doc.get("type")
    if kind == "started":
        _keys(doc, {"type", "detector", "sandbox"})
        return Started(_text(doc, "detector"), _text(doc, "sandbox"))
    if kind == "failed":
        _keys(doc, {"type", "reason"})
        return Failed(_text(doc, "reason"))
    if kind == "stats":
        _keys(doc, {"type", *ChildStats.__dataclass_fields__})
        tamper = doc.get("tamper", [])
        if not isinstance(tamper, list) or len(tamper) > 16:
            raise ProtocolError("stats.tamper must be a short list")
        return ChildStats(
            analysed=_int(doc, "analysed"),
            dropped_late=_int(doc, "dropped_late"),
            fps=_number(doc, "fps"),
            inference_ms=_number(doc, "inference_ms"),
            process_ms=_number(doc, "process_ms"),
            detector_runs=_int(doc, "detector_runs"),
            tracks=_int(doc, "tracks"),
            tamper=tuple(_kind(t, "stats.tamper") for t in tamper),
            learning=_bool(doc, "learning"),
        )
    if kind == "event":
        return _event(doc, labels)
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}")


def _event(doc: dict[str, Any], labels: Collection[str] | None = None) -> EventDraft:
    _keys(
        doc,
        {
            "type",
            "category",
            "kind",
            "rule",
            "wall_ns",
            "frame_index",
            "details",
            "state",
            "interval_start_ns",
            "snapshot",
        },
    )
    category = doc.get("category")
    if category not in CATEGORIES:
        raise ProtocolError(f"event category {str(category)[:40]!r} is not one of analytics'")
    rule = _text(doc, "rule")
    if rule == UNIT_RULE:
        raise ProtocolError("rule 'unit' is reserved for the unit's own alarms")
    state = doc.get("state")
    if state is not None and state not in STATES:
        raise ProtocolError("event state must be raised, cleared or null")
    details = doc.get("details")
    if not isinstance(details, dict):
        raise ProtocolError("event details must be a JSON object")
    interval_start = doc.get("interval_start_ns")
    if interval_start is not None:
        interval_start = _int(doc, "interval_start_ns")
    snapshot = None
    if doc.get("snapshot") is not None:
        encoded = doc["snapshot"]
        if not isinstance(encoded, str) or len(encoded) > MAX_SNAPSHOT_BYTES * 4 // 3 + 4:
            raise ProtocolError("event snapshot must be base64 of at most 4 MiB")
        try:
            snapshot = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ProtocolError("event snapshot is not base64") from None
        if not snapshot.startswith(_JPEG_MAGIC):
            raise ProtocolError("event snapshot is not a JPEG")
    if category == "count":
        _counts(details)
        if interval_start is None:
            raise ProtocolError("count event without its interval start")
        if interval_start >= _int(doc, "wall_ns"):
            # An empty interval shares its FIWARE ids with the next one: a broker that
            # updates by id would lose the counts of one of them.
            raise ProtocolError("count interval must start before it ends")
    # No identity, biometric or face output, whatever the child (or a model it ran) says.
    check_details(details, labels)
    return EventDraft(
        category=str(category),
        kind=_kind(doc.get("kind"), "event.kind"),
        rule=rule,
        wall_ns=_int(doc, "wall_ns"),
        frame_index=_int(doc, "frame_index", low=-1),
        details=details,
        state=state,
        snapshot=snapshot,
        interval_start_ns=interval_start,
    )


def parse_counts(details: dict[str, Any]) -> dict[tuple[str, str], int]:
    """``{"label/way": n}`` of a count event's details as ``{(label, way): n}``."""
    return _counts(details)


def _counts(details: dict[str, Any]) -> dict[tuple[str, str], int]:
    counts = details.get("counts")
    if not isinstance(counts, dict) or len(counts) > 256:
        raise ProtocolError("count event needs details.counts, an object of at most 256 entries")
    out: dict[tuple[str, str], int] = {}
    for key, n in counts.items():
        label, sep, way = key.partition("/")
        if not sep or not label or not way or len(key) > 64:
            raise ProtocolError(f"count key {key[:40]!r} is not label/way")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**31:
            raise ProtocolError(f"count {key[:40]!r} is not a small non-negative integer")
        out[(label, way)] = n
    return out


def _keys(doc: dict[str, Any], allowed: set[str]) -> None:
    extra = set(doc) - allowed
    if extra:
        raise ProtocolError(f"unexpected field(s) {sorted(extra)[:4]}")


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT or not value.isprintable():
        raise ProtocolError(f"{key} must be printable text of 1 to {MAX_TEXT} characters")
    return value


def _kind(value: object, what: str) -> str:
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise ProtocolError(f"{what} must match {_KIND.pattern}")
    return value


def _int(doc: dict[str, Any], key: str, *, low: int = 0) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < 2**63:
        raise ProtocolError(f"{key} must be an integer from {low} to 2**63")
    return value


def _number(doc: dict[str, Any], key: str) -> float:
    value = doc.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        raise ProtocolError(f"{key} must be a non-negative number")
    return float(value)


def _bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key} must be true or false")
    return value
